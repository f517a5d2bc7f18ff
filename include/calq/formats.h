// Number formats on plain arrays: encode a row-major [rows, cols] float32 matrix into a
// registered format's bytes (GGUF block types bit-exact with ggml, int, NF4, FP8, MX, ...) and
// decode them back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace calq::formats {

struct FormatInfo {
  std::string name;
  double bits_per_weight = 0;  // storage bits per element, scales included
  int64_t block = 0;           // elements per block along a row (cols must be a multiple)
  bool gguf_native = false;    // llama.cpp loads it
};

std::vector<FormatInfo> list();
FormatInfo info(const std::string& name);  // Error for an unknown name (listing close names)

// `values`: rows*cols finite floats; `importance`: empty or `cols` non-negative weights (E[x²] of
// the input channels). Errors: unknown format, a shape the format cannot store, NaN/Inf input.
std::vector<std::byte> quantize(const std::string& format, std::span<const float> values, int64_t rows, int64_t cols,
                                std::span<const float> importance = {});
std::vector<float> dequantize(const std::string& format, std::span<const std::byte> bytes, int64_t rows,
                              int64_t cols);

}  // namespace calq::formats
