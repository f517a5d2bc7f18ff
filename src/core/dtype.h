// Element types of dense tensors, and scalar conversions between them.
// Block (quantized) formats live in the `formats` layer; this is only what `core` needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace calq {

// kF8E4M3: OCP FP8 E4M3 (safetensors F8_E4M3), one byte; only as stored bytes (quantized checkpoints'
// weights), which the fp8 formats decode; convert_to_f32 does not take it.
enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kU8, kF8E4M3 };

std::string_view dtype_name(DType dtype);  // safetensors spelling: "F32", "F16", "BF16", ...
size_t dtype_size(DType dtype);            // bytes per element
std::optional<DType> dtype_from_name(std::string_view name);

// IEEE binary16 <-> binary32, round-to-nearest-even, NaN/Inf preserved.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// bfloat16 is the top half of a binary32; conversion to f32 is exact.
inline float bf16_to_f32(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
uint16_t f32_to_bf16(float f);  // round-to-nearest-even, NaN stays NaN

// Converts `count` elements of `dtype` (F32/F16/BF16) at `src` to float32 at `dst`.
// `src` need not be aligned. Fast path (F16C/AVX2) and scalar reference give identical results.
void convert_to_f32(DType dtype, const void* src, float* dst, size_t count);
void convert_to_f32_scalar(DType dtype, const void* src, float* dst, size_t count);

}  // namespace calq
