// Input-scale folding — the algebra that makes activation-aware scalings (AWQ, SmoothQuant) free
// at inference: a linear layer's input column c is multiplied by s[c] in the weights of every
// linear that reads that input, and the tensor that produces that input is divided by s[c], so
// the float model computes the same function (up to float rounding).
//
// Which linears share an input, what produces it and where the scales fold is the block topology
// of the model's architecture (block_topology.h). For the standard Llama block:
//   attn_in   consumers q, k, v;  producer: attn_norm's weight (RMSNorm output is x/rms · w)
//   mlp_in    consumers gate, up; producer: mlp_norm's weight
//   mlp_down  consumer down;      producer: rows of up (down reads silu(gate) · up, linear in up)
//   attn_out  consumer o;         producer: rows of v and its bias (attention output channel c is a
//             convex combination of v's channel c). Only when num_heads == num_kv_heads: with grouped
//             query attention several o columns share one v channel, and the fold is refused.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/architecture.h"
#include "model/block_topology.h"
#include "model/config.h"
#include "model/model.h"

namespace calq::model {

// The consumer roles of the foldable site whose first consumer is `group` ({kAttnQ, kAttnK,
// kAttnV} for kAttnQ, ...) in `block`. Any other role is an Error(kInvalidArgument) naming it.
std::vector<TensorRole> input_consumers(TensorRole group, const BlockTopology& block = kLlamaBlock);

// Multiplies input column c of every consumer of `site` by s[c] and divides the producer's
// output c by s[c] (norm weight, or producer rows and bias), as the block topology of
// config.model_type says. The changed tensors are replaced by new float32 tensors (storage shared
// with other holders is never written).
// Errors (nothing is changed): a site without a fold point (kInvalidArgument); consumers or
// producer not dense float32 (kUnsupported, naming the tensor); s of the wrong length or with a
// value not finite and > 0 (kInvalidArgument); a fold condition the config does not meet, e.g.
// attn_out with num_heads != num_kv_heads (kUnsupported, naming the layer); a site with an online
// transform (LayerWeights::transforms; kUnsupported, naming layer and site); a consumer or a linear
// producer with a LoRA adapter (LayerWeights::adapters; kUnsupported, naming the tensor).
void fold_input_scales(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, InputSite site,
                       std::span<const float> s);
// The producer's half alone: output c of the producer divided by s[c], the consumers untouched —
// for callers whose consumers already hold W·diag(s) (FlatQuant's transformed weights). Same
// checks and errors as fold_input_scales.
void fold_into_producer(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, InputSite site,
                        std::span<const float> s);
// The same, naming the site by its first consumer (kAttnQ for attn_in, ...); any other role is
// an Error(kInvalidArgument).
void fold_input_scales(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, TensorRole group,
                       std::span<const float> s);

}  // namespace calq::model
