// The mixture-of-experts MLP of a decoder layer (config.moe), as transformers and llama.cpp
// compute it:
//   p = softmax(x·Rᵀ) over all experts (R: the router [num_experts, hidden]);
//   the experts_per_token largest p are picked per token (ties: the lower expert index first);
//   w = the picked p, divided by their sum when norm_topk_prob;
//   y = Σ_picked w_e · down_e(silu(gate_e(x)) · up_e(x))
//       [+ sigmoid(x·g) · down(silu(gate(x)) · up(x)) with a shared expert];
//   hidden += y.
// Expert e runs once per layer on the tokens routed to it, gathered in token order; its result
// is added to y[token] in expert order 0, 1, ..., so the result is the same for any thread count.
//
// Contract: a router logit that is not finite is an Error(kInvalidArgument) naming the layer, the
// token and the expert. The LinearHook (forward.h) sees the router's and the shared expert gate's
// input (the whole x) and each expert's gathered input (LinearInput::expert = its index; rows =
// the tokens routed to it, possibly none: then the hook is not called). With
// config.moe_hook_all_experts (calibration's "all experts" policy) every expert runs on every
// token and the hook sees all of them (routed_rows still counts the routed ones); the layer's
// output is the same.
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/model.h"

namespace calq::model {

// The experts picked per token: expert[t·k + j], weight[t·k + j] for j < k, largest p first.
struct Routing {
  int64_t tokens = 0;
  int64_t k = 0;
  std::vector<int32_t> expert;
  std::vector<float> weight;
};

// logits[tokens, num_experts] → the picks above. `layer` names errors.
Routing route_tokens(const ModelConfig& config, const float* logits, int64_t tokens, int64_t layer);

// Scratch for moe_mlp_forward, sized for `seq_len` tokens.
class MoeScratch {
 public:
  MoeScratch(const ModelConfig& config, int64_t seq_len);

 private:
  friend void moe_mlp_forward(const ModelConfig&, const LayerWeights&, int64_t, const float*, int64_t, float*,
                              MoeScratch&, ThreadPool&, const LinearHook*);
  std::vector<float> logits_, x_, gate_, up_, y_, out_, shared_gate_;
  std::vector<int32_t> rows_;   // [tokens · k]: routed tokens bucketed by expert
  std::vector<float> weights_;  // their routing weights
};

// hidden[seq_len, hidden_size] += the MoE MLP of `x` (the mlp norm's output, [seq_len, hidden]).
void moe_mlp_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer, const float* x,
                     int64_t seq_len, float* hidden, MoeScratch& scratch, ThreadPool& pool, const LinearHook* hook);

}  // namespace calq::model
