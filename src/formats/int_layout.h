// An int format's tensor (formats/int_format.cpp: int<b>-<pt|pc|gN>-<sym|asym>[-f32]) as plain
// arrays — stored codes, scales and zero points — and back: what other checkpoint layouts (GPTQ,
// AWQ, compressed-tensors; io/hf_quant_pack.h) repack, bit for bit.
//
// Contract:
//  * int_tensor_parts(f, bytes, rows, cols): for a tensor in int format f, codes[r·cols + c] is the
//    stored code u in [0, 2^bits) and, for g = c / group, scales[r·groups + g] the stored scale
//    (the fp16 or fp32 value as a float) and zeros[r·groups + g] the zero z such that f dequantizes
//    the weight to exactly scale · float(u − z) (one float multiplication). group is the format's
//    group size, or cols for per-channel and per-tensor formats (per-tensor: every row repeats the
//    one scale). Sym formats give z = 2^(bits−1).
//  * int_tensor_bytes(f, parts) is the inverse: the bytes of the same tensor in f, for parts whose
//    bits and group fit f (per-channel f: group == cols; per-tensor f: group == cols and one scale
//    throughout), whose scales f can store (fp16 formats: fp16 values) and whose zeros f can hold
//    (sym: all 2^(bits−1); asym: < 2^bits). Anything else is Error(kInvalidArgument) naming
//    `tensor_name` and the first offending group. Then dequantizing the bytes gives
//    scale · float(u − z) for every weight.
//  * int_format_name(bits, group, symmetric): the registered name ("int4-g128-sym"; group == 0 for
//    per-channel: "int4-pc-sym"), fp16 scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/format.h"

namespace calq {

struct IntLayout {
  int bits = 4;
  enum class Granularity { kTensor, kChannel, kGroup } granularity = Granularity::kGroup;
  int64_t group = 128;  // kGroup only
  bool symmetric = true;
  bool f32_scale = false;
};

// The layout of an int format; nullopt for any other format.
std::optional<IntLayout> int_layout(const Format& format);

struct IntTensorParts {
  int bits = 4;
  int64_t rows = 0, cols = 0;
  int64_t group = 0;             // columns per scale (cols for one scale per row)
  std::vector<uint8_t> codes;    // rows × cols
  std::vector<float> scales;     // rows × (cols / group)
  std::vector<uint8_t> zeros;    // rows × (cols / group)
  int64_t groups() const { return group > 0 ? cols / group : 0; }
};

IntTensorParts int_tensor_parts(const Format& format, std::span<const std::byte> bytes, int64_t rows, int64_t cols);
std::vector<std::byte> int_tensor_bytes(const Format& format, const IntTensorParts& parts,
                                        std::string_view tensor_name = "<tensor>");
std::string int_format_name(int bits, int64_t group, bool symmetric);

}  // namespace calq
