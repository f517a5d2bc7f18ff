// Online Kronecker input transforms (FlatQuant; model/kron_transform.h): what they cost at run time.
//  * BM_ForwardWithTransforms: a full-sequence forward (model::forward, ctx 512) of the reference
//    model (../shared/models/calq-ref-llama, or env CALQ_SHARED_DIR) without and with transforms
//    on all four sites of every layer, both timed in each iteration (alternating, so drift hits
//    both alike). Counters: plain_ms, kron_ms (wall), overhead = kron_ms / plain_ms − 1, and
//    overhead_cpu, the same ratio of process CPU times (steadier on a shared machine). Arg: threads.
//  * BM_KronApplyRows: the transform kernel on 512 rows beside its scalar twin. Args: width,
//    reference (0 fast, 1 scalar twin).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <vector>

#include "model/forward.h"
#include "model/site_transform.h"

namespace calq::model {
namespace {

// I + N(0, 0.2²/n): a well-conditioned factor (the speed does not depend on the values).
Tensor near_identity(int64_t n, std::mt19937& gen) {
  Tensor t = Tensor::zeros(DType::kF32, {n, n});
  std::normal_distribution<float> d(0.0f, 0.2f / std::sqrt(static_cast<float>(n)));
  for (int64_t i = 0; i < n * n; ++i) t.mutable_f32()[i] = d(gen) + (i % (n + 1) == 0 ? 1.0f : 0.0f);
  return t;
}

KronTransform random_transform(int64_t width, std::mt19937& gen) {
  const KronShape s = kron_factors(width);
  Tensor a = near_identity(s.n1, gen);
  Tensor b = near_identity(s.n2, gen);
  return KronTransform::make(std::move(a), std::move(b), "bench");
}

std::filesystem::path reference_model_dir() {
  const char* env = std::getenv("CALQ_SHARED_DIR");
  const std::filesystem::path shared = env != nullptr && *env != '\0' ? env : CALQ_DEFAULT_SHARED_DIR;
  return shared / "models/calq-ref-llama";
}

void BM_ForwardWithTransforms(benchmark::State& state) {
  const std::filesystem::path dir = reference_model_dir();
  if (!std::filesystem::exists(dir)) {
    state.SkipWithError(("reference model not found at " + dir.string()).c_str());
    return;
  }
  ThreadPool pool(static_cast<size_t>(state.range(0)));
  const Model plain = load_hf_model(dir, pool);
  Model kron = plain;
  std::mt19937 gen(1);
  for (int64_t l = 0; l < kron.config.num_layers; ++l) {
    for (const InputSite site : {InputSite::kAttnIn, InputSite::kAttnOut, InputSite::kMlpIn, InputSite::kMlpDown}) {
      const int64_t width = site_width(*find_site(block_topology(kron.config), site), kron.config);
      set_site_transform(kron, l, site, random_transform(width, gen), pool);
    }
  }
  constexpr int64_t kCtx = 512;
  std::vector<int32_t> ids(kCtx);
  for (int64_t i = 0; i < kCtx; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % plain.config.vocab_size);
  using Clock = std::chrono::steady_clock;
  double plain_s = 0, kron_s = 0, plain_cpu = 0, kron_cpu = 0;
  const auto cpu_seconds = [] { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; };
  for (auto _ : state) {
    const auto t0 = Clock::now();
    const double c0 = cpu_seconds();
    Tensor a = forward(plain, ids, pool);
    const auto t1 = Clock::now();
    const double c1 = cpu_seconds();
    Tensor b = forward(kron, ids, pool);
    const auto t2 = Clock::now();
    const double c2 = cpu_seconds();
    benchmark::DoNotOptimize(a.data());
    benchmark::DoNotOptimize(b.data());
    plain_s += std::chrono::duration<double>(t1 - t0).count();
    kron_s += std::chrono::duration<double>(t2 - t1).count();
    plain_cpu += c1 - c0;
    kron_cpu += c2 - c1;
  }
  const auto iters = static_cast<double>(state.iterations());
  state.counters["plain_ms"] = 1e3 * plain_s / iters;
  state.counters["kron_ms"] = 1e3 * kron_s / iters;
  state.counters["overhead"] = kron_s / plain_s - 1.0;
  // Process CPU time (all pool threads): less sensitive than wall time to other load on the machine.
  state.counters["overhead_cpu"] = kron_cpu / plain_cpu - 1.0;
}
BENCHMARK(BM_ForwardWithTransforms)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_KronApplyRows(benchmark::State& state) {
  const int64_t width = state.range(0);
  const bool reference = state.range(1) != 0;
  constexpr int64_t kRows = 512;
  std::mt19937 gen(2);
  const KronTransform t = random_transform(width, gen);
  std::vector<float> x0(static_cast<size_t>(kRows * width));
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (auto& v : x0) v = d(gen);
  std::vector<float> x(x0.size());
  ThreadPool pool(1);
  for (auto _ : state) {
    state.PauseTiming();  // fresh inputs: repeated transforms would grow them without bound
    x = x0;
    state.ResumeTiming();
    if (reference) {
      t.apply_rows_reference(x.data(), kRows);
    } else {
      t.apply_rows(x.data(), kRows, pool);
    }
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * kRows);
}
BENCHMARK(BM_KronApplyRows)
    ->ArgNames({"width", "reference"})
    ->Args({512, 0})->Args({512, 1})->Args({1536, 0})->Args({1536, 1})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace calq::model

BENCHMARK_MAIN();
