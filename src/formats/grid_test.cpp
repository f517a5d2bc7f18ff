// GridCodec contract (formats/grid.h) over every registered format that has a codec: choosing every
// block from x and rounding every column (in storage order or shuffled) packs to exactly the bytes
// Format::quantize writes with the same options; those bytes dequantize to the rounded values bit
// for bit; row splits and thread counts do not change anything.
#include "formats/grid.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "formats/range.h"

namespace calq {
namespace {

constexpr int64_t kRows = 13;   // odd, so row splits are uneven
constexpr int64_t kCols = 512;  // a multiple of every block size (8, 32, ..., 256)

std::vector<float> test_matrix(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(kRows * kCols));
  for (int64_t r = 0; r < kRows; ++r) {
    const float scale = std::pow(2.0f, static_cast<float>(r % 5) - 2.0f);
    for (int64_t c = 0; c < kCols; ++c) {
      float v = normal(rng) * scale;
      if (uni(rng) < 0.01f) v *= 10.0f;
      if (uni(rng) < 0.02f) v = 0.0f;
      x[static_cast<size_t>(r * kCols + c)] = v;
    }
  }
  // One all-zero block: the zero-scale path.
  std::fill_n(x.begin() + 3 * kCols, 256, 0.0f);
  return x;
}

std::vector<float> test_importance(uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(kCols));
  for (auto& v : w) v = d(rng);
  w[5] = 0.0f;
  return w;
}

std::vector<const Format*> formats_with_codec() {
  std::vector<const Format*> out;
  for (const Format* f : all_formats()) {
    if (f->grid_codec() != nullptr) out.push_back(f);
  }
  return out;
}

struct Encoded {
  std::vector<std::byte> bytes;
  std::vector<float> rounded;
};

// Chooses every block over the row ranges `splits` (run on the pool, one task per range) and rounds
// the columns in `order`, then packs.
Encoded encode_with_codec(const GridCodec& codec, const std::vector<float>& x, const QuantizeOptions& o,
                          const std::vector<int64_t>& order, const std::vector<int64_t>& splits, ThreadPool& pool) {
  const Format& f = codec.format();
  auto state = codec.start(kRows, kCols, o);
  const int64_t pc = codec.param_cols(kCols);
  Encoded e{.bytes = std::vector<std::byte>(f.tensor_bytes(kRows, kCols)),
            .rounded = std::vector<float>(x.size(), std::nanf(""))};
  pool.parallel_for(0, splits.size() - 1, Grain{.min_items = 1}, [&](size_t s0, size_t s1) {
    for (size_t s = s0; s < s1; ++s) {
      const int64_t r0 = splits[s], r1 = splits[s + 1];
      for (int64_t b = 0; b < kCols / pc; ++b) {
        codec.choose(*state, b, r0, r1, x.data() + r0 * kCols + b * pc, kCols);
      }
      for (int64_t col : order) {
        codec.round_column(*state, col, r0, r1, x.data() + r0 * kCols + col, kCols,
                           e.rounded.data() + r0 * kCols + col);
      }
    }
  });
  codec.pack(*state, e.bytes);
  return e;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(GridCodec, IntFamilyHasCodecsExceptPerTensor) {
  int with = 0;
  for (const Format* f : all_formats()) {
    if (f->traits().family != "int") continue;
    const bool per_tensor = f->name().find("-pt-") != std::string::npos;
    EXPECT_EQ(f->grid_codec() != nullptr, !per_tensor) << f->name();
    if (!per_tensor) ++with;
  }
  EXPECT_EQ(with, 120);  // 6 bit widths × 5 granularities (pc, g32..g256) × sym/asym × fp16/fp32
  EXPECT_EQ(format_by_name("fp8-e4m3").grid_codec(), nullptr);
}

TEST(GridCodec, CodecMirrorsItsFormat) {
  for (const Format* f : formats_with_codec()) {
    const GridCodec& codec = *f->grid_codec();
    EXPECT_EQ(&codec.format(), f);
    const int64_t pc = codec.param_cols(kCols);
    EXPECT_GT(pc, 0) << f->name();
    EXPECT_EQ(kCols % pc, 0) << f->name();
  }
}

// levels(): sweeping a column's value from the lowest to the highest representable value under a
// chosen block gives exactly `levels` distinct results (fewer only where the block decodes to one value).
TEST(GridCodec, LevelsCountTheValuesOfABlock) {
  const auto x = test_matrix(4);
  ThreadPool pool1(1);
  for (const Format* f : formats_with_codec()) {
    SCOPED_TRACE(f->name());
    const GridCodec& codec = *f->grid_codec();
    const QuantizeOptions o{.tensor_name = "grid.levels"};
    auto state = codec.start(kRows, kCols, o);
    const int64_t pc = codec.param_cols(kCols);
    for (int64_t b = 0; b < kCols / pc; ++b) codec.choose(*state, b, 0, kRows, x.data() + b * pc, kCols);
    const int64_t col = kCols - 1;  // outside the all-zero block
    std::vector<float> up(kRows, 1e30f), down(kRows, -1e30f), hi(kRows), lo(kRows), in(kRows), out(kRows);
    codec.round_column(*state, col, 0, kRows, up.data(), 1, hi.data());
    codec.round_column(*state, col, 0, kRows, down.data(), 1, lo.data());
    std::vector<std::vector<float>> seen(kRows);
    constexpr int kSweep = 4096;
    for (int k = 0; k <= kSweep; ++k) {
      for (int64_t r = 0; r < kRows; ++r) in[r] = lo[r] + (hi[r] - lo[r]) * static_cast<float>(k) / kSweep;
      codec.round_column(*state, col, 0, kRows, in.data(), 1, out.data());
      for (int64_t r = 0; r < kRows; ++r) seen[r].push_back(out[r]);
    }
    int64_t spread = 0;
    for (int64_t r = 0; r < kRows; ++r) {
      std::sort(seen[r].begin(), seen[r].end());
      const auto distinct = std::unique(seen[r].begin(), seen[r].end()) - seen[r].begin();
      if (hi[r] == lo[r]) continue;
      ++spread;
      EXPECT_EQ(distinct, codec.levels()) << "row " << r;
    }
    EXPECT_GE(spread, kRows - 1);
  }
}

TEST(GridCodec, PacksTheFormatsBytesInAnyColumnOrder) {
  const auto x = test_matrix(1);
  const auto importance = test_importance(2);
  ThreadPool pool1(1);
  std::vector<int64_t> order(kCols);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::vector<int64_t> shuffled = order;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(3));
  const std::vector<int64_t> whole = {0, kRows};
  const auto formats = formats_with_codec();
  ASSERT_FALSE(formats.empty());
  for (const Format* f : formats) {
    const GridCodec& codec = *f->grid_codec();
    const bool int_family = f->traits().family == "int";
    for (int variant = 0; variant < (int_family ? 3 : 2); ++variant) {
      const QuantizeOptions o{.tensor_name = "grid.test",
                              .importance = variant >= 1 ? importance.data() : nullptr,
                              .range = variant == 2 ? &mse_grid_range() : nullptr};
      SCOPED_TRACE(f->name() + " variant " + std::to_string(variant));
      std::vector<std::byte> expected(f->tensor_bytes(kRows, kCols));
      f->quantize(pool1, x.data(), kRows, kCols, expected, o);

      const Encoded in_order = encode_with_codec(codec, x, o, order, whole, pool1);
      EXPECT_TRUE(in_order.bytes == expected);
      std::vector<float> decoded(x.size());
      f->dequantize(pool1, in_order.bytes.data(), kRows, kCols, decoded.data());
      EXPECT_TRUE(same_bits(decoded, in_order.rounded));

      const Encoded any_order = encode_with_codec(codec, x, o, shuffled, whole, pool1);
      EXPECT_TRUE(any_order.bytes == expected);
      EXPECT_TRUE(same_bits(any_order.rounded, in_order.rounded));
    }
  }
}

TEST(GridCodec, RowSplitsAndThreadsDoNotMatter) {
  const auto x = test_matrix(4);
  const auto importance = test_importance(5);
  ThreadPool pool1(1), pool2(2);
  std::vector<int64_t> order(kCols);
  std::iota(order.begin(), order.end(), int64_t{0});
  const QuantizeOptions o{.tensor_name = "grid.test", .importance = importance.data()};
  for (const Format* f : formats_with_codec()) {
    SCOPED_TRACE(f->name());
    const GridCodec& codec = *f->grid_codec();
    const Encoded one = encode_with_codec(codec, x, o, order, {0, kRows}, pool1);
    const Encoded two = encode_with_codec(codec, x, o, order, {0, 5, 6, kRows}, pool2);
    const Encoded rows = encode_with_codec(codec, x, o, order, {0, 1, 2, 3, 4, 7, 9, 12, kRows}, pool2);
    EXPECT_TRUE(one.bytes == two.bytes);
    EXPECT_TRUE(one.bytes == rows.bytes);
    EXPECT_TRUE(same_bits(one.rounded, two.rounded));
    EXPECT_TRUE(same_bits(one.rounded, rows.rounded));
  }
}

TEST(GridCodec, BadInputNamesTheTensor) {
  const QuantizeOptions o{.tensor_name = "blk.7.ffn_up"};
  for (const Format* f : formats_with_codec()) {
    SCOPED_TRACE(f->name());
    const GridCodec& codec = *f->grid_codec();
    // A row length the format cannot store.
    try {
      (void)codec.start(2, f->traits().block_size * 3 + 1, o);
      ADD_FAILURE() << "no error for a bad shape";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.7.ffn_up"), std::string::npos) << e.what();
    }
    // A non-finite value in a block.
    auto state = codec.start(2, kCols, o);
    std::vector<float> x(static_cast<size_t>(2 * kCols), 0.5f);
    x[static_cast<size_t>(kCols + 3)] = std::nanf("");
    try {
      codec.choose(*state, 0, 0, 2, x.data(), kCols);
      ADD_FAILURE() << "no error for NaN";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.7.ffn_up"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace calq
