// Number-format throughput: for every registered format, quantize and dequantize of a [rows, 4096]
// float matrix on 1 and 2 threads, next to the scalar reference path (quantize_reference /
// dequantize_rows_reference) as the in-run baseline. Throughput is GB/s of float32 input
// (rows × cols × 4 bytes, decimal GB), so encoders and decoders of every format compare directly.
//
// Rows: 4096 for fast formats; fewer for slow encoders, chosen so that one reference pass takes
// about kTargetSeconds (measured once at start-up; the row count is printed in the name).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "formats/format.h"

namespace calq {
namespace {

constexpr int64_t kCols = 4096;
constexpr int64_t kMaxRows = 4096;
constexpr int64_t kMinRows = 16;
constexpr double kTargetSeconds = 0.25;

// Gaussian rows of different scales with a few large outliers, like real weight rows.
const std::vector<float>& input() {
  static const std::vector<float> x = [] {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> v(static_cast<size_t>(kMaxRows * kCols));
    for (int64_t r = 0; r < kMaxRows; ++r) {
      const float scale = 0.01f * (1.0f + static_cast<float>(r % 7));
      for (int64_t c = 0; c < kCols; ++c) {
        float w = normal(rng) * scale;
        if (u(rng) < 0.002f) w *= 12.0f;
        v[static_cast<size_t>(r * kCols + c)] = w;
      }
    }
    return v;
  }();
  return x;
}

ThreadPool& pool(size_t threads) {
  static ThreadPool one(1), two(2);
  return threads == 1 ? one : two;
}

// Rows for which one scalar reference quantize pass takes about kTargetSeconds.
int64_t rows_for(const Format& f) {
  constexpr int64_t kProbe = 16;
  std::vector<std::byte> q(f.tensor_bytes(kProbe, kCols));
  f.quantize_reference(input().data(), kProbe, kCols, q);  // warm up: input, pages, code
  const auto t0 = std::chrono::steady_clock::now();
  f.quantize_reference(input().data(), kProbe, kCols, q);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double per_row = std::max(s / kProbe, 1e-9);
  const auto rows = static_cast<int64_t>(kTargetSeconds / per_row);
  int64_t r = kMinRows;
  while (r * 2 <= std::min(rows, kMaxRows)) r *= 2;  // a power of two: divides any row grain
  return r;
}

void set_rate(benchmark::State& state, int64_t rows) {
  const double bytes = static_cast<double>(rows * kCols) * sizeof(float);
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

enum class Path { kFast1, kFast2, kReference };

void bm_quantize(benchmark::State& state, const Format* f, int64_t rows, Path path) {
  std::vector<std::byte> q(f->tensor_bytes(rows, kCols));
  for (auto _ : state) {
    if (path == Path::kReference) {
      f->quantize_reference(input().data(), rows, kCols, q);
    } else {
      f->quantize(pool(path == Path::kFast1 ? 1 : 2), input().data(), rows, kCols, q);
    }
    benchmark::DoNotOptimize(q.data());
  }
  set_rate(state, rows);
}

void bm_dequantize(benchmark::State& state, const Format* f, int64_t rows, Path path) {
  std::vector<std::byte> q(f->tensor_bytes(rows, kCols));
  f->quantize(pool(2), input().data(), rows, kCols, q);
  std::vector<float> y(static_cast<size_t>(rows * kCols));
  for (auto _ : state) {
    if (path == Path::kReference) {
      f->dequantize_rows_reference(q.data(), rows, kCols, 0, rows, y.data());
    } else {
      f->dequantize(pool(path == Path::kFast1 ? 1 : 2), q.data(), rows, kCols, y.data());
    }
    benchmark::DoNotOptimize(y.data());
  }
  set_rate(state, rows);
}

void register_all() {
  for (const Format* f : all_formats()) {
    const int64_t rows = rows_for(*f);
    const std::string shape = "/" + std::to_string(rows) + "x" + std::to_string(kCols);
    const struct {
      const char* tag;
      Path path;
    } paths[] = {{"/threads:1", Path::kFast1}, {"/threads:2", Path::kFast2}, {"/reference", Path::kReference}};
    for (const auto& p : paths) {
      benchmark::RegisterBenchmark(("quantize/" + f->name() + shape + p.tag).c_str(), bm_quantize, f, rows, p.path)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.2);
    }
    for (const auto& p : paths) {
      benchmark::RegisterBenchmark(("dequantize/" + f->name() + shape + p.tag).c_str(), bm_dequantize, f, rows, p.path)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.2);
    }
  }
}

}  // namespace
}  // namespace calq

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  calq::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
