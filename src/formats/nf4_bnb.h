// The parts of the nf4-bnb format (nf4_bnb.cpp: NF4 with bitsandbytes' double quantization) that the
// Hugging Face bitsandbytes checkpoint writer and reader (model/hf_quant.h) regroup into transformers'
// tensors. Layout of a [rows, cols] tensor's bytes (cols % 64 == 0; N = rows·cols/64 blocks):
//   row data: per block [u8 nested code][32 bytes: NF4 codes, element 2i in the high nibble of byte i]
//   trailer:  [fp32 offset][fp32 dynamic map × 256][fp32 nested absmax × bnb_nested_groups(rows, cols)]
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace calq {

inline constexpr int64_t kBnbBlock = 64;         // elements per NF4 block (bitsandbytes' blocksize)
inline constexpr int64_t kBnbNestedBlock = 256;  // constants per nested group (nested_blocksize)
inline constexpr size_t kBnbBlockBytes = 33;     // [u8 nested code][32 nibble bytes]

// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True)), ascending; what calq writes.
const std::array<float, 256>& bnb_dynamic_map();
// bitsandbytes' NF4 table (get_4bit_type("nf4")), ascending.
const std::array<float, 16>& bnb_nf4_levels();
// ceil(rows·(cols/64) / 256).
int64_t bnb_nested_groups(int64_t rows, int64_t cols);

}  // namespace calq
