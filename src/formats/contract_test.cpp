// Contract tests run over every registered format (see format.h): round-trip error within the
// format's own bound, fast path == scalar reference bit for bit, 1 thread == N threads, repeatable
// bytes, row-range dequantization, and clear errors for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "formats/grid.h"

namespace calq {
namespace {

constexpr int64_t kCols = 4096;  // a multiple of every block size (32, 64, 256...)

std::vector<float> gaussian(int64_t rows, int64_t cols, uint32_t seed, float outlier_share = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::pow(2.0f, static_cast<float>(r % 5) - 2.0f);  // rows of different scales
    for (int64_t c = 0; c < cols; ++c) {
      float v = normal(rng) * scale;
      if (uni(rng) < outlier_share) v *= 12.0f;
      x[static_cast<size_t>(r * cols + c)] = v;
    }
  }
  return x;
}

std::vector<float> positive_importance(int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(cols));
  for (auto& v : w) v = d(rng);
  return w;
}


std::vector<std::byte> encode(const Format& f, ThreadPool& pool, const std::vector<float>& x, int64_t rows,
                              const float* importance = nullptr) {
  std::vector<std::byte> out(f.tensor_bytes(rows, kCols));
  f.quantize(pool, x.data(), rows, kCols, out, QuantizeOptions{.tensor_name = "t", .importance = importance});
  return out;
}

class FormatContract : public ::testing::TestWithParam<const Format*> {};

TEST_P(FormatContract, TraitsAreConsistent) {
  const Format& f = *GetParam();
  const auto& t = f.traits();
  EXPECT_FALSE(t.name.empty());
  EXPECT_EQ(find_format(t.name), &f);
  EXPECT_GT(t.block_size, 0);
  EXPECT_GT(t.block_bytes, 0u);
  EXPECT_GT(t.max_relative_rmse, 0.0);
  if (t.ggml_type) {
    EXPECT_EQ(format_by_ggml_type(*t.ggml_type), &f);
    EXPECT_EQ(f.trailer_bytes(64, 4096), 0u) << "GGUF-native formats store rows only";
  }
  // bits_per_weight is the measured storage cost of a large tensor.
  const double bpw = static_cast<double>(f.tensor_bytes(4096, 4096)) * 8.0 / (4096.0 * 4096.0);
  EXPECT_NEAR(bpw, t.bits_per_weight, 0.01 * t.bits_per_weight) << t.name;
}

TEST_P(FormatContract, RoundTripWithinBound) {
  const Format& f = *GetParam();
  ThreadPool pool(2);
  const int64_t rows = 8;
  const auto x = gaussian(rows, kCols, 11);
  const auto q = encode(f, pool, x, rows);
  std::vector<float> y(x.size());
  f.dequantize(pool, q.data(), rows, kCols, y.data());
  // The bound is per row: formats with per-tensor scales are checked on rows of one scale too.
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << f.name() << " element " << i;
    err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ref += double(x[i]) * x[i];
  }
  EXPECT_LE(std::sqrt(err / ref), f.traits().max_relative_rmse) << f.name();
}

TEST_P(FormatContract, FastEqualsReferenceAndThreadCountDoesNotMatter) {
  const Format& f = *GetParam();
  const int64_t rows = 37;  // not a multiple of anything, so chunks split unevenly
  const auto x = gaussian(rows, kCols, 23, 0.005f);
  const auto imp = positive_importance(kCols, 5);
  for (const float* importance : {static_cast<const float*>(nullptr), imp.data()}) {
    std::vector<std::byte> ref(f.tensor_bytes(rows, kCols));
    f.quantize_reference(x.data(), rows, kCols, ref, QuantizeOptions{.importance = importance});
    ThreadPool one(1), two(2), three(3);
    EXPECT_EQ(encode(f, one, x, rows, importance), ref) << f.name() << " 1 thread";
    EXPECT_EQ(encode(f, two, x, rows, importance), ref) << f.name() << " 2 threads";
    EXPECT_EQ(encode(f, three, x, rows, importance), ref) << f.name() << " 3 threads";
    EXPECT_EQ(encode(f, two, x, rows, importance), ref) << f.name() << " repeat";

    std::vector<float> fast(x.size()), slow(x.size());
    f.dequantize_rows(ref.data(), rows, kCols, 0, rows, fast.data());
    f.dequantize_rows_reference(ref.data(), rows, kCols, 0, rows, slow.data());
    EXPECT_EQ(0, std::memcmp(fast.data(), slow.data(), fast.size() * sizeof(float))) << f.name();
    // A row range decodes to the same values as the whole tensor.
    std::vector<float> part(static_cast<size_t>(5 * kCols));
    f.dequantize_rows(ref.data(), rows, kCols, 30, 35, part.data());
    EXPECT_EQ(0, std::memcmp(part.data(), fast.data() + 30 * kCols, part.size() * sizeof(float))) << f.name();
  }
}

TEST_P(FormatContract, ZeroRowsStayZeroAndTinyValuesStayFinite) {
  const Format& f = *GetParam();
  ThreadPool pool(2);
  std::vector<float> x(static_cast<size_t>(2 * kCols), 0.0f);
  for (int64_t c = 0; c < kCols; ++c) x[static_cast<size_t>(kCols + c)] = (c % 7 - 3) * 1e-30f;
  const auto q = encode(f, pool, x, 2);
  std::vector<float> y(x.size());
  f.dequantize(pool, q.data(), 2, kCols, y.data());
  for (int64_t c = 0; c < kCols; ++c) {
    ASSERT_EQ(y[static_cast<size_t>(c)], 0.0f) << f.name() << " column " << c;
    ASSERT_TRUE(std::isfinite(y[static_cast<size_t>(kCols + c)])) << f.name() << " column " << c;
    ASSERT_LE(std::fabs(y[static_cast<size_t>(kCols + c)]), 1e-29f) << f.name() << " column " << c;
  }
}

TEST_P(FormatContract, BadInputIsAnErrorNamingTheTensor) {
  const Format& f = *GetParam();
  ThreadPool pool(1);
  auto x = gaussian(2, kCols, 3);
  std::vector<std::byte> out(f.tensor_bytes(2, kCols), std::byte{0x5a});
  const auto untouched = out;
  x[kCols + 17] = std::nanf("");
  try {
    f.quantize(pool, x.data(), 2, kCols, out, QuantizeOptions{.tensor_name = "blk.3.ffn_up.weight"});
    FAIL() << f.name() << ": NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.3.ffn_up.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(out, untouched);
  x[kCols + 17] = 0.0f;
  std::vector<float> imp(kCols, 1.0f);
  imp[9] = -1.0f;
  EXPECT_THROW(f.quantize(pool, x.data(), 2, kCols, out, QuantizeOptions{.importance = imp.data()}), Error);
  if (f.traits().block_size > 1) {
    const int64_t cols = f.traits().block_size + 1;
    std::vector<std::byte> small(1024);
    EXPECT_THROW(f.quantize(pool, x.data(), 1, cols, small), Error) << f.name();
  }
  std::vector<std::byte> wrong(f.tensor_bytes(2, kCols) + 1);
  EXPECT_THROW(f.quantize(pool, x.data(), 2, kCols, wrong), Error);
}

// The formats with a GridCodec, as the codec lookup that was beside the registry listed
// them before the codec became Format::grid_codec(): the twelve GGUF block formats below and every
// int format except the per-tensor ones ("int<b>-pt-..."), 120 of them.
bool had_grid_codec(const Format& f) {
  static const std::set<std::string> kGguf = {"q4_0",   "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl",
                                              "iq4_xs", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"};
  if (kGguf.contains(f.name())) return true;
  return f.traits().family == "int" && f.name().find("-pt-") == std::string::npos;
}

TEST_P(FormatContract, GridCodecExactlyForTheFormatsThatHadOne) {
  const Format& f = *GetParam();
  const GridCodec* codec = f.grid_codec();
  EXPECT_EQ(codec != nullptr, had_grid_codec(f));
  if (codec != nullptr) {
    EXPECT_EQ(&codec->format(), &f);
    EXPECT_EQ(f.grid_codec(), codec);  // one codec per format, owned by it
  }
}

TEST(FormatRegistry, GridCodecCount) {
  int with_codec = 0;
  int int_formats = 0;
  for (const Format* f : all_formats()) {
    with_codec += f->grid_codec() != nullptr;
    int_formats += f->traits().family == "int";
  }
  EXPECT_EQ(int_formats, 144);  // 6 widths × 6 granularities × sym/asym × f16/f32 scales
  EXPECT_EQ(with_codec, 132);   // 120 int + 12 GGUF
}

std::string format_test_name(const ::testing::TestParamInfo<const Format*>& info) {
  std::string s = info.param->name();
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

INSTANTIATE_TEST_SUITE_P(AllFormats, FormatContract, ::testing::ValuesIn(all_formats()), format_test_name);

TEST(FormatRegistry, UnknownNameListsKnownOnes) {
  try {
    (void)format_by_name("f17");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("f16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace calq
