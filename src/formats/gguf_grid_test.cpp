// Tests of the GGUF GridCodecs (gguf_grid.cpp): rounding the unchanged values reproduces
// Format::quantize byte for byte; after the values move between choose() and round_column() (as
// GPTQ moves them), the packed bytes decode to exactly the values round_column returned, each the
// nearest value the frozen parameters can represent (brute force over every code of the element's
// position, decoded by the format itself); row splits and thread counts do not change anything.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "formats/grid.h"

namespace calq {

namespace {

constexpr int64_t kCols = 512;

const GridCodec& codec(const std::string& name) {
  const GridCodec* c = format_by_name(name).grid_codec();
  if (c == nullptr) throw std::logic_error("no codec " + name);
  return *c;
}

const std::vector<std::string> kNames = {"q4_0",   "q4_1",   "q5_0", "q5_1", "q8_0", "iq4_nl",
                                         "iq4_xs", "q2_k",   "q3_k", "q4_k", "q5_k", "q6_k"};

// N(0, 1) rows with per-row scales and a few outliers; a zero block and a constant block in row 0.
std::vector<float> random_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::exp2(static_cast<float>(r % 5) - 3.0f);
    for (int64_t j = 0; j < cols; ++j) {
      float v = g(rng) * scale;
      if (rng() % 97 == 0) v *= 8.0f;
      x[static_cast<size_t>(r * cols + j)] = v;
    }
  }
  std::fill(x.begin(), x.begin() + 32, 0.0f);
  std::fill(x.begin() + 256, x.begin() + 288, 0.75f);
  return x;
}

std::vector<float> random_importance(int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.5f);
  std::vector<float> w(static_cast<size_t>(cols));
  for (auto& v : w) v = rng() % 13 == 0 ? 0.0f : std::exp(g(rng));
  return w;
}

struct GridRun {
  std::vector<std::byte> bytes;
  std::vector<float> rounded;  // [rows, cols] as round_column returned them
  std::vector<float> target;   // the values that were rounded
};

// GPTQ's use: choose every block from x (rows split at `splits`, each range on its own pool task),
// move the values (when perturb), round the columns in `order`, pack.
GridRun run_grid(const GridCodec& gc, const std::vector<float>& x, int64_t rows, int64_t cols,
                 const QuantizeOptions& options, bool perturb, const std::vector<int64_t>& order,
                 const std::vector<int64_t>& splits, ThreadPool& pool) {
  auto state = gc.start(rows, cols, options);
  const int64_t pc = gc.param_cols(cols);
  std::vector<int64_t> bounds = {0};
  for (int64_t s : splits) bounds.push_back(s);
  bounds.push_back(rows);
  const size_t ranges = bounds.size() - 1;
  pool.parallel_for(0, ranges, Grain{.min_items = 1}, [&](size_t a, size_t b) {
    for (size_t k = a; k < b; ++k) {
      for (int64_t blk = 0; blk < cols / pc; ++blk) {
        gc.choose(*state, blk, bounds[k], bounds[k + 1], x.data() + bounds[k] * cols + blk * pc, cols);
      }
    }
  });
  GridRun run;
  run.target = x;
  if (perturb) {
    std::mt19937 rng(1234);
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (int64_t r = 0; r < rows; ++r) {
      float amax = 0;
      for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(x[static_cast<size_t>(r * cols + j)]));
      for (int64_t j = 0; j < cols; ++j) {
        float& v = run.target[static_cast<size_t>(r * cols + j)];
        v += 0.2f * amax * g(rng);      // moves, and pushes some values past the block's range
        if (rng() % 50 == 0) v *= 3.0f;  // far past it
      }
    }
  }
  run.rounded.assign(x.size(), std::numeric_limits<float>::quiet_NaN());
  // Column-major copies, the way GPTQ hands a column over (stride 1).
  for (int64_t col : order) {
    std::vector<float> in(static_cast<size_t>(rows)), out(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) in[static_cast<size_t>(r)] = run.target[static_cast<size_t>(r * cols + col)];
    pool.parallel_for(0, ranges, Grain{.min_items = 1}, [&](size_t a, size_t b) {
      for (size_t k = a; k < b; ++k) {
        gc.round_column(*state, col, bounds[k], bounds[k + 1], in.data() + bounds[k], 1, out.data() + bounds[k]);
      }
    });
    for (int64_t r = 0; r < rows; ++r) run.rounded[static_cast<size_t>(r * cols + col)] = out[static_cast<size_t>(r)];
  }
  run.bytes.resize(gc.format().tensor_bytes(rows, cols));
  gc.pack(*state, run.bytes);
  return run;
}

std::vector<int64_t> natural_order(int64_t cols) {
  std::vector<int64_t> o(static_cast<size_t>(cols));
  std::iota(o.begin(), o.end(), 0);
  return o;
}

std::vector<int64_t> shuffled_order(int64_t cols, uint32_t seed) {
  auto o = natural_order(cols);
  std::mt19937 rng(seed);
  std::shuffle(o.begin(), o.end(), rng);
  return o;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- Independent statement of the code fields (llama.cpp's block layouts) ----
// Number of codes at a position, and a writer of code `c` (0..count−1, stored value order) of
// element e into one block's bytes.
int code_count(const std::string& n) {
  if (n == "q8_0") return 255;  // int8 −127..127: the encoder never writes −128
  if (n == "q2_k") return 4;
  if (n == "q3_k") return 8;
  if (n == "q5_0" || n == "q5_1" || n == "q5_k") return 32;
  if (n == "q6_k") return 64;
  return 16;
}

void set_nibble_of(uint8_t& b, bool low, int c) {
  b = low ? static_cast<uint8_t>((b & 0xf0) | (c & 15)) : static_cast<uint8_t>((b & 0x0f) | ((c & 15) << 4));
}

// 32-element group: element e < 16 is the low nibble of qs[e], else the high nibble of qs[e − 16].
void set_nibble(uint8_t* qs, int e, int c) { set_nibble_of(qs[e % 16], e < 16, c); }

void set_bit(uint8_t& b, int bit, bool on) {
  b = on ? static_cast<uint8_t>(b | (1 << bit)) : static_cast<uint8_t>(b & ~(1 << bit));
}

void set_2bit(uint8_t* qs, int e, int c) {  // q2_K/q3_K: qs[32·(e/128) + e%32], bits 2·((e%128)/32)
  uint8_t& b = qs[32 * (e / 128) + e % 32];
  const int sh = 2 * ((e % 128) / 32);
  b = static_cast<uint8_t>((b & ~(3 << sh)) | ((c & 3) << sh));
}

void set_code(const std::string& n, uint8_t* blk, int e, int c) {
  if (n == "q4_0" || n == "iq4_nl") return set_nibble(blk + 2, e, c);
  if (n == "q4_1") return set_nibble(blk + 4, e, c);
  if (n == "q5_0" || n == "q5_1") {
    const int qh = n == "q5_0" ? 2 : 4;
    set_bit(blk[qh + e / 8], e % 8, (c >> 4) & 1);
    return set_nibble(blk + qh + 4, e, c);
  }
  if (n == "q8_0") {
    blk[2 + e] = static_cast<uint8_t>(static_cast<int8_t>(c - 127));
    return;
  }
  if (n == "iq4_xs") return set_nibble(blk + 8 + 16 * (e / 32), e % 32, c);
  if (n == "q2_k") return set_2bit(blk + 16, e, c);
  if (n == "q3_k") {  // value = low2 − (hmask bit set ? 0 : 4); code c = low2 + 4·bit
    set_2bit(blk + 32, e, c & 3);
    return set_bit(blk[e % 32], e / 32, (c >> 2) & 1);
  }
  if (n == "q4_k" || n == "q5_k") {
    const int qs = n == "q4_k" ? 16 : 48;
    set_nibble_of(blk[qs + 32 * (e / 64) + e % 32], (e % 64) < 32, c);
    if (n == "q5_k") set_bit(blk[16 + e % 32], e / 32, (c >> 4) & 1);
    return;
  }
  ASSERT_EQ(n, "q6_k");
  const int h = e / 128, r = e % 128;
  set_nibble_of(blk[64 * h + r % 64], r < 64, c);
  uint8_t& hi = blk[128 + 32 * h + r % 32];
  const int sh = 2 * (r / 32);
  hi = static_cast<uint8_t>((hi & ~(3 << sh)) | (((c >> 4) & 3) << sh));
}

// For every element of `rows_checked` rows: |target − rounded| is the least over all values its
// block's frozen parameters (as packed) can give at that position, up to the last few ulps — the
// encoders round t = x·(1/s) (two roundings) and the decoder rounds d·q − m, so a value within a
// few ulps of a midpoint may go either way. Returns the number of exact ties-or-better misses.
void expect_nearest(const Format& f, const GridRun& run, int64_t rows_checked, int64_t cols) {
  const std::string n = f.name();
  const int64_t bs = f.traits().block_size;
  const size_t bb = f.traits().block_bytes;
  const int count = code_count(n);
  int64_t misses = 0, not_strict = 0;
  for (int64_t r = 0; r < rows_checked; ++r) {
    for (int64_t b = 0; b < cols / bs; ++b) {
      std::vector<uint8_t> blk(bb);
      std::memcpy(blk.data(), run.bytes.data() + (r * (cols / bs) + b) * bb, bb);
      std::vector<float> best(static_cast<size_t>(bs), std::numeric_limits<float>::infinity());
      std::vector<float> best_y(static_cast<size_t>(bs), 0.0f);
      std::vector<float> y(static_cast<size_t>(bs));
      for (int c = 0; c < count; ++c) {
        for (int e = 0; e < bs; ++e) set_code(n, blk.data(), e, c);
        f.dequantize_rows_reference(reinterpret_cast<const std::byte*>(blk.data()), 1, bs, 0, 1, y.data());
        for (int e = 0; e < bs; ++e) {
          const float x = run.target[static_cast<size_t>(r * cols + b * bs + e)];
          const float dist = std::fabs(x - y[static_cast<size_t>(e)]);
          if (dist < best[static_cast<size_t>(e)]) {
            best[static_cast<size_t>(e)] = dist;
            best_y[static_cast<size_t>(e)] = y[static_cast<size_t>(e)];
          }
        }
      }
      for (int e = 0; e < bs; ++e) {
        const size_t i = static_cast<size_t>(r * cols + b * bs + e);
        const float x = run.target[i], got = run.rounded[i];
        const float dist = std::fabs(x - got), opt = best[static_cast<size_t>(e)];
        if (dist <= opt) continue;
        ++not_strict;
        const float slack = std::ldexp(std::fabs(x) + std::fabs(got) + std::fabs(best_y[static_cast<size_t>(e)]), -20);
        if (dist > opt + slack) {
          if (++misses <= 5) {
            ADD_FAILURE() << n << " row " << r << " col " << b * bs + e << ": x " << x << " rounded to " << got
                          << " (|err| " << dist << ") but " << best_y[static_cast<size_t>(e)] << " is nearer (" << opt
                          << ")";
          }
        }
      }
    }
  }
  EXPECT_EQ(misses, 0) << n;
  // Near-ties are rare on random data; many of them would mean a systematic rounding bias.
  EXPECT_LE(not_strict, rows_checked * cols / 1000 + 2) << n;
}

class GgufGrid : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(GgufGrid, UnchangedValuesGiveQuantizeBytes) {
  const auto& [name, use_importance] = GetParam();
  const GridCodec& gc = codec(name);
  const Format& f = gc.format();
  ASSERT_EQ(f.name(), name);
  const int64_t rows = 7;
  const auto x = random_matrix(rows, kCols, 7);
  const auto imp = random_importance(kCols, 8);
  const QuantizeOptions opts{.tensor_name = "w", .importance = use_importance ? imp.data() : nullptr};
  ThreadPool pool(1);
  const GridRun run = run_grid(gc, x, rows, kCols, opts, false, natural_order(kCols), {}, pool);
  std::vector<std::byte> want(f.tensor_bytes(rows, kCols));
  f.quantize(pool, x.data(), rows, kCols, want, opts);
  EXPECT_TRUE(run.bytes == want) << name << ": grid bytes differ from Format::quantize";
  std::vector<float> deq(x.size());
  f.dequantize(pool, want.data(), rows, kCols, deq.data());
  EXPECT_TRUE(same_bits(deq, run.rounded)) << name << ": rounded values differ from the decoded quantize bytes";
}

TEST_P(GgufGrid, MovedValuesRoundToNearestAndDecodeExactly) {
  const auto& [name, use_importance] = GetParam();
  const GridCodec& gc = codec(name);
  const Format& f = gc.format();
  const int64_t rows = 5;
  const auto x = random_matrix(rows, kCols, 21);
  const auto imp = random_importance(kCols, 22);
  const QuantizeOptions opts{.tensor_name = "w", .importance = use_importance ? imp.data() : nullptr};
  ThreadPool pool(1);
  const GridRun run = run_grid(gc, x, rows, kCols, opts, true, shuffled_order(kCols, 5), {}, pool);
  std::vector<float> deq(x.size()), deq_ref(x.size());
  f.dequantize(pool, run.bytes.data(), rows, kCols, deq.data());
  f.dequantize_rows_reference(run.bytes.data(), rows, kCols, 0, rows, deq_ref.data());
  EXPECT_TRUE(same_bits(deq, run.rounded)) << name;
  EXPECT_TRUE(same_bits(deq_ref, run.rounded)) << name;
  // The parameters stay those chosen from the original values: with every code field cleared, the
  // bytes equal what quantize writes for x; the codes themselves moved.
  std::vector<std::byte> want(f.tensor_bytes(rows, kCols));
  f.quantize(pool, x.data(), rows, kCols, want, opts);
  EXPECT_FALSE(run.bytes == want) << name << ": the perturbation changed no code";
  const int64_t bs = f.traits().block_size;
  const size_t bb = f.traits().block_bytes;
  for (size_t at = 0; at < want.size(); at += bb) {
    std::vector<uint8_t> got_blk(bb), want_blk(bb);
    std::memcpy(got_blk.data(), run.bytes.data() + at, bb);
    std::memcpy(want_blk.data(), want.data() + at, bb);
    for (int e = 0; e < bs; ++e) {
      set_code(name, got_blk.data(), e, 0);
      set_code(name, want_blk.data(), e, 0);
    }
    ASSERT_TRUE(got_blk == want_blk) << name << ": parameters of block " << at / bb << " differ from quantize's";
  }
  expect_nearest(f, run, rows, kCols);
}

TEST_P(GgufGrid, RowSplitsAndThreadsDoNotMatter) {
  const auto& [name, use_importance] = GetParam();
  const GridCodec& gc = codec(name);
  const int64_t rows = 9;
  const auto x = random_matrix(rows, kCols, 31);
  const auto imp = random_importance(kCols, 32);
  const QuantizeOptions opts{.tensor_name = "w", .importance = use_importance ? imp.data() : nullptr};
  ThreadPool one(1), two(2);
  const auto order = shuffled_order(kCols, 9);
  const GridRun a = run_grid(gc, x, rows, kCols, opts, true, order, {}, one);
  const GridRun b = run_grid(gc, x, rows, kCols, opts, true, order, {4}, two);
  const GridRun c = run_grid(gc, x, rows, kCols, opts, true, order, {1, 2, 6}, two);
  EXPECT_TRUE(a.bytes == b.bytes && a.bytes == c.bytes) << name;
  EXPECT_TRUE(same_bits(a.rounded, b.rounded) && same_bits(a.rounded, c.rounded)) << name;
}

INSTANTIATE_TEST_SUITE_P(All, GgufGrid, ::testing::Combine(::testing::ValuesIn(kNames), ::testing::Bool()),
                         [](const auto& p) {
                           return std::get<0>(p.param) + (std::get<1>(p.param) ? "_imatrix" : "_plain");
                         });

TEST(GgufGridErrors, BadShapeAndNonFiniteValuesNameTheTensor) {
  for (const std::string name : {"q4_0", "q4_k", "iq4_xs"}) {
    const GridCodec& gc = codec(name);
    const QuantizeOptions opts{.tensor_name = "blk.3.ffn_up"};
    try {
      gc.start(2, 48, opts);
      ADD_FAILURE() << name << ": cols 48 accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.3.ffn_up"), std::string::npos) << e.what();
    }
    auto state = gc.start(2, kCols, opts);
    auto x = random_matrix(2, kCols, 3);
    x[5] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(gc.choose(*state, 0, 0, 2, x.data(), kCols), Error) << name;
    x[5] = 0.5f;
    gc.choose(*state, 0, 0, 2, x.data(), kCols);
    const float in[2] = {1.0f, std::numeric_limits<float>::infinity()};
    float out[2];
    try {
      gc.round_column(*state, 1, 0, 2, in, 1, out);
      ADD_FAILURE() << name << ": inf accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.3.ffn_up"), std::string::npos) << e.what();
    }
  }
}

TEST(GgufGridErrors, EveryGgufBlockFormatWithUniformOrTableLevelsHasACodec) {
  size_t gguf_codecs = 0;
  for (const Format* f : all_formats()) gguf_codecs += f->traits().family == "gguf" && f->grid_codec() != nullptr;
  EXPECT_EQ(gguf_codecs, kNames.size());
  for (const auto& n : kNames) EXPECT_EQ(codec(n).format().name(), n);
}

}  // namespace
}  // namespace calq
