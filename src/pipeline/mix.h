// Quantization mixes: which ggml type each tensor of a GGUF model gets.
//
// Two kinds of mix, looked up by name (case-insensitive):
//  * Pure ("q4_0", "q4_k", "iq4_xs", "f16", ... and "pure-<type>" for every one): every tensor
//    that may be quantized gets the one type, like llama-quantize --pure.
//  * llama.cpp's named mixes ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s",
//    "q5_k_m", "q6_k", "q8_0"): llama.cpp's per-tensor rules (src/llama-quant.cpp) — attn_v and
//    ffn_down get more bits on some layers, output.weight (or token_embd.weight when the
//    embeddings are tied) gets Q6_K, and so on. Where a name is both a llama.cpp mix and a single
//    type (q2_k, q6_k, q8_0) the name means the mix, as it does for llama-quantize; the single
//    type is "pure-q2_k".
//
// Contract (assign_types):
//  * A tensor keeps its own type unless llama.cpp would quantize it: at least 2 dimensions (ggml
//    counts trailing 1s as absent), a name ending in "weight", not a norm, not a gating/position/
//    token-type/conv tensor (llama.cpp's exclusion list). So 1-D norms stay F32.
//  * llama.cpp's counters (the i-th attn_v, the i-th ffn_down) run over the tensors in
//    llama.cpp's order: tensors outside "blk.N." first, then block by block, each group sorted by
//    name (llama_tensor_order). The result does not depend on the order of the input.
//  * When a row length (ne[0]) is not a multiple of the chosen type's block size, llama.cpp's
//    fallback applies (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS ->
//    IQ4_NL; F16 when even that does not fit).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"

namespace calq::pipeline {

// What llama.cpp's rules read from the model's hyper-parameters.
struct ModelShape {
  std::string arch;        // general.architecture
  int64_t n_layer = 0;     // <arch>.block_count
  int64_t n_head = 0;      // <arch>.attention.head_count
  int64_t n_head_kv = 0;   // <arch>.attention.head_count_kv (n_head when absent)
  int64_t n_expert = 0;    // <arch>.expert_count (0 when absent)
};
// Reads the keys above; errors (kNotFound / kFormat) name the file and key.
ModelShape model_shape_from_gguf(const io::GgufFile& file);

struct MixTensor {
  std::string name;
  std::vector<int64_t> ne;  // ggml order
  uint32_t type = io::kGgmlF32;
};

enum class MixKind { kPure, kLlama };

struct QuantMix {
  std::string name;          // lower case: "q4_k_m", "q4_0", "pure-q2_k"
  MixKind kind = MixKind::kPure;
  uint32_t default_type = 0;  // ggml type of the bulk of the weights
  uint32_t file_type = 0;     // llama.cpp's llama_ftype, written as general.file_type
  std::string description;
};

const std::vector<QuantMix>& all_mixes();
const QuantMix* find_mix(std::string_view name);  // case-insensitive; nullptr when unknown
const QuantMix& mix_by_name(std::string_view name);  // kInvalidArgument listing the known names

// Indices of `tensors` in llama.cpp's processing order (see the contract above).
std::vector<size_t> llama_tensor_order(std::span<const MixTensor> tensors);

// Whether llama.cpp would quantize this tensor at all (the exclusion rules above).
bool tensor_is_quantizable(const MixTensor& tensor);

struct TypeChoice {
  uint32_t type = 0;        // ggml type the tensor is written in
  bool quantize = false;    // type differs from the input's: the tensor is converted
  bool fell_back = false;   // the row length forced a fallback type
};

// One choice per tensor, in the order of `tensors`.
std::vector<TypeChoice> assign_types(const QuantMix& mix, const ModelShape& shape,
                                     std::span<const MixTensor> tensors);

}  // namespace calq::pipeline
