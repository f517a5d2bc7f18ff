// The packed tensors of the quantized Hugging Face checkpoints vLLM, SGLang and transformers load —
// GPTQ, AWQ (GEMM) and compressed-tensors pack-quantized — to and from plain integer tensors
// (formats/int_layout.h), bit for bit. Layout facts from the producing projects (AutoGPTQ/GPTQModel,
// AutoAWQ, compressed-tensors) and vLLM's loaders; docs/formats.md, "Hugging Face quantized
// checkpoints", documents each. A weight is [N, K] (N outputs, K inputs); groups run along K.
//
//  * GPTQ: qweight I32 [K·b/32, N], packed along K; qzeros I32 [G, N·b/32], packed along N;
//    scales F16 [G, N]; g_idx I32 [K] (g_idx[k] = the group of input k). Packing: every 32
//    consecutive elements form one little-endian bit stream over b 32-bit words, element i at
//    bits [i·b, i·b + b) (3-bit elements straddle words). Checkpoint format v1 ("gptq") stores
//    zero − 1 (masked to b bits), v2 ("gptq_v2") the zero. w = scale · (q − zero).
//  * AWQ GEMM: qweight I32 [K, N/8] and qzeros I32 [G, N/8], eight 4-bit values per word along N
//    in the order [0, 2, 4, 6, 1, 3, 5, 7] (nibble i holds column 8j + order[i]); scales F16
//    [G, N]; zeros raw; 4 bits only.
//  * compressed-tensors pack-quantized: weight_packed I32 [N, ceil(K/p)], p = 32/b values per
//    word along K (value i of a word at bits [i·b, i·b + b)), each stored as q + 2^(b−1) (= calq's
//    unsigned code); weight_scale [N, G]; weight_zero_point (asymmetric only) I32 [ceil(N/p), G]
//    packed the same way along N, stored as zp + 2^(b−1); w = scale · (q − zp).
//
// Contract: *_pack takes parts whose scales are fp16 values (Error kInvalidArgument naming the
// tensor otherwise) and shapes the layout can hold (kInvalidArgument naming tensor and rule);
// GPTQ v1 refuses a zero of 0, which v1 cannot store, naming the group and suggesting v2.
// *_unpack takes the packed tensors' raw little-endian bytes and the scales as floats (converted from
// whatever float dtype the file has, [G, N] for GPTQ/AWQ, [N, G] for compressed-tensors), checks every
// size against the shapes and gives the parts back (pack then unpack is the identity); a v1 zero that unpacks to 2^b is kFormat. g_idx: gptq_pack writes k / group;
// gptq_unpack returns it, and the caller decides (gidx_is_sequential) whether the int format holds
// the tensor or it must be dequantized with dequantize_with_gidx.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "formats/int_layout.h"

namespace calq::io {

enum class GptqVersion { kV1, kV2 };

struct GptqTensors {
  int64_t qweight_rows = 0, qzeros_cols = 0, groups = 0;  // shapes: [qweight_rows, N], [groups, qzeros_cols]
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales;  // fp16 bits [groups, N]
};
GptqTensors gptq_pack(const IntTensorParts& parts, GptqVersion version, std::string_view tensor);
// group: the config's group_size (−1: one group of K). Spans hold the tensors' elements.
IntTensorParts gptq_unpack(int bits, int64_t n, int64_t k, int64_t group, GptqVersion version,
                           std::span<const std::byte> qweight, std::span<const std::byte> qzeros,
                           std::span<const float> scales, std::span<const std::byte> g_idx,
                           std::vector<int32_t>& g_idx_out, std::string_view tensor);
bool gidx_is_sequential(std::span<const int32_t> g_idx, int64_t group);
// w[n·K + k] = scale[n, g_idx[k]] · (code[n, k] − zero[n, g_idx[k]]), parts.group ignored.
std::vector<float> dequantize_with_gidx(const IntTensorParts& parts, std::span<const int32_t> g_idx);

struct AwqTensors {
  int64_t groups = 0;
  std::vector<int32_t> qweight, qzeros;  // [K, N/8], [groups, N/8]
  std::vector<uint16_t> scales;          // [groups, N]
};
AwqTensors awq_pack(const IntTensorParts& parts, std::string_view tensor);
IntTensorParts awq_unpack(int64_t n, int64_t k, int64_t group, std::span<const std::byte> qweight,
                          std::span<const std::byte> qzeros, std::span<const float> scales,
                          std::string_view tensor);

struct CtPackedTensors {
  int64_t packed_cols = 0, zero_rows = 0, groups = 0;
  std::vector<int32_t> weight_packed;  // [N, packed_cols]
  std::vector<uint16_t> scales;        // fp16 bits [N, groups]
  std::vector<int32_t> zero_point;     // [zero_rows, groups]; empty when symmetric
};
CtPackedTensors ct_pack(const IntTensorParts& parts, bool symmetric, std::string_view tensor);
// zero_point empty: symmetric (zero 2^(b−1)).
IntTensorParts ct_unpack(int bits, int64_t n, int64_t k, int64_t group, std::span<const std::byte> weight_packed,
                         std::span<const float> scales, std::span<const std::byte> zero_point,
                         std::string_view tensor);

}  // namespace calq::io
