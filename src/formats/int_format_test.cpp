// Integer formats (int_format.cpp), bit packing (int_pack.h) and range choosers (range.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/format.h"
#include "formats/int_pack.h"
#include "formats/range.h"

namespace calq {
namespace {

std::vector<float> normal(size_t n, uint32_t seed, float outlier_share = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) {
    v = d(rng);
    if (u(rng) < outlier_share) v *= 10.0f;
  }
  return x;
}

TEST(IntPack, LsbFirstBitStream) {
  std::mt19937 rng(1);
  for (int bits : {1, 2, 3, 4, 5, 6, 7, 8}) {
    std::vector<uint8_t> codes(64);
    for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
    std::vector<std::byte> packed(64 * bits / 8);
    pack_codes(codes.data(), 64, bits, packed.data());
    // Independent: bit k of the stream is bit k % 8 of byte k / 8; code i's bit t is stream bit i·bits + t.
    for (int i = 0; i < 64; ++i) {
      for (int t = 0; t < bits; ++t) {
        const int k = i * bits + t;
        const int stream_bit = (static_cast<int>(packed[static_cast<size_t>(k / 8)]) >> (k % 8)) & 1;
        ASSERT_EQ(stream_bit, (codes[static_cast<size_t>(i)] >> t) & 1) << "bits " << bits << " code " << i;
      }
    }
    std::vector<uint8_t> back(64);
    unpack_codes(packed.data(), 64, bits, back.data());
    EXPECT_EQ(back, codes) << bits;
  }
}

TEST(IntFormats, EveryCombinationIsRegistered) {
  int count = 0;
  for (const Format* f : all_formats()) count += f->traits().family == "int" ? 1 : 0;
  EXPECT_EQ(count, 6 * 6 * 2 * 2);
  for (const char* name : {"int4-g128-asym", "int8-pc-sym", "int4-g128-asym-f32", "int8-pt-sym", "int2-g32-sym",
                           "int3-g256-asym", "int5-pc-asym-f32", "int6-g64-sym"}) {
    EXPECT_NE(find_format(name), nullptr) << name;
  }
  // bpw: g128 asym fp16 = (2 + 1 + 64) bytes per 128 weights.
  EXPECT_DOUBLE_EQ(format_by_name("int4-g128-asym").traits().bits_per_weight, 67.0 * 8 / 128);
  EXPECT_DOUBLE_EQ(format_by_name("int3-g32-sym-f32").traits().bits_per_weight, (4.0 + 12.0) * 8 / 32);
}

// Decodes int4-g32-asym bytes by hand from the documented layout and compares with the format.
TEST(IntFormats, GroupLayoutMatchesTheDocumentation) {
  const Format& f = format_by_name("int4-g32-asym");
  const auto x = normal(64, 3);
  std::vector<std::byte> q(f.tensor_bytes(1, 64));
  ASSERT_EQ(q.size(), 2u * (2 + 1 + 16));
  f.quantize_reference(x.data(), 1, 64, q);
  std::vector<float> y(64);
  f.dequantize_rows(q.data(), 1, 64, 0, 1, y.data());
  for (int g = 0; g < 2; ++g) {
    const std::byte* b = q.data() + g * 19;
    uint16_t h;
    std::memcpy(&h, b, 2);
    const float scale = f16_to_f32(h);
    const int zero = static_cast<int>(b[2]);
    float lo = 0, hi = 0;
    for (int i = 0; i < 32; ++i) lo = std::min(lo, x[g * 32 + i]), hi = std::max(hi, x[g * 32 + i]);
    EXPECT_NEAR(scale, (hi - lo) / 15, (hi - lo) / 15 * 1e-3);  // fp16 rounding of the min-max scale
    EXPECT_NEAR(zero, -lo / scale, 0.5 + 1e-3);
    for (int i = 0; i < 32; ++i) {
      const int code = (static_cast<int>(b[3 + i / 2]) >> (4 * (i % 2))) & 15;
      EXPECT_EQ(y[static_cast<size_t>(g * 32 + i)], scale * static_cast<float>(code - zero));
      EXPECT_LE(std::fabs(y[static_cast<size_t>(g * 32 + i)] - x[static_cast<size_t>(g * 32 + i)]),
                0.5f * scale * 1.001f + std::max(0.0f, std::fabs(x[static_cast<size_t>(g * 32 + i)]) - 15 * scale));
    }
  }
}

TEST(IntFormats, SymmetricUsesTheRestrictedRangeAndKeepsZeroExact) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    const Format& f = format_by_name("int" + std::to_string(bits) + "-pc-sym-f32");
    std::vector<float> x = normal(256, static_cast<uint32_t>(bits));
    x[5] = 0.0f;
    x[7] = -10.0f;  // the absmax, negative
    std::vector<std::byte> q(f.tensor_bytes(1, 256));
    f.quantize_reference(x.data(), 1, 256, q);
    float scale;
    std::memcpy(&scale, q.data() + f.row_bytes(256), 4);
    const int qmax = (1 << (bits - 1)) - 1;
    EXPECT_EQ(scale, 10.0f / static_cast<float>(qmax));
    std::vector<uint8_t> codes(256);
    unpack_codes(q.data(), 256, bits, codes.data());
    for (uint8_t c : codes) EXPECT_NE(c, 0) << "code 0 (−2^(b−1)) is outside the symmetric range";
    std::vector<float> y(256);
    f.dequantize_rows(q.data(), 1, 256, 0, 1, y.data());
    EXPECT_EQ(y[5], 0.0f);
    EXPECT_EQ(y[7], -scale * static_cast<float>(qmax));
  }
}

TEST(IntFormats, AsymmetricKeepsZeroExactAndPerTensorSharesOneScale) {
  const Format& f = format_by_name("int3-pt-asym");
  std::vector<float> x = normal(2 * 64, 9);
  for (size_t i = 0; i < x.size(); i += 9) x[i] = 0.0f;
  std::vector<std::byte> q(f.tensor_bytes(2, 64));
  EXPECT_EQ(q.size(), 2u * 64 * 3 / 8 + 3);
  f.quantize_reference(x.data(), 2, 64, q);
  std::vector<float> y(x.size());
  f.dequantize_rows(q.data(), 2, 64, 0, 2, y.data());
  for (size_t i = 0; i < x.size(); i += 9) EXPECT_EQ(y[i], 0.0f) << i;
  // Row 1 alone decodes the same (the scale lives in the trailer).
  std::vector<float> y1(64);
  f.dequantize_rows(q.data(), 2, 64, 1, 2, y1.data());
  EXPECT_EQ(0, std::memcmp(y1.data(), y.data() + 64, 64 * sizeof(float)));
}

TEST(IntFormats, Fp16ScaleOverflowIsAnErrorSuggestingF32) {
  std::vector<float> x(32, 1.0f);
  x[3] = 1e7f;
  const Format& f = format_by_name("int4-g32-sym");
  std::vector<std::byte> q(f.tensor_bytes(1, 32), std::byte{0x11});
  const auto before = q;
  try {
    f.quantize_reference(x.data(), 1, 32, q, QuantizeOptions{.tensor_name = "big.weight"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("big.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("int4-g32-sym-f32"), std::string::npos) << e.what();
  }
  EXPECT_EQ(q, before);
  const Format& f32 = format_by_name("int4-g32-sym-f32");
  std::vector<std::byte> q32(f32.tensor_bytes(1, 32));
  f32.quantize_reference(x.data(), 1, 32, q32);
  std::vector<float> y(32);
  f32.dequantize_rows(q32.data(), 1, 32, 0, 1, y.data());
  EXPECT_FLOAT_EQ(y[3], 1e7f);
}

// ---- Range choosers ----

QuantGrid grid(int bits, bool sym) {
  const int half = 1 << (bits - 1);
  return QuantGrid{.qmin = sym ? -(half - 1) : 0, .qmax = sym ? half - 1 : 2 * half - 1, .symmetric = sym};
}

TEST(RangeChooser, ParamsForRange) {
  const QuantParams s = params_for_range(-3.0f, 2.0f, grid(4, true));
  EXPECT_EQ(s.scale, 3.0f / 7.0f);
  EXPECT_EQ(s.zero_point, 0);
  const QuantParams a = params_for_range(-3.0f, 2.0f, grid(4, false));
  EXPECT_EQ(a.scale, 5.0f / 15.0f);
  EXPECT_EQ(a.zero_point, 9);  // −3 / (1/3) = −9
  const QuantParams z = params_for_range(0.0f, 0.0f, grid(4, false));
  EXPECT_EQ(z.scale, 0.0f);
  EXPECT_EQ(dequantize_value(quantize_value(1.0f, inverse_scale(z), z, grid(4, false)), z), 0.0f);
}

TEST(RangeChooser, MseNeverLosesToMinMaxAndIsExactOnGridData) {
  for (bool sym : {true, false}) {
    for (int bits : {2, 3, 4, 8}) {
      const QuantGrid g = grid(bits, sym);
      const auto x = normal(1024, static_cast<uint32_t>(bits));  // absmax ≈ 3.3σ: clipping pays at low bits
      const RangeInput in{.x = x};
      const double e_mm = weighted_squared_error(in, min_max_range().choose(in, g), g);
      const double e_mse = weighted_squared_error(in, mse_grid_range().choose(in, g), g);
      EXPECT_LE(e_mse, e_mm) << bits << sym;
      if (bits <= 3) {
        EXPECT_LT(e_mse, 0.95 * e_mm) << "clipping should pay on Gaussian data, bits " << bits;
      }
    }
  }
  // Values on the min-max grid: min-max is exact, and the search keeps it.
  std::vector<float> on_grid;
  for (int k = -7; k <= 7; ++k) on_grid.push_back(0.25f * static_cast<float>(k));
  const RangeInput in{.x = on_grid};
  const QuantParams p = mse_grid_range().choose(in, grid(4, true));
  EXPECT_EQ(p.scale, 0.25f);
  EXPECT_EQ(weighted_squared_error(in, p, grid(4, true)), 0.0);
}

TEST(RangeChooser, ImportanceWeightsEnterTheMseObjective) {
  const QuantGrid g = grid(3, false);
  const auto x = normal(256, 17, 0.03f);
  std::vector<float> w(64);
  std::mt19937 rng(2);
  std::lognormal_distribution<float> d(0.0f, 1.5f);
  for (auto& v : w) v = d(rng);
  // The weighted search minimises the weighted error over the same candidates the unweighted one
  // searches, so it can only do better on that objective; the weights must change some choice.
  double weighted = 0, unweighted = 0;
  bool any_differs = false;
  for (int grp = 0; grp < 4; ++grp) {
    const std::span<const float> xs(x.data() + grp * 64, 64);
    const RangeInput with{.x = xs, .weights = w.data(), .weight_period = 64};
    const QuantParams pw = mse_grid_range().choose(with, g);
    const QuantParams pu = mse_grid_range().choose(RangeInput{.x = xs}, g);
    weighted += weighted_squared_error(with, pw, g);
    unweighted += weighted_squared_error(with, pu, g);
    any_differs |= pw.scale != pu.scale || pw.zero_point != pu.zero_point;
  }
  EXPECT_LE(weighted, unweighted);
  EXPECT_TRUE(any_differs);
}

TEST(RangeChooser, FormatsUseTheChooserFromOptions) {
  const Format& f = format_by_name("int4-g128-asym");
  const auto x = normal(4 * 512, 5, 0.01f);
  auto rel_err = [&](const RangeChooser* rc, bool reference) {
    std::vector<std::byte> q(f.tensor_bytes(4, 512));
    ThreadPool pool(3);
    if (reference) {
      f.quantize_reference(x.data(), 4, 512, q, QuantizeOptions{.range = rc});
    } else {
      f.quantize(pool, x.data(), 4, 512, q, QuantizeOptions{.range = rc});
    }
    std::vector<float> y(x.size());
    f.dequantize(pool, q.data(), 4, 512, y.data());
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i) e += (x[i] - y[i]) * (x[i] - y[i]);
    return e;
  };
  const double mm = rel_err(nullptr, false);
  const double mse = rel_err(&mse_grid_range(), false);
  EXPECT_LT(mse, mm);
  EXPECT_EQ(mse, rel_err(&mse_grid_range(), true));
  EXPECT_EQ(mm, rel_err(&min_max_range(), false));
}

}  // namespace
}  // namespace calq
