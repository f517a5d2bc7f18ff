// Tests of the GGUF legacy (q4_0, q4_1, q5_0, q5_1, q8_0) and IQ4 (iq4_nl, iq4_xs) formats and of
// the search helpers in quant_search.h. Layout facts are re-derived here from the llama.cpp ABI
// (block bytes built by hand), not taken from the code under test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "formats/format.h"
#include "formats/quant_search.h"
#include "formats/quant_search_kernels.h"
#include "support/random_data.h"

namespace calq {
namespace {

const char* const kAll[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl", "iq4_xs"};
constexpr int8_t kGrid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

const Format& fmt(const char* name) {
  const Format* f = find_format(name);
  EXPECT_NE(f, nullptr) << name;
  return *f;
}

std::vector<float> decode(const Format& f, const std::vector<std::byte>& bytes, int64_t rows, int64_t cols) {
  std::vector<float> fast(static_cast<size_t>(rows * cols)), ref(fast.size());
  f.dequantize_rows(bytes.data(), rows, cols, 0, rows, fast.data());
  f.dequantize_rows_reference(bytes.data(), rows, cols, 0, rows, ref.data());
  EXPECT_EQ(0, std::memcmp(fast.data(), ref.data(), fast.size() * sizeof(float))) << f.name();
  return ref;
}

std::vector<std::byte> encode(const Format& f, const std::vector<float>& x, int64_t rows, int64_t cols,
                              const float* importance = nullptr) {
  ThreadPool pool(2);
  std::vector<std::byte> out(f.tensor_bytes(rows, cols));
  f.quantize(pool, x.data(), rows, cols, out, QuantizeOptions{.tensor_name = "t", .importance = importance});
  return out;
}

using ::calq::testing::gaussian;

double weighted_error(const std::vector<float>& x, const std::vector<float>& y, const float* w, int64_t cols) {
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - y[i];
    e += (w == nullptr ? 1.0 : w[i % static_cast<size_t>(cols)]) * d * d;
  }
  return e;
}

void put16(std::vector<std::byte>& b, size_t at, uint16_t v) { std::memcpy(b.data() + at, &v, 2); }

// ---- quant_search helpers ----

TEST(QuantSearch, Fp16RoundingClampsToFiniteAndRoundsToNearest) {
  EXPECT_EQ(quant::round_to_f16(1e6f), 65504.0f);
  EXPECT_EQ(quant::round_to_f16(-1e9f), -65504.0f);
  EXPECT_EQ(quant::round_to_f16(1.0f + 3e-4f), 1.0f);           // fp16 ulp at 1 is 2^-10
  EXPECT_EQ(quant::round_to_f16(1.0f + 7e-4f), 1.0f + 0x1p-10f);
  EXPECT_EQ(quant::to_f16_bits(0.5f), 0x3800);
}

TEST(QuantSearch, NearestLevelIsTheClosest) {
  const quant::TableLevels16 table{std::span<const int8_t, 16>(kGrid)};
  const quant::UniformLevels uniform{.lo = -8, .hi = 7};
  for (float v = -160.0f; v <= 160.0f; v += 0.37f) {
    int best = 0;
    for (int k = 1; k < 16; ++k) {
      if (std::fabs(v - kGrid[k]) < std::fabs(v - kGrid[best])) best = k;
    }
    ASSERT_EQ(table.nearest(v), best) << v;
    const float u = v / 16.0f;
    const float want = std::clamp(std::round(u), -8.0f, 7.0f);
    if (std::fabs(std::fabs(u - std::trunc(u)) - 0.5f) > 1e-4f) {  // not a tie
      ASSERT_EQ(uniform.value(uniform.nearest(u)), want) << u;
    }
  }
}

TEST(QuantSearch, SymmetricFitIsNoWorseThanMaxScaleRounding) {
  const quant::UniformLevels levels{.lo = -8, .hi = 7};
  std::mt19937 rng(7);
  std::lognormal_distribution<float> wdist(0.0f, 1.5f);
  for (int trial = 0; trial < 200; ++trial) {
    const auto x = gaussian(32, 100 + trial);
    float w[32];
    for (float& v : w) v = trial % 2 ? wdist(rng) : 1.0f;
    uint8_t q[32];
    const auto fit = quant::fit_symmetric(x.data(), w, 32, levels, quant::ScaleSearch{}, q);
    // The reported error is the error of the reported scale and codes.
    double e = 0, rtn = 0;
    float amax = 0;
    for (float v : x) amax = std::fabs(v) > std::fabs(amax) ? v : amax;
    const float d = quant::round_to_f16(amax / -8.0f);
    for (int j = 0; j < 32; ++j) {
      const double y = static_cast<double>(levels.value(q[j]) * fit.scale);
      e += w[j] * (x[j] - y) * (x[j] - y);
      const float r = std::clamp(std::round(x[j] / d), -8.0f, 7.0f) * d;
      rtn += w[j] * (x[j] - r) * (x[j] - r);
    }
    // The search sums 32 terms in float (fixed order, quant_search_kernels.h): ~1e-6 relative.
    EXPECT_NEAR(e, fit.error, 1e-5 * e);
    EXPECT_EQ(fit.scale, quant::round_to_f16(fit.scale)) << "the scale must be an fp16 value";
    EXPECT_LE(e, rtn * (1 + 1e-5)) << trial;
  }
}

TEST(QuantSearch, Avx2KernelsEqualScalarBitForBit) {
  const quant::TableLevels16 table{std::span<const int8_t, 16>(kGrid)};
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> scale_dist(-3.0f, 3.0f);
  std::lognormal_distribution<float> wdist(0.0f, 1.0f);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + trial % 45;  // full 8-lane groups and scalar tails
    auto x = gaussian(static_cast<size_t>(n), 500 + trial);
    if (trial % 7 == 0) x[0] = -0.0f;
    std::vector<float> w(static_cast<size_t>(n));
    for (auto& v : w) v = wdist(rng);
    const float s = std::ldexp(scale_dist(rng), -3 - trial % 4);
    if (s == 0) continue;
    const float inv = 1.0f / s;
    std::vector<uint8_t> q0(static_cast<size_t>(n)), q1(static_cast<size_t>(n));
    auto same = [](float a, float b) { return std::memcmp(&a, &b, 4) == 0; };
    const auto u0 = quant::detail::assign_uniform(x.data(), w.data(), n, -16, 15, s, inv, q0.data(), false);
    const auto u1 = quant::detail::assign_uniform(x.data(), w.data(), n, -16, 15, s, inv, q1.data(), true);
    EXPECT_TRUE(same(u0.err, u1.err) && same(u0.sxl, u1.sxl) && same(u0.sll, u1.sll)) << trial;
    EXPECT_EQ(q0, q1) << trial;
    const auto t0 = quant::detail::assign_table(x.data(), w.data(), n, table, s * 0.1f, 1.0f / (s * 0.1f), q0.data(),
                                                false);
    const auto t1 = quant::detail::assign_table(x.data(), w.data(), n, table, s * 0.1f, 1.0f / (s * 0.1f), q1.data(),
                                                true);
    EXPECT_TRUE(same(t0.err, t1.err) && same(t0.sxl, t1.sxl) && same(t0.sll, t1.sll)) << trial;
    EXPECT_EQ(q0, q1) << trial;
    for (const bool fused : {false, true}) {
      const float as = std::fabs(s), m = -0.5f * static_cast<float>(trial % 3);
      const auto a0 = quant::detail::assign_affine(x.data(), w.data(), n, 31, fused, as, m, 1 / as, q0.data(), false);
      const auto a1 = quant::detail::assign_affine(x.data(), w.data(), n, 31, fused, as, m, 1 / as, q1.data(), true);
      EXPECT_TRUE(same(a0.err, a1.err) && same(a0.wq, a1.wq) && same(a0.wqq, a1.wqq) && same(a0.wxq, a1.wxq))
          << trial;
      EXPECT_EQ(q0, q1) << trial;
    }
  }
}

TEST(GgufLegacy, SimdDecodersEqualScalarOnArbitraryBytes) {
  // Every byte pattern is a valid q8_0/q4_0 block (any fp16 scale, int8 −128 included).
  std::mt19937 rng(21);
  for (const char* name : {"q8_0", "q4_0"}) {
    const Format& f = fmt(name);
    std::vector<std::byte> b(f.row_bytes(4096) * 3);
    for (auto& v : b) v = std::byte(static_cast<uint8_t>(rng()));
    const size_t bb = f.traits().block_bytes;
    for (size_t at = 0; at < b.size(); at += bb) {  // keep the scales finite: NaN payloads would not compare
      if ((static_cast<uint8_t>(b[at + 1]) & 0x7c) == 0x7c) b[at + 1] &= std::byte{0x7b};
    }
    decode(f, b, 3, 4096);  // compares fast and reference bit for bit
  }
}

// ---- hand-built blocks decode to what the layout says ----

constexpr uint16_t kHalf = 0x3800;     // 0.5
constexpr uint16_t kMinus125 = 0xbd00;  // −1.25

TEST(GgufLegacy, HandBuiltBlocksDecodeAsTheLayoutSays) {
  for (const char* name : {"q4_0", "q4_1", "q5_0", "q5_1"}) {
    SCOPED_TRACE(name);
    const Format& f = fmt(name);
    const bool five = name[1] == '5', affine = name[3] == '1';
    const int levels = five ? 32 : 16;
    std::vector<std::byte> b(f.traits().block_bytes, std::byte{0});
    int code[32];
    for (int j = 0; j < 32; ++j) code[j] = (j * 7 + 3) % levels;
    put16(b, 0, kHalf);
    size_t off = 2;
    if (affine) {
      put16(b, 2, kMinus125);
      off = 4;
    }
    if (five) {
      uint32_t qh = 0;
      for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>(code[j] >> 4) << j;
      std::memcpy(b.data() + off, &qh, 4);
      off += 4;
    }
    for (int j = 0; j < 16; ++j) b[off + j] = std::byte(static_cast<uint8_t>((code[j] & 15) | ((code[j + 16] & 15) << 4)));
    ASSERT_EQ(off + 16, b.size());
    const auto y = decode(f, b, 1, 32);
    for (int j = 0; j < 32; ++j) {
      const double want = affine ? code[j] * 0.5 - 1.25 : (code[j] - levels / 2) * 0.5;
      EXPECT_EQ(y[j], want) << "element " << j;
    }
  }
  {
    const Format& f = fmt("q8_0");
    std::vector<std::byte> b(34);
    put16(b, 0, kHalf);
    for (int j = 0; j < 32; ++j) b[2 + j] = std::byte(static_cast<uint8_t>(static_cast<int8_t>(j * 8 - 128)));
    const auto y = decode(f, b, 1, 32);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j * 8 - 128) * 0.5) << "q8_0 element " << j;
  }
  {
    const Format& f = fmt("iq4_nl");
    std::vector<std::byte> b(18);
    put16(b, 0, kMinus125);
    for (int j = 0; j < 16; ++j) b[2 + j] = std::byte(static_cast<uint8_t>(j | ((15 - j) << 4)));
    const auto y = decode(f, b, 1, 32);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], -1.25 * kGrid[j]) << "iq4_nl element " << j;
      EXPECT_EQ(y[j + 16], -1.25 * kGrid[15 - j]) << "iq4_nl element " << j + 16;
    }
  }
  {
    const Format& f = fmt("iq4_xs");
    std::vector<std::byte> b(136, std::byte{0});
    put16(b, 0, kHalf);
    int ls[8];
    uint16_t scales_h = 0;
    for (int ib = 0; ib < 8; ++ib) {
      ls[ib] = (5 + 19 * ib) % 64;  // 5, 24, 43, 62, 17, 36, 55, 10: both sides of 32
      b[4 + ib / 2] |= std::byte(static_cast<uint8_t>((ls[ib] & 15) << (4 * (ib % 2))));
      scales_h |= static_cast<uint16_t>((ls[ib] >> 4) << (2 * ib));
    }
    put16(b, 2, scales_h);
    for (int i = 0; i < 128; ++i) b[8 + i] = std::byte(static_cast<uint8_t>((i * 5) & 0xff));
    const auto y = decode(f, b, 1, 256);
    for (int ib = 0; ib < 8; ++ib) {
      for (int j = 0; j < 16; ++j) {
        const uint8_t byte = static_cast<uint8_t>(((16 * ib + j) * 5) & 0xff);
        EXPECT_EQ(y[32 * ib + j], 0.5 * (ls[ib] - 32) * kGrid[byte & 15]) << "iq4_xs " << ib << "," << j;
        EXPECT_EQ(y[32 * ib + j + 16], 0.5 * (ls[ib] - 32) * kGrid[byte >> 4]) << "iq4_xs " << ib << "," << j;
      }
    }
  }
}

// ---- encoder properties ----

TEST(GgufLegacy, ZeroBlocksEncodeToExactZeros) {
  for (const char* name : kAll) {
    const Format& f = fmt(name);
    const std::vector<float> x(2 * 512, 0.0f);
    const std::vector<float> imp(512, 3.0f);
    for (const float* w : {static_cast<const float*>(nullptr), imp.data()}) {
      const auto y = decode(f, encode(f, x, 2, 512, w), 2, 512);
      for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], 0.0f) << name << " element " << i;
    }
  }
}

TEST(GgufLegacy, ImportanceLowersTheWeightedError) {
  const int64_t rows = 4, cols = 2048;
  const auto x = gaussian(static_cast<size_t>(rows * cols), 31);
  std::mt19937 rng(5);
  std::lognormal_distribution<float> wdist(0.0f, 2.0f);  // weights spanning orders of magnitude
  std::vector<float> imp(static_cast<size_t>(cols));
  for (auto& v : imp) v = wdist(rng);
  for (const char* name : kAll) {
    const Format& f = fmt(name);
    const double plain = weighted_error(x, decode(f, encode(f, x, rows, cols), rows, cols), imp.data(), cols);
    const double aware =
        weighted_error(x, decode(f, encode(f, x, rows, cols, imp.data()), rows, cols), imp.data(), cols);
    EXPECT_LT(aware, plain) << name;
    std::printf("%-7s weighted error with importance / without: %.4f\n", name, aware / plain);
  }
}

TEST(GgufLegacy, PlainEncodingBeatsMaxScaleRoundToNearest) {
  // The classic encoder (scale = the signed max / the most negative level, round to nearest) is
  // one of the search's candidates; the search must do at least as well, and in practice better.
  const auto x = gaussian(64 * 32, 77);
  for (const auto& [name, lo, hi] : {std::tuple{"q4_0", -8, 7}, {"q5_0", -16, 15}, {"q8_0", -127, 127}}) {
    const Format& f = fmt(name);
    const auto y = decode(f, encode(f, x, 1, 64 * 32), 1, 64 * 32);
    double rtn = 0;
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::fabs(x[b * 32 + j]) > std::fabs(amax) ? x[b * 32 + j] : amax;
      const float d = f16_to_f32(f32_to_f16(amax / static_cast<float>(lo == -127 ? 127 : lo)));
      for (int j = 0; j < 32; ++j) {
        const float v = x[b * 32 + j];
        const float r = std::clamp(std::round(v / d), static_cast<float>(lo), static_cast<float>(hi)) * d;
        rtn += (v - r) * static_cast<double>(v - r);
      }
    }
    const double ours = weighted_error(x, y, nullptr, 1);
    EXPECT_LT(ours, rtn) << name;
    std::printf("%-7s squared error vs max-scale rounding: %.4f\n", name, ours / rtn);
  }
}

TEST(GgufLegacy, ExtremeMagnitudesStayFinite) {
  const int64_t cols = 512;
  auto big = gaussian(static_cast<size_t>(cols), 3, 1.5e4f);  // |x| up to ~6e4
  big[7] = 6e4f;
  big[300] = -6e4f;
  std::vector<float> small(big.size());  // the same row scaled by 2^-12
  for (size_t c = 0; c < big.size(); ++c) small[c] = std::ldexp(big[c], -12);
  auto tiny = gaussian(static_cast<size_t>(cols), 4, 1e-8f);
  std::vector<float> huge(static_cast<size_t>(cols), 0.0f);  // beyond what an fp16 scale can reach
  for (int64_t c = 0; c < cols; ++c) huge[static_cast<size_t>(c)] = (c % 2 ? 1.0f : -1.0f) * 3e7f;
  std::vector<float> x = big;
  for (const auto* row : {&small, &tiny, &huge}) x.insert(x.end(), row->begin(), row->end());
  for (const char* name : kAll) {
    const Format& f = fmt(name);
    const auto y = decode(f, encode(f, x, 4, cols), 4, cols);
    for (int64_t c = 0; c < cols; ++c) {
      for (int r = 0; r < 4; ++r) ASSERT_TRUE(std::isfinite(y[static_cast<size_t>(r * cols + c)])) << name;
      // While the scales stay normal fp16 numbers, a power-of-two scaling of the input scales
      // the search exactly: values near the fp16 limit are encoded as well as moderate ones.
      ASSERT_EQ(y[static_cast<size_t>(c)], std::ldexp(y[static_cast<size_t>(cols + c)], 12)) << name << " " << c;
      ASSERT_LE(std::fabs(y[static_cast<size_t>(2 * cols + c)]), 1e-7f) << name << " tiny column " << c;
    }
  }
}

TEST(GgufLegacy, RelativeErrorOnGaussianRows) {
  // The figures behind each format's max_relative_rmse (the contract test's data: N(0, 1), 4096
  // columns, rows at scales 2^-2..2^2).
  const int64_t rows = 8, cols = 4096;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      x[static_cast<size_t>(r * cols + c)] = normal(rng) * std::pow(2.0f, static_cast<float>(r % 5) - 2.0f);
    }
  }
  for (const char* name : kAll) {
    const Format& f = fmt(name);
    const auto y = decode(f, encode(f, x, rows, cols), rows, cols);
    double ref = 0;
    for (float v : x) ref += static_cast<double>(v) * v;
    const double rel = std::sqrt(weighted_error(x, y, nullptr, cols) / ref);
    std::printf("%-7s relative RMSE %.5f (bound %.5f)\n", name, rel, f.traits().max_relative_rmse);
    EXPECT_LE(rel, f.traits().max_relative_rmse) << name;
  }
}

TEST(GgufLegacy, AffineProductIsExactSoFusedAndSplitDecodingAgree) {
  // q4_1/q5_1 decode q·d + m. q < 32 has 5 significant bits and an fp16 d 11, so q·d is exact in
  // float: ggml's build contracting it into an fma or not cannot change the result.
  for (uint32_t h = 0; h < 0x7c00; h += 7) {
    const float d = f16_to_f32(static_cast<uint16_t>(h));
    for (int q = 0; q < 32; ++q) {
      ASSERT_EQ(static_cast<double>(static_cast<float>(q) * d), static_cast<double>(q) * static_cast<double>(d))
          << "d bits " << h << ", q " << q;
    }
  }
}

}  // namespace
}  // namespace calq
