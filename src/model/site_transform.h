// Installing an online input transform (FlatQuant's T = A ⊗ B, kron_transform.h) on one input
// site of one decoder layer (block_topology.h: attn_in → q, k, v; attn_out → o; mlp_in → gate,
// up; mlp_down → down).
//
// Contract of set_site_transform:
//  * Folds T^{-T} into every consumer of the site (W ← W·T^{-T}, new float32 tensors: storage
//    shared with other Models is never written; activation quantization specs of the consumers
//    are not carried over — calibrate them afterwards) and stores T in
//    layer.transforms[site], so that the forward pass, which applies x·T to the site's input,
//    computes the same function up to float rounding.
//  * Weights are quantized after the fold: install transforms on the float model.
//  * Errors (kInvalidArgument, nothing changed), each naming "layer L site S": a layer out of
//    range; a site that is not a layer site of the model's block (head_in); a site that already
//    has a transform; a transform whose width is not the site's; a consumer that is not dense
//    float32 (a quantized consumer); a consumer with a LoRA adapter; a singular, ill-conditioned or
//    non-finite factor (KronFold, with `options`).
#pragma once

#include <cstdint>
#include <string>

#include "core/thread_pool.h"
#include "model/block_topology.h"
#include "model/kron_transform.h"
#include "model/model.h"

namespace calq::model {

// "layer 3 site attn_in": how errors about one site's transform start.
std::string site_transform_context(int64_t layer, InputSite site);

void set_site_transform(Model& model, int64_t layer, InputSite site, KronTransform transform, ThreadPool& pool,
                        const KronFoldOptions& options = {});

}  // namespace calq::model
