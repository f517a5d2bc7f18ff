// F16 and BF16 as formats (GGUF types 1 and 30): one 16-bit float per weight, round to nearest even.
// Importance weights cannot change the nearest representable value, so they are ignored.
#include "core/dtype.h"
#include "formats/format.h"

namespace calq {
namespace {

class Float16Format final : public RowFormat {
 public:
  explicit Float16Format(bool brain) : brain_(brain) {
    traits_ = FormatTraits{
        .name = brain ? "bf16" : "f16",
        .family = "float",
        .description = brain ? "bfloat16 (8-bit exponent, 7-bit mantissa)" : "IEEE binary16",
        .block_size = 1,
        .block_bytes = 2,
        .ggml_type = brain ? 30u : 1u,
        .bits_per_weight = 16,
        // Unit roundoff 2^-9 (bf16) / 2^-12 (f16) bounds the relative error of every element.
        .max_relative_rmse = brain ? 0.00196 : 0.000245,
    };
  }
  const FormatTraits& traits() const override { return traits_; }

 protected:
  void quantize_row(const float* x, int64_t cols, const float*, std::byte* out) const override {
    for (int64_t i = 0; i < cols; ++i) {
      const uint16_t h = brain_ ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
  void dequantize_row(const std::byte* in, int64_t cols, float* out) const override {
    convert_to_f32_scalar(brain_ ? DType::kBF16 : DType::kF16, in, out, static_cast<size_t>(cols));
  }
  void dequantize_row_fast(const std::byte* in, int64_t cols, float* out) const override {
    convert_to_f32(brain_ ? DType::kBF16 : DType::kF16, in, out, static_cast<size_t>(cols));
  }

 private:
  bool brain_;
  FormatTraits traits_;
};

}  // namespace

FormatList make_float_formats() {
  FormatList list;
  list.push_back(std::make_unique<Float16Format>(false));
  list.push_back(std::make_unique<Float16Format>(true));
  return list;
}

}  // namespace calq
