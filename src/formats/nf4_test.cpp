// NF4 / FP4 with and without double quantization (nf4.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/format.h"
#include "formats/fp8.h"

namespace calq {
namespace {

std::vector<float> normal(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

// The QLoRA paper's NF4 levels (published table), for an independent decode.
constexpr double kNf4[16] = {-1.0,
                             -0.6961928009986877,
                             -0.5250730514526367,
                             -0.39491748809814453,
                             -0.28444138169288635,
                             -0.18477343022823334,
                             -0.09105003625154495,
                             0.0,
                             0.07958029955625534,
                             0.16093020141124725,
                             0.24611230194568634,
                             0.33791524171829224,
                             0.44070982933044434,
                             0.5626170039176941,
                             0.7229568362236023,
                             1.0};

TEST(Nf4, PlainLayoutDecodesByHandAndPicksTheNearestLevel) {
  const Format& f = format_by_name("nf4");
  const auto x = normal(128, 1);
  std::vector<std::byte> q(f.tensor_bytes(1, 128));
  ASSERT_EQ(q.size(), 2u * 36);
  f.quantize_reference(x.data(), 1, 128, q);
  std::vector<float> y(128);
  f.dequantize_rows(q.data(), 1, 128, 0, 1, y.data());
  for (int b = 0; b < 2; ++b) {
    float absmax;
    std::memcpy(&absmax, q.data() + 36 * b, 4);
    float want_absmax = 0;
    for (int i = 0; i < 64; ++i) want_absmax = std::max(want_absmax, std::fabs(x[static_cast<size_t>(64 * b + i)]));
    EXPECT_EQ(absmax, want_absmax);
    for (int i = 0; i < 64; ++i) {
      const int code = (static_cast<int>(q[static_cast<size_t>(36 * b + 4 + i / 2)]) >> (4 * (i % 2))) & 15;
      const size_t k = static_cast<size_t>(64 * b + i);
      EXPECT_EQ(y[k], static_cast<float>(kNf4[code]) * absmax);
      const double v = x[k] / absmax;
      for (double level : kNf4) EXPECT_LE(std::fabs(v - kNf4[code]), std::fabs(v - level) + 1e-6) << k;
    }
  }
}

TEST(Nf4, Fp4UsesE2m1LevelsOverAbsmaxOverSix) {
  const Format& f = format_by_name("fp4");
  std::vector<float> x(64, 0.0f);
  x[0] = 6.0f, x[1] = -3.0f, x[2] = 0.5f, x[3] = 1.2f, x[4] = -0.2f;
  std::vector<std::byte> q(f.tensor_bytes(1, 64));
  f.quantize_reference(x.data(), 1, 64, q);
  std::vector<float> y(64);
  f.dequantize_rows(q.data(), 1, 64, 0, 1, y.data());
  EXPECT_EQ(y[0], 6.0f);
  EXPECT_EQ(y[1], -3.0f);
  EXPECT_EQ(y[2], 0.5f);
  EXPECT_EQ(y[3], 1.0f);
  EXPECT_EQ(y[4], 0.0f);
  EXPECT_EQ(static_cast<int>(q[4]), 0x7 | (0xd << 4));  // 6 = code 7, −3 = sign (8) | code 5
}

// Blocks whose absmax spans nine decades share groups of 256 constants: the stored (dequantized)
// absmax must never fall below a block's true absmax, never go negative, and decoded weights must
// stay within absmax + (group spread)/127 — no blow-up for the small blocks.
TEST(Nf4, DoubleQuantizedAbsmaxNeverBlowsUp) {
  for (const char* name : {"nf4-dq", "fp4-dq"}) {
    const Format& f = format_by_name(name);
    const int64_t rows = 6, cols = 64 * 100;  // 600 constants: groups of 256, 256, 88 spanning rows
    auto x = normal(static_cast<size_t>(rows * cols), 2);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> decade(-6.0f, 3.0f);
    std::vector<float> block_absmax(static_cast<size_t>(rows * cols / 64));
    for (size_t b = 0; b < block_absmax.size(); ++b) {
      const float s = b % 17 == 0 ? 0.0f : std::pow(10.0f, decade(rng));
      float a = 0;
      for (size_t i = 0; i < 64; ++i) {
        x[b * 64 + i] *= s;
        a = std::max(a, std::fabs(x[b * 64 + i]));
      }
      block_absmax[b] = a;
    }
    std::vector<std::byte> q(f.tensor_bytes(rows, cols));
    EXPECT_EQ(f.trailer_bytes(rows, cols), 4u + 4u * 3);
    f.quantize_reference(x.data(), rows, cols, q);
    std::vector<float> y(x.size());
    f.dequantize_rows(q.data(), rows, cols, 0, rows, y.data());
    const std::byte* trailer = q.data() + rows * f.row_bytes(cols);
    float mean;
    std::memcpy(&mean, trailer, 4);
    for (size_t b = 0; b < block_absmax.size(); ++b) {
      float s;
      std::memcpy(&s, trailer + 4 + 4 * (b / 256), 4);
      const auto k = static_cast<int8_t>(q[(b / 100) * f.row_bytes(cols) + (b % 100) * 33]);
      const float stored = std::max(0.0f, mean + s * static_cast<float>(k) / 127.0f);
      EXPECT_GE(stored, block_absmax[b]) << name << " block " << b;
      EXPECT_LE(stored, block_absmax[b] + s / 127.0f * 1.0001f + 1e-30f) << name << " block " << b;
      for (size_t i = 0; i < 64; ++i) {
        const float v = y[b * 64 + i];
        ASSERT_TRUE(std::isfinite(v));
        // fp4 decodes 6·(stored/6), which may round one ulp above `stored`.
        ASSERT_LE(std::fabs(v), stored * (1.0f + 1e-6f)) << name << " block " << b;
        if (x[b * 64 + i] == 0.0f) {
          ASSERT_EQ(v, 0.0f);
        }
      }
    }
  }
}

TEST(Nf4, BitsPerWeight) {
  const Format& dq = format_by_name("nf4-dq");
  const double bpw = static_cast<double>(dq.tensor_bytes(4096, 4096)) * 8 / (4096.0 * 4096.0);
  EXPECT_NEAR(bpw, 4.0 + 8.0 / 64 + 32.0 / (64 * 256), 1e-3);
  EXPECT_EQ(format_by_name("nf4").tensor_bytes(4096, 4096), 4096u * 4096 / 64 * 36);
}

}  // namespace
}  // namespace calq
