// MXFP4 and NVFP4 (mx.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "formats/format.h"
#include "formats/fp8.h"

namespace calq {
namespace {

std::vector<float> normal(size_t n, uint32_t seed, float outlier_share = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::uniform_real_distribution<float> u;
  std::vector<float> x(n);
  for (auto& v : x) {
    v = d(rng);
    if (u(rng) < outlier_share) v *= 12.0f;
  }
  return x;
}

// ggml's MXFP4 decoding as documented: kvalues (2·E2M1) times 2^(e − 128); element j in the low
// nibble of qs[j], element j + 16 in the high nibble.
constexpr int kKvalues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

TEST(Mxfp4, LayoutAndValuesAreGgmls) {
  const Format& f = format_by_name("mxfp4");
  EXPECT_EQ(f.traits().ggml_type, 39u);
  const auto x = normal(4 * 32, 5);
  std::vector<std::byte> q(f.tensor_bytes(1, 128));
  ASSERT_EQ(q.size(), 4u * 17);
  f.quantize_reference(x.data(), 1, 128, q);
  std::vector<float> y(128);
  f.dequantize_rows(q.data(), 1, 128, 0, 1, y.data());
  for (int b = 0; b < 4; ++b) {
    const std::byte* blk = q.data() + 17 * b;
    const int e = static_cast<int>(blk[0]);
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[static_cast<size_t>(32 * b + i)]));
    const int spec = static_cast<int>(std::floor(std::log2(amax))) - 2;
    EXPECT_TRUE(e - 127 == spec || e - 127 == spec + 1) << "block " << b << " e " << e;
    for (int j = 0; j < 32; ++j) {
      const int nib = (static_cast<int>(blk[1 + j % 16]) >> (j < 16 ? 0 : 4)) & 15;
      const double want = kKvalues[nib] * std::ldexp(1.0, e - 128);
      EXPECT_EQ(static_cast<double>(y[static_cast<size_t>(32 * b + j)]), want) << b << " " << j;
    }
  }
  // Extreme exponents decode like ggml (subnormal floats for e < 2).
  std::vector<std::byte> blk(17, std::byte{0});
  blk[1] = std::byte{0x7f};            // element 0: code 15 (−12 doubled), element 16: code 7 (12 doubled)
  for (int e : {0, 1, 2, 200, 250}) {  // 12·2^(250−128) is still finite
    blk[0] = static_cast<std::byte>(e);
    std::vector<float> v(32);
    f.dequantize_rows(blk.data(), 1, 32, 0, 1, v.data());
    EXPECT_EQ(static_cast<double>(v[0]), -12 * std::ldexp(1.0, e - 128)) << e;
    EXPECT_EQ(static_cast<double>(v[16]), 12 * std::ldexp(1.0, e - 128)) << e;
  }
}

// The second exponent candidate only ever lowers the error against the spec's rule alone.
TEST(Mxfp4, ExponentChoiceIsNoWorseThanTheSpecRule) {
  const Format& f = format_by_name("mxfp4");
  const auto x = normal(64 * 32, 8);
  std::vector<std::byte> q(f.tensor_bytes(1, 64 * 32));
  f.quantize_reference(x.data(), 1, 64 * 32, q);
  std::vector<float> y(x.size());
  f.dequantize_rows(q.data(), 1, 64 * 32, 0, 1, y.data());
  int bumped = 0;
  for (int b = 0; b < 64; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[static_cast<size_t>(32 * b + i)]));
    const int spec = static_cast<int>(std::floor(std::log2(amax))) - 2;
    double err_spec = 0, err_ours = 0;
    for (int i = 0; i < 32; ++i) {
      const float v = x[static_cast<size_t>(32 * b + i)];
      const float d = e2m1_to_f32(f32_to_e2m1(std::ldexp(v, -spec)));
      err_spec += std::pow(v - std::ldexp(d, spec), 2);
      err_ours += std::pow(v - y[static_cast<size_t>(32 * b + i)], 2);
    }
    EXPECT_LE(err_ours, err_spec) << b;
    bumped += static_cast<int>(q[static_cast<size_t>(17 * b)]) - 127 != spec ? 1 : 0;
  }
  std::printf("mxfp4: %d of 64 N(0,1) blocks chose shared_exp + 1\n", bumped);
}

TEST(Nvfp4, TensorScaleUsesE4m3RangeAndBlocksDecode) {
  const Format& f = format_by_name("nvfp4");
  auto x = normal(2 * 64, 6);
  x[37] = 20.0f;
  std::vector<std::byte> q(f.tensor_bytes(2, 64));
  ASSERT_EQ(q.size(), 2u * 4 * 9 + 4);
  f.quantize_reference(x.data(), 2, 64, q);
  float ts;
  std::memcpy(&ts, q.data() + 72, 4);
  EXPECT_EQ(ts, 20.0f / (448.0f * 6.0f));
  std::vector<float> y(x.size());
  f.dequantize_rows(q.data(), 2, 64, 0, 2, y.data());
  for (int b = 0; b < 8; ++b) {
    const std::byte* blk = q.data() + 9 * b;
    const float unit = e4m3_to_f32(static_cast<uint8_t>(blk[0])) * ts;
    for (int j = 0; j < 16; ++j) {
      const int nib = (static_cast<int>(blk[1 + j % 8]) >> (j < 8 ? 0 : 4)) & 15;
      EXPECT_EQ(y[static_cast<size_t>(16 * b + j)], e2m1_to_f32(static_cast<uint8_t>(nib)) * unit);
    }
  }
  EXPECT_EQ(static_cast<int>(q[9 * 2]), 0x7e) << "the tensor's amax block scale is E4M3's max";
}

double rel_rmse(const Format& f, const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<std::byte> q(f.tensor_bytes(rows, cols));
  ThreadPool pool(2);
  f.quantize(pool, x.data(), rows, cols, q);
  std::vector<float> y(x.size());
  f.dequantize(pool, q.data(), rows, cols, y.data());
  double e = 0, r = 0;
  for (size_t i = 0; i < x.size(); ++i) e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]), r += double(x[i]) * x[i];
  return std::sqrt(e / r);
}

// Round-trip bounds on N(0, 1) and on data with 1% outliers (×12). The bounds are the measured
// figures (printed) with about 10% headroom.
TEST(Mx, RoundTripErrorBounds) {
  const auto plain = normal(16 * 4096, 21);
  const auto outliers = normal(16 * 4096, 22, 0.01f);
  struct Case {
    const char* name;
    double plain_bound, outlier_bound;
  } cases[] = {{"mxfp4", 0.1223, 0.1747}, {"nvfp4", 0.1007, 0.1018}};
  for (const auto& c : cases) {
    const Format& f = format_by_name(c.name);
    const double p = rel_rmse(f, plain, 16, 4096), o = rel_rmse(f, outliers, 16, 4096);
    std::printf("%s: relative RMSE %.4f on N(0,1), %.4f with 1%% outliers x12\n", c.name, p, o);
    EXPECT_LE(p, c.plain_bound) << c.name;
    EXPECT_LE(o, c.outlier_bound) << c.name;
  }
}

}  // namespace
}  // namespace calq
