// GPTQ (quant/gptq.h): the lazy-batch sweep (gptq_quantize, 2 threads) beside the unbatched
// single-threaded reference (gptq_quantize_reference) on one layer, int4-g128-asym, 4096 inputs.
// A one-thread run of the blocked sweep separates the batching's gain from the second thread.
// W is N(0, 0.02²); H = XᵀX for X [2048, 4096] with correlated columns (a shared random walk plus
// noise), so the Hessian is dense and well conditioned. Every run includes the Hessian
// factorisation (a tiled Cholesky and triangular inverse in double, over the run's pool; the
// reference runs the same tiles on its one thread); the 64-row case shows about that cost alone.
// One iteration each: the reference takes tens of seconds.
#include <benchmark/benchmark.h>

#include <cblas.h>

#include <random>
#include <vector>

#include "core/matmul.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "quant/gptq.h"

namespace calq::quant {
namespace {

constexpr int64_t kCols = 4096;
constexpr int64_t kSamples = 2048;
constexpr int64_t kMaxRows = 11008;

const std::vector<double>& hessian() {
  static const std::vector<double> h = [] {
    std::mt19937 rng(7);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> x(static_cast<size_t>(kSamples * kCols));
    for (int64_t s = 0; s < kSamples; ++s) {
      double walk = 0;
      for (int64_t j = 0; j < kCols; ++j) {
        walk = 0.9 * walk + normal(rng);
        x[static_cast<size_t>(s * kCols + j)] = walk + 0.5 * normal(rng);
      }
    }
    init_blas_threading();
    std::vector<double> out(static_cast<size_t>(kCols * kCols));
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<blasint>(kCols), static_cast<blasint>(kSamples),
                1.0, x.data(), static_cast<blasint>(kCols), 0.0, out.data(), static_cast<blasint>(kCols));
    for (int64_t i = 0; i < kCols; ++i) {
      for (int64_t k = 0; k < i; ++k) out[static_cast<size_t>(i * kCols + k)] = out[static_cast<size_t>(k * kCols + i)];
    }
    return out;
  }();
  return h;
}

const std::vector<float>& weights() {
  static const std::vector<float> w = [] {
    std::mt19937 rng(8);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> v(static_cast<size_t>(kMaxRows * kCols));
    for (auto& x : v) x = normal(rng);
    return v;
  }();
  return w;
}

void run(benchmark::State& state, bool blocked, size_t threads) {
  const int64_t rows = state.range(0);
  const Format& f = format_by_name("int4-g128-asym");
  const auto& h = hessian();
  const auto& w = weights();
  std::vector<std::byte> dst(f.tensor_bytes(rows, kCols));
  ThreadPool pool(threads);
  const GptqOptions o{.tensor_name = "bench"};
  for (auto _ : state) {
    const GptqResult r = blocked ? gptq_quantize(f, w.data(), rows, kCols, h, dst, nullptr, o, pool)
                                 : gptq_quantize_reference(f, w.data(), rows, kCols, h, dst, nullptr, o);
    benchmark::DoNotOptimize(r.error);
  }
  state.counters["rows"] = static_cast<double>(rows);
}

void BM_GptqBlocked2T(benchmark::State& state) { run(state, true, 2); }
void BM_GptqBlocked1T(benchmark::State& state) { run(state, true, 1); }
void BM_GptqReference1T(benchmark::State& state) { run(state, false, 1); }

BENCHMARK(BM_GptqBlocked2T)->Arg(64)->Arg(4096)->Arg(11008)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);
// One thread: the lazy batches' own gain, apart from the second thread.
BENCHMARK(BM_GptqBlocked1T)->Arg(64)->Arg(4096)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_GptqReference1T)->Arg(64)->Arg(4096)->Arg(11008)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

}  // namespace
}  // namespace calq::quant

BENCHMARK_MAIN();
