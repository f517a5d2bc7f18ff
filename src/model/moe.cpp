#include "model/moe.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/vec_math.h"

namespace calq::model {
namespace {

constexpr Grain kRowGrain{.min_items = 16};

void call_hook(const LinearHook* hook, int64_t layer, TensorRole role, int64_t expert, const float* x, int64_t rows,
               int64_t cols, int64_t routed = -1) {
  if (hook != nullptr && *hook && rows > 0) (*hook)(LinearInput{layer, role, x, rows, cols, expert, routed});
}

void router_logits(const ModelConfig& c, const LayerWeights& w, int64_t layer, const float* x, int64_t seq_len,
                   float* logits, ThreadPool& pool, const LinearHook* hook) {
  call_hook(hook, layer, TensorRole::kMoeRouter, -1, x, seq_len, c.hidden_size);
  // The router has no adapter slot (LayerWeights::adapters covers kLayerLinearRoles): plain product.
  linear_nt(pool, x, c.hidden_size, seq_len, w.router, logits, c.moe->num_experts);
}

}  // namespace

Routing route_tokens(const ModelConfig& c, const float* logits, int64_t tokens, int64_t layer) {
  const int64_t n = c.moe->num_experts;
  const int64_t k = c.moe->experts_per_token;
  Routing r{.tokens = tokens, .k = k};
  r.expert.resize(static_cast<size_t>(tokens * k));
  r.weight.resize(static_cast<size_t>(tokens * k));
  std::vector<float> p(static_cast<size_t>(n));
  std::vector<int32_t> order(static_cast<size_t>(n));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * n;
    for (int64_t e = 0; e < n; ++e) {
      if (!std::isfinite(l[e])) {
        fail(ErrorKind::kInvalidArgument, "layer {}: the router's logit for expert {} at token {} is {}", layer, e, t,
             std::isnan(l[e]) ? "NaN" : "infinite");
      }
    }
    // softmax in float32 as transformers (its Mixtral/Qwen routers upcast to float32).
    std::copy(l, l + n, p.begin());
    const float mx = *std::max_element(p.begin(), p.end());
    double sum = 0.0;
    for (float& v : p) {
      v = std::exp(v - mx);
      sum += v;
    }
    const auto inv = static_cast<float>(1.0 / sum);
    for (float& v : p) v *= inv;
    for (int64_t e = 0; e < n; ++e) order[static_cast<size_t>(e)] = static_cast<int32_t>(e);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      const float pa = p[static_cast<size_t>(a)], pb = p[static_cast<size_t>(b)];
      return pa > pb || (pa == pb && a < b);
    });
    float picked = 0.0f;
    for (int64_t j = 0; j < k; ++j) picked += p[static_cast<size_t>(order[static_cast<size_t>(j)])];
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = order[static_cast<size_t>(j)];
      float wgt = p[static_cast<size_t>(e)];
      if (c.moe->norm_topk_prob) wgt /= picked;
      r.expert[static_cast<size_t>(t * k + j)] = e;
      r.weight[static_cast<size_t>(t * k + j)] = wgt;
    }
  }
  return r;
}

MoeScratch::MoeScratch(const ModelConfig& c, int64_t seq_len) {
  const auto t = static_cast<size_t>(seq_len);
  const auto h = static_cast<size_t>(c.hidden_size);
  const auto w = static_cast<size_t>(std::max(c.moe->expert_intermediate, c.moe->shared_intermediate));
  logits_.resize(t * static_cast<size_t>(c.moe->num_experts));
  x_.resize(t * h);
  gate_.resize(t * w);
  up_.resize(t * w);
  y_.resize(t * h);
  out_.resize(t * h);
  shared_gate_.resize(t);
  rows_.resize(t * static_cast<size_t>(c.moe->experts_per_token));
  weights_.resize(rows_.size());
}

void moe_mlp_forward(const ModelConfig& c, const LayerWeights& w, int64_t layer, const float* x, int64_t seq_len,
                     float* hidden, MoeScratch& s, ThreadPool& pool, const LinearHook* hook) {
  const int64_t hs = c.hidden_size;
  const int64_t k = c.moe->experts_per_token;
  router_logits(c, w, layer, x, seq_len, s.logits_.data(), pool, hook);
  const Routing r = route_tokens(c, s.logits_.data(), seq_len, layer);

  float* out = s.out_.data();
  std::fill(out, out + seq_len * hs, 0.0f);
  // The tokens routed to each expert, in token order, with their weights, bucketed in one pass:
  // expert e's are entries begin[e] .. begin[e + 1] of s.rows_ / s.weights_.
  const int64_t ne = c.moe->num_experts;
  std::vector<int64_t> begin(static_cast<size_t>(ne + 1), 0);
  for (const int32_t e : r.expert) ++begin[static_cast<size_t>(e) + 1];
  for (size_t e = 0; e < static_cast<size_t>(ne); ++e) begin[e + 1] += begin[e];
  std::vector<int64_t> next(begin.begin(), begin.end() - 1);
  for (size_t slot = 0; slot < r.expert.size(); ++slot) {  // slot = t·k + j: tokens in order
    const auto at = static_cast<size_t>(next[static_cast<size_t>(r.expert[slot])]++);
    s.rows_[at] = static_cast<int32_t>(static_cast<int64_t>(slot) / k);
    s.weights_[at] = r.weight[slot];
  }
  // All experts' statistics (calibration): the hook sees every expert's inputs on every token,
  // computed apart, so the layer's output (the routed pass, which then reports nothing) is the
  // natural path's, bit for bit.
  const bool all = c.moe_hook_all_experts && hook != nullptr && *hook;
  const LinearHook* routed_hook = all ? nullptr : hook;
  for (int64_t e = 0; e < ne; ++e) {
    const int32_t* rows = s.rows_.data() + begin[static_cast<size_t>(e)];
    const float* weights = s.weights_.data() + begin[static_cast<size_t>(e)];
    const int64_t n = begin[static_cast<size_t>(e) + 1] - begin[static_cast<size_t>(e)];
    const ExpertWeights& ew = w.experts[static_cast<size_t>(e)];
    const int64_t inter = ew.w_gate.rows();
    if (all) {
      call_hook(hook, layer, TensorRole::kExpertGate, e, x, seq_len, hs, n);
      call_hook(hook, layer, TensorRole::kExpertUp, e, x, seq_len, hs, n);
      linear_nt(pool, x, hs, seq_len, ew.w_gate, s.gate_.data(), inter);
      linear_nt(pool, x, hs, seq_len, ew.w_up, s.up_.data(), inter);
      silu_mul(s.gate_.data(), s.up_.data(), seq_len * inter);
      call_hook(hook, layer, TensorRole::kExpertDown, e, s.gate_.data(), seq_len, inter, n);
    }
    if (n == 0) continue;
    for (int64_t i = 0; i < n; ++i) {
      const float* src = x + static_cast<int64_t>(rows[i]) * hs;
      std::copy(src, src + hs, s.x_.data() + i * hs);
    }
    call_hook(routed_hook, layer, TensorRole::kExpertGate, e, s.x_.data(), n, hs, n);
    call_hook(routed_hook, layer, TensorRole::kExpertUp, e, s.x_.data(), n, hs, n);
    linear_nt(pool, s.x_.data(), hs, n, ew.w_gate, s.gate_.data(), inter);
    linear_nt(pool, s.x_.data(), hs, n, ew.w_up, s.up_.data(), inter);
    silu_mul(s.gate_.data(), s.up_.data(), n * inter);
    call_hook(routed_hook, layer, TensorRole::kExpertDown, e, s.gate_.data(), n, inter, n);
    linear_nt(pool, s.gate_.data(), inter, n, ew.w_down, s.y_.data(), hs);
    for (int64_t i = 0; i < n; ++i) {
      float* o = out + static_cast<int64_t>(rows[i]) * hs;
      const float* y = s.y_.data() + i * hs;
      const float wt = weights[i];
      for (int64_t j = 0; j < hs; ++j) o[j] += wt * y[j];
    }
  }

  if (c.moe->shared_intermediate > 0) {
    // Qwen2-MoE: out += sigmoid(x·g) · down(silu(gate(x)) · up(x)), the shared expert in the dense
    // MLP slots.
    const int64_t inter = c.moe->shared_intermediate;
    call_hook(hook, layer, TensorRole::kSharedExpertGate, -1, x, seq_len, hs);
    linear_nt(pool, x, hs, seq_len, w.shared_expert_gate, s.shared_gate_.data(), 1);
    call_hook(hook, layer, TensorRole::kMlpGate, -1, x, seq_len, hs);
    call_hook(hook, layer, TensorRole::kMlpUp, -1, x, seq_len, hs);
    layer_linear(pool, w, TensorRole::kMlpGate, x, seq_len, s.gate_.data());
    layer_linear(pool, w, TensorRole::kMlpUp, x, seq_len, s.up_.data());
    pool.parallel_for(0, static_cast<size_t>(seq_len), kRowGrain, [&](size_t r0, size_t r1) {
      const int64_t off = static_cast<int64_t>(r0) * inter;
      silu_mul(s.gate_.data() + off, s.up_.data() + off, static_cast<int64_t>(r1 - r0) * inter);
    });
    call_hook(hook, layer, TensorRole::kMlpDown, -1, s.gate_.data(), seq_len, inter);
    layer_linear(pool, w, TensorRole::kMlpDown, s.gate_.data(), seq_len, s.y_.data());
    for (int64_t t = 0; t < seq_len; ++t) {
      const float g = 1.0f / (1.0f + std::exp(-s.shared_gate_[static_cast<size_t>(t)]));
      float* o = out + t * hs;
      const float* y = s.y_.data() + t * hs;
      for (int64_t j = 0; j < hs; ++j) o[j] += g * y[j];
    }
  }
  pool.parallel_for(0, static_cast<size_t>(seq_len), kRowGrain, [&](size_t r0, size_t r1) {
    for (size_t t = r0; t < r1; ++t) {
      float* h = hidden + static_cast<int64_t>(t) * hs;
      const float* o = out + static_cast<int64_t>(t) * hs;
      for (int64_t j = 0; j < hs; ++j) h[j] += o[j];
    }
  });
}

}  // namespace calq::model
