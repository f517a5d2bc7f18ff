// Kernel micro-benchmarks. Each fast kernel is measured next to its scalar reference twin so the
// figure to record is the ratio, measured in the same run.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/matmul.h"
#include "core/vec_math.h"

namespace calq {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// One decoder projection of the reference model at ctx 512: [512, 512] x [1536, 512]^T.
void BM_MatmulNt(benchmark::State& state) {
  const int64_t m = 512, k = 512, n = state.range(0);
  const auto threads = static_cast<size_t>(state.range(1));
  const auto x = random_vec(m * k, 1);
  const auto w = random_vec(n * k, 2);
  std::vector<float> y(m * n);
  ThreadPool pool(threads);
  for (auto _ : state) {
    matmul_nt(pool, {.x = x.data(), .ldx = k, .w = w.data(), .ldw = k, .y = y.data(), .ldy = n, .m = m, .n = n, .k = k});
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_MatmulNt)->Args({1536, 1})->Args({1536, 2})->Args({16384, 2})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_MatmulNtReference(benchmark::State& state) {
  const int64_t m = 64, k = 512, n = 512;  // smaller: the scalar twin is slow
  const auto x = random_vec(m * k, 1);
  const auto w = random_vec(n * k, 2);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    matmul_nt_reference({.x = x.data(), .ldx = k, .w = w.data(), .ldw = k, .y = y.data(), .ldy = n, .m = m, .n = n, .k = k});
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_MatmulNtReference)->Unit(benchmark::kMillisecond);

// Log-softmax denominator over one vocabulary row (16384 logits).
template <double (*Fn)(float*, int64_t, float)>
void BM_ExpSubSum(benchmark::State& state) {
  const auto src = random_vec(16384, 3, 4.0f);
  std::vector<float> row(src.size());
  for (auto _ : state) {
    row = src;
    benchmark::DoNotOptimize(Fn(row.data(), static_cast<int64_t>(row.size()), 10.0f));
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(src.size()));
}
BENCHMARK(BM_ExpSubSum<exp_sub_sum>)->Name("BM_ExpSubSum/avx2");
BENCHMARK(BM_ExpSubSum<exp_sub_sum_reference>)->Name("BM_ExpSubSum/scalar_reference");

template <void (*Fn)(float*, const float*, int64_t)>
void BM_SiluMul(benchmark::State& state) {
  const auto g0 = random_vec(1536 * 64, 4, 3.0f);
  const auto u = random_vec(g0.size(), 5);
  std::vector<float> g(g0.size());
  for (auto _ : state) {
    g = g0;
    Fn(g.data(), u.data(), static_cast<int64_t>(g.size()));
    benchmark::DoNotOptimize(g.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(g0.size()));
}
BENCHMARK(BM_SiluMul<silu_mul>)->Name("BM_SiluMul/avx2");
BENCHMARK(BM_SiluMul<silu_mul_reference>)->Name("BM_SiluMul/scalar_reference");

}  // namespace
}  // namespace calq

BENCHMARK_MAIN();
