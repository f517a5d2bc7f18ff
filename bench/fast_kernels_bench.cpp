// The runtime's matmul kernels (issue 20) on one projection of the reference model at ctx 512:
// 512 tokens × a [1536, 512] weight (gate/up), one thread. For formats with an integer codec, the
// integer matmul at every kernel level this machine has (int_dot.h); for the 4-bit table formats,
// the AVX-512 float kernel's table decode (float_gemm.h); and for each format the exact path
// (dequantize to float32 tiles + OpenBLAS sgemm, matmul_nt_quantized) as the in-run baseline.
// Throughput is GOP/s (2·m·n·k). The VM these were written on drifts by ±20 % within minutes: run
// with --benchmark_enable_random_interleaving=true --benchmark_repetitions=N and compare medians.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "formats/float_gemm.h"
#include "formats/format.h"
#include "formats/int_dot.h"
#include "formats/qtensor.h"

namespace calq {
namespace {

constexpr int64_t kM = 512, kN = 1536, kK = 512;

std::vector<float> gaussian(size_t n, uint32_t seed, float sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

const std::vector<float>& activations() {
  static const std::vector<float> x = gaussian(kM * kK, 1, 1.0f);
  return x;
}

ThreadPool& pool() {
  static ThreadPool one(1);
  return one;
}

const QuantizedTensor& weight(const Format& f) {
  static std::vector<std::unique_ptr<QuantizedTensor>> cache;
  for (const auto& w : cache) {
    if (w->format == &f) return *w;
  }
  const std::vector<float> wf = gaussian(kN * kK, 2, 0.05f);
  cache.push_back(std::make_unique<QuantizedTensor>(QuantizedTensor::quantize(pool(), f, wf.data(), kN, kK)));
  return *cache.back();
}

enum class Path { kInt, kFloatLut, kExact };

void bm_matmul(benchmark::State& state, const Format* f, Path path, KernelLevel level) {
  const QuantizedTensor& w = weight(*f);
  std::vector<float> y(static_cast<size_t>(kM * kN));
  const QuantMatmulArgs args{.x = activations().data(), .ldx = kK, .w = &w, .y = y.data(), .ldy = kN, .m = kM};
  for (auto _ : state) {
    switch (path) {
      case Path::kInt: int_matmul_at(pool(), args, level); break;
      case Path::kFloatLut:
        float_gemm(pool(), FloatGemmArgs{.x = args.x, .ldx = kK, .type = FloatWeight::kLut4, .lut = &w, .y = y.data(),
                                         .ldy = kN, .m = kM, .n = kN, .k = kK});
        break;
      case Path::kExact: matmul_nt_quantized(pool(), args); break;
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GOP/s"] = benchmark::Counter(2.0 * kM * kN * kK / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  for (const char* name : {"q4_k", "q8_0", "iq4_xs", "nf4", "mxfp4"}) {
    const Format* f = &format_by_name(name);
    auto add = [&](const std::string& tag, Path path, KernelLevel level) {
      benchmark::RegisterBenchmark(("matmul/" + f->name() + "/" + tag).c_str(), bm_matmul, f, path, level)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.3);
    };
    add("exact", Path::kExact, KernelLevel::kScalar);
    if (f->int_row_codec() != nullptr) {
      for (const KernelLevel l : supported_kernel_levels()) {
        if (l != KernelLevel::kScalar) add("int8-" + std::string(kernel_level_name(l)), Path::kInt, l);
      }
    }
    if (f->lut_row_codec() != nullptr && float_gemm_available()) add("float-avx512", Path::kFloatLut, KernelLevel::kScalar);
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
