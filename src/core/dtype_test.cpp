#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace calq {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(DType, NamesRoundTrip) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64, DType::kU8, DType::kF8E4M3}) {
    auto parsed = dtype_from_name(dtype_name(d));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(dtype_size(DType::kF8E4M3), 1u);
  EXPECT_FALSE(dtype_from_name("F8_E5M2").has_value());
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
}

TEST(DType, F16ExhaustiveRoundTrip) {
  // Every finite f16 converts to f32 exactly and back to the same bits (NaNs stay NaN).
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << "h=" << h;
  }
}

TEST(DType, F16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00);           // tie -> even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3c02);           // tie -> even (up)
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                        // rounds to Inf
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);                        // max finite
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);           // tie to even zero
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);           // above half ulp
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
}

TEST(DType, BF16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bits(bf16_to_f32(0x3f81)), 0x3f810000u);
  float tie;
  uint32_t u = 0x3f808000u;  // exactly half way between 0x3f80 and 0x3f81
  std::memcpy(&tie, &u, 4);
  EXPECT_EQ(f32_to_bf16(tie), 0x3f80);
  u = 0x3f818000u;
  std::memcpy(&tie, &u, 4);
  EXPECT_EQ(f32_to_bf16(tie), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, FastConversionMatchesScalar) {
  std::vector<uint16_t> src(65536 + 5);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint16_t>(i * 40503u);
  for (DType d : {DType::kF16, DType::kBF16}) {
    std::vector<float> fast(src.size()), ref(src.size());
    convert_to_f32(d, src.data(), fast.data(), src.size());
    convert_to_f32_scalar(d, src.data(), ref.data(), src.size());
    for (size_t i = 0; i < src.size(); ++i) {
      if (std::isnan(ref[i])) {
        EXPECT_TRUE(std::isnan(fast[i]));
      } else {
        EXPECT_EQ(bits(fast[i]), bits(ref[i])) << dtype_name(d) << " i=" << i;
      }
    }
  }
}

}  // namespace
}  // namespace calq
