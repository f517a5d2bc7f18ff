// FP8 E4M3 / E5M2 and FP4 E2M1 codecs (fp8.h), exhaustively over every code, and the fp8 formats.
#include "formats/fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/format.h"

namespace calq {
namespace {

struct Spec {
  const char* name;
  int ebits, mbits;
  bool has_inf;  // E5M2: exponent all ones is inf/NaN; E4M3fn: only S.1111.111 is NaN
  uint8_t (*encode)(float);
  float (*decode)(uint8_t);
  double max;
  int codes;  // 256, or 16 for E2M1
};

const Spec kSpecs[] = {
    {"e4m3", 4, 3, false, &f32_to_e4m3, &e4m3_to_f32, 448.0, 256},
    {"e5m2", 5, 2, true, &f32_to_e5m2, &e5m2_to_f32, 57344.0, 256},
    {"e2m1", 2, 1, false, &f32_to_e2m1, &e2m1_to_f32, 6.0, 16},
};

// Independent decoding from the bit fields, in double.
double from_fields(const Spec& s, int code) {
  const int sign_bit = s.ebits + s.mbits;
  const int e = (code >> s.mbits) & ((1 << s.ebits) - 1);
  const int m = code & ((1 << s.mbits) - 1);
  const double sign = ((code >> sign_bit) & 1) != 0 ? -1.0 : 1.0;
  const int bias = (1 << (s.ebits - 1)) - 1;
  const int emax_field = (1 << s.ebits) - 1;
  if (s.codes == 256 && e == emax_field) {
    if (s.has_inf) return m == 0 ? sign * INFINITY : NAN;
    if (m == (1 << s.mbits) - 1) return NAN;
  }
  if (e == 0) return sign * m * std::pow(2.0, 1 - bias - s.mbits);
  return sign * (1.0 + m / std::pow(2.0, s.mbits)) * std::pow(2.0, e - bias);
}

bool is_nan_code(const Spec& s, int c) { return std::isnan(from_fields(s, c)); }

class Codec : public ::testing::TestWithParam<Spec> {};

TEST_P(Codec, DecodesEveryCodeFromItsBitFields) {
  const Spec& s = GetParam();
  double largest = 0;
  for (int c = 0; c < s.codes; ++c) {
    const double want = from_fields(s, c);
    const float got = s.decode(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << s.name << " code " << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(got), want) << s.name << " code " << c;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << s.name << " code " << c;
    if (std::isfinite(want)) largest = std::max(largest, std::fabs(want));
  }
  EXPECT_EQ(largest, s.max) << s.name;
  if (s.codes == 256) {
    const float* table = std::string(s.name) == "e4m3" ? e4m3_table() : e5m2_table();
    for (int c = 0; c < 256; ++c) {
      const float d = s.decode(static_cast<uint8_t>(c));
      EXPECT_EQ(0, std::memcmp(&table[c], &d, 4)) << s.name << " table entry " << c;
    }
  }
}

TEST_P(Codec, EncodeOfDecodeIsIdentityForEveryNonNanCode) {
  const Spec& s = GetParam();
  for (int c = 0; c < s.codes; ++c) {
    if (is_nan_code(s, c)) continue;
    EXPECT_EQ(s.encode(s.decode(static_cast<uint8_t>(c))), c) << s.name << " code " << c;
  }
}

// Neighbouring finite codes of one sign, in increasing magnitude: their midpoint rounds to the one
// with the even code; just above goes up, just below goes down.
TEST_P(Codec, MidpointsRoundToEvenAndNeighboursRoundToNearest) {
  const Spec& s = GetParam();
  const int sign_bit = 1 << (s.ebits + s.mbits);
  for (int sign : {0, sign_bit}) {
    for (int c = 0; c + 1 < sign_bit; ++c) {
      const double lo = from_fields(s, sign | c), hi = from_fields(s, sign | (c + 1));
      if (!std::isfinite(lo) || !std::isfinite(hi)) continue;
      const double mid_d = (lo + hi) / 2;
      const auto mid = static_cast<float>(mid_d);
      ASSERT_EQ(static_cast<double>(mid), mid_d) << "midpoints are exact floats";
      const int even = (c % 2 == 0) ? c : c + 1;
      EXPECT_EQ(s.encode(mid), sign | even) << s.name << " midpoint " << mid;
      const float up = std::nextafter(mid, sign != 0 ? -INFINITY : INFINITY);
      const float down = std::nextafter(mid, 0.0f);
      EXPECT_EQ(s.encode(up), sign | (c + 1)) << s.name << " above " << mid;
      EXPECT_EQ(s.encode(down), sign | c) << s.name << " below " << mid;
    }
  }
}

TEST_P(Codec, SaturatesSignedZeroAndNan) {
  const Spec& s = GetParam();
  const int sign_bit = 1 << (s.ebits + s.mbits);
  const uint8_t max_code = s.encode(static_cast<float>(s.max));
  EXPECT_EQ(s.decode(max_code), static_cast<float>(s.max));
  for (float v : {static_cast<float>(s.max) * 1.0001f, static_cast<float>(s.max) * 1.5f, 1e30f, 3.0e38f}) {
    EXPECT_EQ(s.encode(v), max_code) << s.name << " " << v;
    EXPECT_EQ(s.encode(-v), max_code | sign_bit) << s.name << " " << -v;
  }
  EXPECT_EQ(s.encode(0.0f), 0);
  EXPECT_EQ(s.encode(-0.0f), sign_bit);
  EXPECT_EQ(s.encode(1e-30f), 0);          // below half the smallest subnormal
  EXPECT_EQ(s.encode(-1e-30f), sign_bit);  // keeps its sign
  EXPECT_TRUE(std::signbit(s.decode(static_cast<uint8_t>(sign_bit))));
  if (s.codes == 256) {
    EXPECT_TRUE(std::isnan(s.decode(s.encode(NAN))));
    if (s.has_inf) {
      EXPECT_EQ(s.decode(s.encode(INFINITY)), INFINITY);
    } else {
      EXPECT_EQ(s.encode(INFINITY), max_code);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, Codec, ::testing::ValuesIn(kSpecs),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(Fp8Decode, FastGatherEqualsScalarTwinForEveryCode) {
  std::vector<uint8_t> codes(256 * 3 + 5);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(i * 7 + 3);
  for (bool e4m3 : {true, false}) {
    for (float scale : {1.0f, 0.0123f, -3.5f}) {
      std::vector<float> fast(codes.size()), slow(codes.size());
      fp8_decode_scaled(e4m3, codes.data(), static_cast<int64_t>(codes.size()), scale, fast.data());
      fp8_decode_scaled_reference(e4m3, codes.data(), static_cast<int64_t>(codes.size()), scale, slow.data());
      EXPECT_EQ(0, std::memcmp(fast.data(), slow.data(), fast.size() * 4)) << e4m3 << " " << scale;
    }
  }
}

TEST(Fp8Formats, ScalesAreAmaxOverMaxAndLayoutIsCodesThenTrailer) {
  std::mt19937 rng(4);
  std::normal_distribution<float> d;
  std::vector<float> x(3 * 64);
  for (auto& v : x) v = d(rng);
  x[70] = -9.0f;  // row 1's amax
  for (const char* name : {"fp8-e4m3", "fp8-e5m2", "fp8-e4m3-pt", "fp8-e5m2-pt"}) {
    const Format& f = format_by_name(name);
    const bool e4m3 = std::string(name).find("e4m3") != std::string::npos;
    const bool pt = std::string(name).ends_with("-pt");
    std::vector<std::byte> q(f.tensor_bytes(3, 64));
    ASSERT_EQ(q.size(), 3u * 64 + (pt ? 4 : 12));
    f.quantize_reference(x.data(), 3, 64, q);
    float scale;
    std::memcpy(&scale, q.data() + 3 * 64 + (pt ? 0 : 4), 4);
    EXPECT_EQ(scale, 9.0f / (e4m3 ? 448.0f : 57344.0f)) << name;
    const auto code = static_cast<uint8_t>(q[70]);
    EXPECT_EQ(code, e4m3 ? 0xfe : 0xfb) << name << ": the amax maps to −max";
    for (int i = 64; i < 128; ++i) {
      const auto c = static_cast<uint8_t>(q[static_cast<size_t>(i)]);
      EXPECT_EQ(c,
                e4m3 ? f32_to_e4m3(x[static_cast<size_t>(i)] / scale) : f32_to_e5m2(x[static_cast<size_t>(i)] / scale));
    }
  }
}

}  // namespace
}  // namespace calq
