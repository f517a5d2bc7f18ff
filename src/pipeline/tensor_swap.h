// Addressing single weight matrices of a Model by GGUF name, and building "hybrid" models that
// take some weights from another model of the same architecture — the primitive under the
// sensitivity map (one quantized tensor in an otherwise full-precision model) and bisection
// (some tensors of a quantized model restored to full precision).
//
// Contract:
//  * weight_refs() lists every linear weight in model order: the token embedding first, then
//    blk.0 attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, blk.1 ..., and the
//    output head last when it is not tied to the embedding. A tied embedding/head is ONE entry
//    ("token_embd.weight") and replacing it replaces both roles (they stay one tensor). A MoE
//    model's layer lists the linears it has, then each expert weight (WeightRef::expert), all
//    experts of a role under the role's stacked GGUF name ("blk.3.ffn_down_exps.weight"): the
//    sensitivity map swaps them as one group, as GGUF stores them as one tensor of one type.
//  * Model copies are shallow (LinearWeight and Tensor copies share storage), so a hybrid costs
//    no weight memory; replacing a weight in a copy never changes the model it was copied from.
//  * check_same_layout() throws ErrorKind::kInvalidArgument naming both models (their source
//    paths) and the first tensor whose presence or shape differs, or the first norm weight whose
//    values differ, or a rotation only one of them has (awq/smoothquant/rotate fold scales into the
//    norms, so single weights of such a model do not fit into the other), or online input
//    transforms (LayerWeights::transforms) that are not the same in both.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"

namespace calq::pipeline {

struct WeightRef {
  model::TensorRole role;
  int64_t layer = -1;  // -1: embedding or head
  std::string name;    // GGUF name, "blk.3.attn_v.weight", "token_embd.weight"
  std::string short_role;  // the GGUF role without layer and suffix: "attn_v", "ffn_down", "token_embd"
  int64_t expert = -1;     // a MoE expert's weight (role kExpertGate/Up/Down): its index
};

std::vector<WeightRef> weight_refs(const model::Model& m);

const model::LinearWeight& weight_at(const model::Model& m, const WeightRef& ref);
// Sets the weight (both embedding and head when the model's head is tied to its embedding).
void set_weight(model::Model& m, const WeightRef& ref, const model::LinearWeight& w);

// A shallow copy of `base` with the weights `refs` taken from `donor` (same layout).
model::Model hybrid_model(const model::Model& base, const model::Model& donor, std::span<const WeightRef> refs);

// (Also: the expert counts, and every expert weight's shape.)
void check_same_layout(const model::Model& a, const model::Model& b);

}  // namespace calq::pipeline
