// Unit tests of the k-quant formats q2_k .. q6_k beyond the contract and ggml-vector tests:
// hand-built super-blocks decode to what llama.cpp's layout (ggml-common.h) says, zero blocks,
// importance weighting, extreme magnitudes, AVX2 decoders == scalar decoders on arbitrary bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "formats/format.h"
#include "formats/gguf_kquants.h"

namespace calq {
namespace {

constexpr int kQK = 256;

void put_half(std::vector<uint8_t>& b, size_t at, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(b.data() + at, &h, 2);
}

std::vector<float> decode(const Format& f, const std::vector<uint8_t>& bytes, bool fast) {
  std::vector<float> y(static_cast<size_t>(bytes.size() / f.traits().block_bytes * kQK));
  const auto* p = reinterpret_cast<const std::byte*>(bytes.data());
  const int64_t cols = static_cast<int64_t>(y.size());
  if (fast) {
    f.dequantize_rows(p, 1, cols, 0, 1, y.data());
  } else {
    f.dequantize_rows_reference(p, 1, cols, 0, 1, y.data());
  }
  return y;
}

// Independent statement of the layouts: quant value of element e, from ggml-common.h's comments
// and dequantize_row_* (element order within the qs/ql/qh arrays).
TEST(GgufKQuants, HandBuiltQ4KDecodesPerLayout) {
  const Format& f = format_by_name("q4_k");
  ASSERT_EQ(f.traits().block_bytes, 144u);
  std::vector<uint8_t> b(144, 0);
  put_half(b, 0, 0.5f);   // d
  put_half(b, 2, 0.25f);  // dmin
  // Sub-block j: scale code 3 + 7j (up to 52, > 15 to exercise the high bits), min code 60 − 5j.
  uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(3 + 7 * j);
    mn[j] = static_cast<uint8_t>(60 - 5 * j);
  }
  // 12-byte packing: bytes 0-3 low 6 bits = sc[0..3], top 2 bits = sc[4..7] >> 4; bytes 4-7
  // likewise for the mins; bytes 8-11 = low nibble sc[4..7] | low nibble mn[4..7] << 4.
  for (int j = 0; j < 4; ++j) {
    b[4 + j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    b[8 + j] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    b[12 + j] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  // qs: 4 chunks of 32 bytes; chunk c holds elements 64c..64c+31 (low nibbles) and 64c+32.. (high).
  auto quant = [](int e) { return (e * 7 + 3) % 16; };
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) b[16 + 32 * c + l] = static_cast<uint8_t>(quant(64 * c + l) | (quant(64 * c + 32 + l) << 4));
  }
  for (bool fast : {false, true}) {
    const auto y = decode(f, b, fast);
    for (int e = 0; e < kQK; ++e) {
      const int j = e / 32;
      const float want = 0.5f * sc[j] * quant(e) - 0.25f * mn[j];  // exact in float
      ASSERT_EQ(y[e], want) << "element " << e << (fast ? " fast" : " scalar");
    }
  }
}

TEST(GgufKQuants, HandBuiltQ6KDecodesPerLayout) {
  const Format& f = format_by_name("q6_k");
  ASSERT_EQ(f.traits().block_bytes, 210u);
  std::vector<uint8_t> b(210, 0);
  auto quant = [](int e) { return (e * 37 + 11) % 64; };  // 0..63, value = quant − 32
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, r = e % 128;
    // ql: 64 bytes per half; byte r%64, low nibble for r < 64, high nibble otherwise.
    b[64 * h + r % 64] |= static_cast<uint8_t>((quant(e) & 15) << (r < 64 ? 0 : 4));
    // qh: 32 bytes per half; byte r%32, bits 2·(r/32).
    b[128 + 32 * h + r % 32] |= static_cast<uint8_t>((quant(e) >> 4) << (2 * (r / 32)));
  }
  const int8_t scales[16] = {-128, 127, -1, 1, 0, 5, -77, 100, 33, -33, 64, -64, 2, -2, 90, -90};
  std::memcpy(b.data() + 192, scales, 16);
  put_half(b, 208, 0.125f);
  for (bool fast : {false, true}) {
    const auto y = decode(f, b, fast);
    for (int e = 0; e < kQK; ++e) {
      const float want = 0.125f * scales[e / 16] * static_cast<float>(quant(e) - 32);
      ASSERT_EQ(y[e], want) << "element " << e << (fast ? " fast" : " scalar");
    }
  }
}

TEST(GgufKQuants, HandBuiltQ2KAndQ3KDecodePerLayout) {
  auto quant2 = [](int e) { return (e * 5 + 1) % 4; };
  auto set2 = [&](std::vector<uint8_t>& b, size_t at) {
    for (int e = 0; e < kQK; ++e) b[at + 32 * (e / 128) + e % 32] |= static_cast<uint8_t>(quant2(e) << (2 * ((e % 128) / 32)));
  };
  {
    const Format& f = format_by_name("q2_k");
    std::vector<uint8_t> b(84, 0);
    for (int j = 0; j < 16; ++j) b[j] = static_cast<uint8_t>((j & 15) | ((15 - j) << 4));  // scale j, min 15 − j
    set2(b, 16);
    put_half(b, 80, 2.0f);
    put_half(b, 82, 0.5f);
    const auto y = decode(f, b, false);
    for (int e = 0; e < kQK; ++e) {
      const int j = e / 16;
      ASSERT_EQ(y[e], 2.0f * j * quant2(e) - 0.5f * (15 - j)) << "q2_k element " << e;
    }
  }
  {
    const Format& f = format_by_name("q3_k");
    std::vector<uint8_t> b(110, 0);
    auto high = [](int e) { return (e / 3) % 2; };
    for (int e = 0; e < kQK; ++e) b[e % 32] |= static_cast<uint8_t>(high(e) << (e / 32));  // hmask
    set2(b, 32);
    // Sixteen 6-bit codes u_j = 4j + 1 (scale u − 32): low nibbles in bytes 96..103 (j < 8 low,
    // j >= 8 high nibble of byte j − 8), top 2 bits in byte 104 + j%4 at bits 2·(j/4).
    for (int j = 0; j < 16; ++j) {
      const int u = 4 * j + 1;
      b[96 + j % 8] |= static_cast<uint8_t>((u & 15) << (j < 8 ? 0 : 4));
      b[104 + j % 4] |= static_cast<uint8_t>((u >> 4) << (2 * (j / 4)));
    }
    put_half(b, 108, 0.75f);
    const auto y = decode(f, b, false);
    for (int e = 0; e < kQK; ++e) {
      const int j = e / 16;
      const float want = 0.75f * static_cast<float>(4 * j + 1 - 32) * static_cast<float>(quant2(e) - (high(e) ? 0 : 4));
      ASSERT_EQ(y[e], want) << "q3_k element " << e;
    }
  }
}

const char* const kNames[] = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k"};

TEST(GgufKQuants, AllZeroBlockEncodesToZeros) {
  ThreadPool pool(1);
  const std::vector<float> x(512, 0.0f);
  for (const char* name : kNames) {
    const Format& f = format_by_name(name);
    std::vector<std::byte> q(f.tensor_bytes(1, 512), std::byte{0x77});
    f.quantize(pool, x.data(), 1, 512, q);
    for (std::byte v : q) {
      // Affine types: scales, mins and quants all 0. q3_k/q6_k store signed codes with an offset
      // (quant 0 is a non-zero bit pattern), so for them only the decode is checked.
      const std::string n(name);
      if (n != "q3_k" && n != "q6_k") {
        ASSERT_EQ(v, std::byte{0}) << name;
      }
    }
    std::vector<float> y(512, 1.0f);
    f.dequantize(pool, q.data(), 1, 512, y.data());
    for (float v : y) ASSERT_EQ(v, 0.0f) << name;
  }
}

double weighted_error(const std::vector<float>& x, const std::vector<float>& y, const std::vector<float>& w,
                      int64_t cols) {
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) e += w[i % cols] * (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  return e;
}

TEST(GgufKQuants, ImportanceLowersTheWeightedError) {
  const int64_t rows = 4, cols = 1024;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::lognormal_distribution<float> ln(0.0f, 1.5f);
  std::vector<float> x(rows * cols), imp(cols);
  for (auto& v : x) v = nd(rng);
  for (auto& v : imp) v = ln(rng);
  ThreadPool pool(2);
  for (const char* name : kNames) {
    const Format& f = format_by_name(name);
    std::vector<std::byte> qp(f.tensor_bytes(rows, cols)), qi(qp.size());
    f.quantize(pool, x.data(), rows, cols, qp);
    f.quantize(pool, x.data(), rows, cols, qi, QuantizeOptions{.importance = imp.data()});
    std::vector<float> yp(x.size()), yi(x.size());
    f.dequantize(pool, qp.data(), rows, cols, yp.data());
    f.dequantize(pool, qi.data(), rows, cols, yi.data());
    const double ep = weighted_error(x, yp, imp, cols), ei = weighted_error(x, yi, imp, cols);
    EXPECT_LT(ei, 0.9 * ep) << name << ": weighted error with importance " << ei << ", without " << ep;
  }
}

TEST(GgufKQuants, ExtremeMagnitudesStayFiniteAndAccurate) {
  const int64_t cols = 512;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  ThreadPool pool(1);
  for (float scale : {1e-6f, 1e-3f, 1.0f, 1e3f, 1e12f}) {
    std::vector<float> x(cols);
    for (auto& v : x) v = nd(rng) * scale;
    x[17] = 6.0f * scale;  // an outlier
    for (const char* name : kNames) {
      const Format& f = format_by_name(name);
      std::vector<std::byte> q(f.tensor_bytes(1, cols));
      f.quantize(pool, x.data(), 1, cols, q);
      std::vector<float> y(cols);
      f.dequantize(pool, q.data(), 1, cols, y.data());
      double err = 0, ref = 0;
      for (int64_t i = 0; i < cols; ++i) {
        ASSERT_TRUE(std::isfinite(y[i])) << name << " scale " << scale;
        err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
        ref += double(x[i]) * x[i];
      }
      // From 1e-3 to 1e3 the fp16 super-scales keep relative accuracy (bound: 2x the N(0,1)
      // contract bound). At 1e-6 they flush to (subnormal) zero — a limit of the format — and the
      // encoder must at least never do worse than storing zeros.
      // At 1e12 the fp16 super-scales saturate at 65504 (values beyond ~6e7 cannot be stored):
      // the decode must stay finite, and no worse than zeros.
      const double bound = scale < 1e-4f || scale > 1e6f ? 1.0 : 2 * f.traits().max_relative_rmse;
      EXPECT_LE(std::sqrt(err / ref), bound) << name << " scale " << scale;
    }
  }
}

TEST(GgufKQuants, FastDecodersEqualScalarOnArbitraryBytes) {
  std::mt19937 rng(11);
  for (const char* name : kNames) {
    const Format& f = format_by_name(name);
    const size_t bb = f.traits().block_bytes;
    std::vector<uint8_t> b(bb * 8);
    for (auto& v : b) v = static_cast<uint8_t>(rng());
    // Keep the fp16 scales finite (NaN payloads aside, any bytes are a valid block).
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (size_t blk = 0; blk < 8; ++blk) {
      const std::string n(name);
      const size_t at = n == "q2_k" ? 80 : n == "q3_k" ? 108 : n == "q6_k" ? 208 : 0;
      put_half(b, blk * bb + at, u(rng));
      if (n == "q2_k" || n == "q4_k" || n == "q5_k") put_half(b, blk * bb + at + 2, u(rng));
    }
    const auto fast = decode(f, b, true), slow = decode(f, b, false);
    EXPECT_EQ(0, std::memcmp(fast.data(), slow.data(), fast.size() * sizeof(float))) << name;
  }
}

// The encoders' inner loops: the AVX2 set must equal the scalar reference bit for bit, including
// degenerate scales (0, subnormal → 1/d = inf, huge) where the clamps meet NaN/inf.
TEST(GgufKQuants, FastKernelsEqualScalarKernels) {
  const auto& ref = kquant::scalar_kernels();
  const auto& fast = kquant::fast_kernels();
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::lognormal_distribution<float> ln(0.0f, 1.0f);
  const float scales[] = {0.0f, 1e-40f, 1e-8f, 0.05f, 0.3f, 2.0f, 1e30f};
  int checked = 0;
  for (int t = 0; t < 2000; ++t) {
    const int n = t % 2 == 0 ? 16 : 32;
    float x[32], w[32];
    for (int i = 0; i < n; ++i) {
      x[i] = nd(rng) * (t % 7 == 0 ? 1e-3f : 1.0f);
      w[i] = t % 3 == 0 ? 1.0f : ln(rng);
    }
    if (t % 11 == 0) x[3] = 0.0f;
    const float d = scales[t % 7] * (t % 5 == 0 ? -1.0f : 1.0f);
    const float m = std::fabs(nd(rng)), is = t % 13 == 0 ? std::numeric_limits<float>::infinity() : std::fabs(nd(rng)) * 8.0f;
    float a[3], b[3];
    ref.affine_assign(x, w, n, -m, is, 15.0f, a);
    fast.affine_assign(x, w, n, -m, is, 15.0f, b);
    ASSERT_EQ(0, std::memcmp(a, b, sizeof a)) << "affine_assign, trial " << t;
    ref.sym_assign(x, w, n, is, -32.0f, 31.0f, a);
    fast.sym_assign(x, w, n, is, -32.0f, 31.0f, b);
    ASSERT_EQ(0, std::memcmp(a, b, 2 * sizeof(float))) << "sym_assign, trial " << t;
    uint8_t q1[32], q2[32];
    const float e1 = ref.affine_exact(x, w, n, std::fabs(d), m, 31.0f, q1);
    const float e2 = fast.affine_exact(x, w, n, std::fabs(d), m, 31.0f, q2);
    ASSERT_EQ(0, std::memcmp(&e1, &e2, 4)) << "affine_exact, trial " << t;
    ASSERT_EQ(0, std::memcmp(q1, q2, static_cast<size_t>(n))) << "affine_exact quants, trial " << t;
    int8_t l1[32], l2[32];
    const float f1 = ref.sym_exact(x, w, n, d, -4.0f, 3.0f, l1);
    const float f2 = fast.sym_exact(x, w, n, d, -4.0f, 3.0f, l2);
    ASSERT_EQ(0, std::memcmp(&f1, &f2, 4)) << "sym_exact, trial " << t;
    ASSERT_EQ(0, std::memcmp(l1, l2, static_cast<size_t>(n))) << "sym_exact quants, trial " << t;
    ++checked;
  }
  EXPECT_EQ(checked, 2000);
}

}  // namespace
}  // namespace calq
