// One decoder layer's training cost: layer_forward vs layer_backward (which recomputes the
// forward first: activation checkpointing), at the reference model's shape (hidden 512, 8 heads of
// 64, 2 KV heads, MLP 1536) and at a synthetic 4096-wide Llama-7B-like layer (32 heads of 128, MLP
// 11008), ctx 512, one sequence; beside the runtime's forward of the same layer. The figures to
// record are the ratios backward / forward, with and without the recompute (issue 17's target:
// <= 2.5), both measured in the same iterations.
#include <benchmark/benchmark.h>

#include <chrono>
#include <random>
#include <vector>

#include "grad/layer.h"
#include "model/forward.h"

namespace calq::grad {
namespace {

model::ModelConfig layer_config(int64_t shape) {
  model::ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 16384;
  c.num_layers = 1;
  c.rms_norm_eps = 1e-5;
  if (shape == 0) {  // the reference model's layer
    c.hidden_size = 512;
    c.intermediate_size = 1536;
    c.num_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 64;
  } else {  // synthetic 4096-wide layer
    c.hidden_size = 4096;
    c.intermediate_size = 11008;
    c.num_heads = 32;
    c.num_kv_heads = 32;
    c.head_dim = 128;
  }
  return c;
}

struct Setup {
  model::ModelConfig config;
  LayerParams<float> params;
  std::vector<float> input, d_out;
  explicit Setup(int64_t shape, int64_t seq) : config(layer_config(shape)), params(LayerParams<float>::zeros(config)) {
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (auto& [role, v] : params.tensors()) {
      const bool norm = role == model::TensorRole::kAttnNorm || role == model::TensorRole::kMlpNorm;
      for (auto& x : *v) x = norm ? 1.0f : d(rng);
    }
    input.resize(static_cast<size_t>(seq * config.hidden_size));
    d_out.resize(input.size());
    std::normal_distribution<float> unit(0.0f, 1.0f);
    for (auto& x : input) x = unit(rng);
    for (auto& x : d_out) x = unit(rng) * 1e-3f;
  }
};

// Each iteration times one layer_forward and one layer_backward (which recomputes the forward
// first) on the same inputs. Counters: forward_ms, backward_ms (layer_backward, recompute
// included), ratio = backward_ms / forward_ms, and ratio_excl_recompute =
// (backward_ms − forward_ms) / forward_ms: the backward proper, as a framework without
// checkpointing would spend it. Args: shape (0 reference, 1 synthetic 4096-wide), threads.
void BM_DecoderLayerBackward(benchmark::State& state) {
  const int64_t seq = 512;
  Setup s(state.range(0), seq);
  ThreadPool pool(static_cast<size_t>(state.range(1)));
  LayerWorkspace<float> ws(s.config, seq);
  LayerGrads<float> grads = LayerGrads<float>::zeros(s.config);
  std::vector<float> hidden(s.input), d_in(s.input.size());
  double forward_s = 0, backward_s = 0;
  using Clock = std::chrono::steady_clock;
  for (auto _ : state) {
    hidden = s.input;
    const auto t0 = Clock::now();
    layer_forward(pool, s.config, 0, s.params, hidden.data(), ws);
    const auto t1 = Clock::now();
    layer_backward(pool, s.config, 0, s.params, s.input.data(), s.d_out.data(), d_in.data(), grads, ws);
    const auto t2 = Clock::now();
    benchmark::DoNotOptimize(hidden.data());
    benchmark::DoNotOptimize(d_in.data());
    forward_s += std::chrono::duration<double>(t1 - t0).count();
    backward_s += std::chrono::duration<double>(t2 - t1).count();
  }
  const auto iters = static_cast<double>(state.iterations());
  state.counters["forward_ms"] = 1e3 * forward_s / iters;
  state.counters["backward_ms"] = 1e3 * backward_s / iters;
  state.counters["ratio"] = backward_s / forward_s;
  state.counters["ratio_excl_recompute"] = (backward_s - forward_s) / forward_s;
  state.counters["train_tokens/s"] = static_cast<double>(seq) * iters / backward_s;
}
BENCHMARK(BM_DecoderLayerBackward)
    ->ArgNames({"shape", "threads"})
    ->Args({0, 2})->Args({1, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// The runtime's forward of the same layer (model::decoder_layer_forward): the baseline the
// trainable layer's forward should match in speed. Args: shape, threads.
void BM_RuntimeDecoderLayer(benchmark::State& state) {
  const int64_t seq = 512;
  Setup s(state.range(0), seq);
  ThreadPool pool(static_cast<size_t>(state.range(1)));
  auto tensor = [](const std::vector<float>& v, Shape shape) {
    Tensor t = Tensor::zeros(DType::kF32, std::move(shape));
    std::copy(v.begin(), v.end(), t.mutable_f32());
    return t;
  };
  const auto& c = s.config;
  const auto& p = s.params;
  model::LayerWeights w;
  w.attn_norm = tensor(p.attn_norm, {c.hidden_size});
  w.mlp_norm = tensor(p.mlp_norm, {c.hidden_size});
  w.wq = tensor(p.wq, {c.q_dim(), c.hidden_size});
  w.wk = tensor(p.wk, {c.kv_dim(), c.hidden_size});
  w.wv = tensor(p.wv, {c.kv_dim(), c.hidden_size});
  w.wo = tensor(p.wo, {c.hidden_size, c.q_dim()});
  w.w_gate = tensor(p.w_gate, {c.intermediate_size, c.hidden_size});
  w.w_up = tensor(p.w_up, {c.intermediate_size, c.hidden_size});
  w.w_down = tensor(p.w_down, {c.hidden_size, c.intermediate_size});
  model::LayerScratch scratch(c, seq);
  std::vector<float> hidden(s.input);
  for (auto _ : state) {
    hidden = s.input;
    model::decoder_layer_forward(c, w, 0, hidden.data(), seq, scratch, pool);
    benchmark::DoNotOptimize(hidden.data());
  }
}
BENCHMARK(BM_RuntimeDecoderLayer)
    ->ArgNames({"shape", "threads"})
    ->Args({0, 2})->Args({1, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace calq::grad

BENCHMARK_MAIN();
