// nf4-bnb (nf4_bnb.cpp): bitsandbytes' signed dynamic map, a block's NF4 codes and nibble order, the
// nested constants, and dequantization as bitsandbytes computes it — values derived by hand here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/format.h"
#include "formats/nf4_bnb.h"

namespace calq {
namespace {

float f32_at(const std::vector<std::byte>& b, size_t off) {
  float v;
  std::memcpy(&v, b.data() + off, 4);
  return v;
}

TEST(Nf4Bnb, DynamicMapIsBitsandbytesSignedMap) {
  const std::array<float, 256>& m = bnb_dynamic_map();
  for (size_t i = 1; i < 256; ++i) EXPECT_LT(m[i - 1], m[i]) << i;
  EXPECT_EQ(m[127], 0.0f);
  EXPECT_EQ(m[255], 1.0f);
  for (size_t j = 1; j < 128; ++j) EXPECT_EQ(m[127 - j], -m[127 + j]) << j;  // ± copies of 127 values
  // i = 0: linspace(0.1, 1, 2) = {0.1f, 1}, one mean (0.1f + 1) / 2, times fp32(1e-6): the smallest value.
  EXPECT_EQ(m[128], 1e-6f * ((0.1f + 1.0f) / 2.0f));
  // i = 6: 65 points, step 0.9f/64; the last mean is (1 − step + 1) / 2 with 1 − step rounded once.
  const float step = (1.0f - 0.1f) / 64.0f;
  EXPECT_EQ(m[254], (static_cast<float>(1.0 - static_cast<double>(step)) + 1.0f) / 2.0f);
  // Values of bitsandbytes' map as published (dumps of create_dynamic_map()); index 18 is one of the 42
  // that plain two-rounding linspace arithmetic would give one ulp off.
  EXPECT_EQ(m[0], -0.992968738079071f);
  EXPECT_EQ(m[18], -0.7398437261581421f);
  EXPECT_EQ(m[64], -0.09859374910593033f);
  EXPECT_EQ(m[126], -5.500000384017767e-07f);
  EXPECT_EQ(m[178], 0.06484375149011612f);
  EXPECT_EQ(m[200], 0.23359374701976776f);
}

TEST(Nf4Bnb, BlockCodesNibbleOrderAndNestedConstantsByHand) {
  const Format& f = format_by_name("nf4-bnb");
  const auto& lv = bnb_nf4_levels();
  // Two blocks: absmax 1 and 3, so the offset is 2, d = −1 and +1, nested scale 1.
  std::vector<float> x(128, 0.0f);
  x[0] = 1.0f;                    // level 15
  x[1] = -1.0f;                   // level 0
  x[2] = 0.0f;                    // level 7
  x[3] = 0.5f;                    // between 0.4407 and 0.5626 (midpoint 0.5017): level 12
  x[4] = (lv[7] + lv[8]) * 0.5f;  // exactly a midpoint: the lower level, 7
  x[5] = std::nextafter(x[4], 1.0f);  // just above: 8
  x[64] = -3.0f;
  x[65] = 1.5f;  // 1.5 · (1/3) = 0.5: level 12
  std::vector<std::byte> q(f.tensor_bytes(1, 128));
  ASSERT_EQ(q.size(), 2u * 33 + 4 + 1024 + 4);
  f.quantize_reference(x.data(), 1, 128, q);
  EXPECT_EQ(static_cast<int>(q[1]), 0xF0);  // first element in the HIGH nibble
  EXPECT_EQ(static_cast<int>(q[2]), 0x7C);
  EXPECT_EQ(static_cast<int>(q[3]), 0x78);
  for (int i = 4; i < 33; ++i) EXPECT_EQ(static_cast<int>(q[static_cast<size_t>(i)]), 0x77) << i;
  EXPECT_EQ(static_cast<int>(q[34]), 0x0C);  // −3/3 → 0, 0.5 → 12
  // Nested codes: d · (1/1) = −1 → the map's −0.99296874 (index 0); +1 → 1.0 (index 255).
  EXPECT_EQ(static_cast<int>(q[0]), 0);
  EXPECT_EQ(static_cast<int>(q[33]), 255);
  const size_t t = 66;
  EXPECT_EQ(f32_at(q, t), 2.0f);         // offset
  EXPECT_EQ(f32_at(q, t + 4), bnb_dynamic_map()[0]);
  EXPECT_EQ(f32_at(q, t + 4 + 1024), 1.0f);  // nested absmax
  // Dequantization: a' = map[q]·s + m, w = level · a'.
  std::vector<float> y(128);
  f.dequantize_rows(q.data(), 1, 128, 0, 1, y.data());
  const float a0 = -0.992968738079071f * 1.0f + 2.0f, a1 = 1.0f * 1.0f + 2.0f;
  EXPECT_EQ(y[0], a0);
  EXPECT_EQ(y[1], -a0);
  EXPECT_EQ(y[3], lv[12] * a0);
  EXPECT_EQ(y[4], 0.0f);
  EXPECT_EQ(y[5], lv[8] * a0);
  EXPECT_EQ(y[64], -a1);
  EXPECT_EQ(y[65], lv[12] * a1);
}

TEST(Nf4Bnb, NestedCodesAreTheNearestMapValue) {
  const Format& f = format_by_name("nf4-bnb");
  const auto& map = bnb_dynamic_map();
  // 300 blocks (two groups: 256 and 44) of absmaxes spread over three decades.
  const int64_t blocks = 300, cols = 64 * blocks;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> decade(-2.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(cols));
  for (int64_t b = 0; b < blocks; ++b) {
    const float s = std::pow(10.0f, decade(rng));
    for (int64_t i = 0; i < 64; ++i) x[static_cast<size_t>(b * 64 + i)] = normal(rng) * s;
  }
  std::vector<std::byte> q(f.tensor_bytes(1, cols));
  f.quantize_reference(x.data(), 1, cols, q);
  const size_t t = static_cast<size_t>(blocks) * 33;
  const float m = f32_at(q, t);
  double sum = 0;
  std::vector<float> a(static_cast<size_t>(blocks));
  for (size_t b = 0; b < a.size(); ++b) {
    for (size_t i = 0; i < 64; ++i) a[b] = std::max(a[b], std::fabs(x[b * 64 + i]));
    sum += a[b];
  }
  EXPECT_EQ(m, static_cast<float>(sum / blocks));
  for (int64_t g = 0; g < 2; ++g) {
    float s = 0;
    for (int64_t b = g * 256; b < std::min<int64_t>(blocks, g * 256 + 256); ++b) {
      s = std::max(s, std::fabs(a[static_cast<size_t>(b)] - m));
    }
    EXPECT_EQ(f32_at(q, t + 4 + 1024 + 4 * static_cast<size_t>(g)), s);
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const float s = f32_at(q, t + 4 + 1024 + 4 * static_cast<size_t>(b / 256));
    const float u = (a[static_cast<size_t>(b)] - m) * (1.0f / s);
    const float code = map[static_cast<uint8_t>(q[static_cast<size_t>(b) * 33])];
    for (float v : map) EXPECT_LE(std::fabs(u - code), std::fabs(u - v)) << "block " << b;
  }
}

TEST(Nf4Bnb, ZeroBlocksDecodeToZeroAndBitsPerWeight) {
  const Format& f = format_by_name("nf4-bnb");
  std::vector<float> x(256, 0.0f);
  for (int i = 128; i < 192; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i - 150);
  x[192] = 1e-39f;  // a subnormal absmax: codes by 1/1e-38, finite, as bitsandbytes' default backend
  x[193] = -1e-39f;
  std::vector<std::byte> q(f.tensor_bytes(2, 128));
  f.quantize_reference(x.data(), 2, 128, q);
  for (int i = 1; i < 33; ++i) EXPECT_EQ(static_cast<int>(q[static_cast<size_t>(i)]), 0x77);
  EXPECT_EQ(static_cast<int>(q[66 + 33 + 1]), 0x86);  // 1e-39 · 1e38 = 0.1: level 8; −0.1: level 6 (−0.091)
  EXPECT_EQ(static_cast<int>(q[66 + 33 + 2]), 0x77);
  std::vector<float> y(256);
  f.dequantize_rows(q.data(), 2, 128, 0, 2, y.data());
  for (int i = 0; i < 128; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 0.0f) << i;
  EXPECT_EQ(f.trailer_bytes(4096, 4096), 4u + 1024 + 4 * 1024);
  EXPECT_EQ(bnb_nested_groups(3, 64 * 100), 2);
}

}  // namespace
}  // namespace calq
