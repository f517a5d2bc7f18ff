// GPTQ (quant/gptq.h) on synthetic layers: the lazy-batch sweep agrees with the unbatched reference,
// beats round-to-nearest on the layer's output error, handles dead inputs and singular Hessians,
// is thread-count independent and rejects bad input.
#include "quant/gptq.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/grid.h"

namespace calq::quant {
namespace {

struct Layer {
  int64_t rows = 0, cols = 0;
  std::vector<float> w;       // [rows, cols]
  std::vector<double> h;      // Σ xᵀx, [cols, cols]
};

// X [samples, cols]: 16 latent factors mixed into every column (correlated inputs), noise, and a
// few outlier channels 20× larger; dead inputs are all-zero columns of X.
Layer make_layer(int64_t rows, int64_t cols, uint32_t seed, std::vector<int64_t> dead = {}) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t samples = 512, factors = 16;
  std::vector<float> mix(static_cast<size_t>(factors * cols));
  for (auto& v : mix) v = normal(rng);
  std::vector<double> x(static_cast<size_t>(samples * cols));
  for (int64_t s = 0; s < samples; ++s) {
    float z[factors];
    for (auto& v : z) v = normal(rng);
    for (int64_t j = 0; j < cols; ++j) {
      double v = 0.3 * normal(rng);
      for (int64_t f = 0; f < factors; ++f) v += z[f] * mix[static_cast<size_t>(f * cols + j)];
      if (j % 61 == 7) v *= 20.0;  // outlier channels
      x[static_cast<size_t>(s * cols + j)] = v;
    }
  }
  for (int64_t j : dead) {
    for (int64_t s = 0; s < samples; ++s) x[static_cast<size_t>(s * cols + j)] = 0.0;
  }
  Layer l{.rows = rows, .cols = cols};
  l.h.assign(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t s = 0; s < samples; ++s) {
    const double* xs = x.data() + s * cols;
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t k = 0; k < cols; ++k) l.h[static_cast<size_t>(i * cols + k)] += xs[i] * xs[k];
    }
  }
  l.w.resize(static_cast<size_t>(rows * cols));
  for (auto& v : l.w) v = 0.05f * normal(rng);
  return l;
}

// Σ_rows (w − q)ᵀ H (w − q) = ‖(W − Q)Xᵀ‖² — the layer's output error.
double output_error(const Layer& l, const std::vector<float>& q) {
  double total = 0;
  std::vector<double> d(static_cast<size_t>(l.cols));
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t j = 0; j < l.cols; ++j) d[j] = static_cast<double>(l.w[r * l.cols + j]) - q[r * l.cols + j];
    for (int64_t i = 0; i < l.cols; ++i) {
      double hi = 0;
      for (int64_t k = 0; k < l.cols; ++k) hi += l.h[static_cast<size_t>(i * l.cols + k)] * d[k];
      total += d[i] * hi;
    }
  }
  return total;
}

struct GptqRun {
  std::vector<std::byte> bytes;
  std::vector<float> q;
  GptqResult result;
};

GptqRun run_gptq(const Format& f, const Layer& l, const GptqOptions& o, ThreadPool* pool) {
  GptqRun run{.bytes = std::vector<std::byte>(f.tensor_bytes(l.rows, l.cols)),
          .q = std::vector<float>(l.w.size())};
  if (pool != nullptr) {
    run.result = gptq_quantize(f, l.w.data(), l.rows, l.cols, l.h, run.bytes, run.q.data(), o, *pool);
  } else {
    run.result = gptq_quantize_reference(f, l.w.data(), l.rows, l.cols, l.h, run.bytes, run.q.data(), o);
  }
  return run;
}

std::vector<float> rtn(const Format& f, const Layer& l, ThreadPool& pool) {
  std::vector<std::byte> bytes(f.tensor_bytes(l.rows, l.cols));
  f.quantize(pool, l.w.data(), l.rows, l.cols, bytes);
  std::vector<float> q(l.w.size());
  f.dequantize(pool, bytes.data(), l.rows, l.cols, q.data());
  return q;
}

// Blocked and reference sum the same updates in different orders (sgemm vs rank-1), so W differs
// by float rounding. Where a value sits that close to a rounding boundary its code flips, and the
// flip's compensation changes the rest of that row; every other row must come out identical.
void expect_close_to_reference(const GptqRun& a, const GptqRun& b, int64_t rows, int64_t cols) {
  ASSERT_EQ(a.q.size(), b.q.size());
  int64_t rows_differ = 0, values_differ = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t n = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = static_cast<size_t>(r * cols + j);
      const float scale = std::max(std::fabs(a.q[i]), std::fabs(b.q[i]));
      if (std::fabs(a.q[i] - b.q[i]) > 1e-6f * scale) ++n;
    }
    rows_differ += n > 0;
    values_differ += n;
  }
  EXPECT_LE(rows_differ, rows / 10) << values_differ << " values in " << rows_differ << " rows differ";
  EXPECT_EQ(a.result.damp_used, b.result.damp_used);
  if (rows_differ == 0) {  // same q; the reported error carries the sweep's float rounding (~1e-5)
    EXPECT_NEAR(a.result.error, b.result.error, 1e-4 * b.result.error);
  }
}

TEST(Gptq, BlockedMatchesReference) {
  ThreadPool pool(2);
  const Layer l = make_layer(64, 256, 1);
  std::vector<std::string> names = {"int4-g128-asym", "int3-g32-sym", "int4-g256-asym", "int8-pc-sym",
                                    "int2-g64-asym"};
  for (const char* gguf : {"q4_0", "q4_k", "iq4_xs"}) {  // when their codecs exist
    if (format_by_name(gguf).grid_codec() != nullptr) names.push_back(gguf);
  }
  for (const std::string& name : names) {
    const Format& f = format_by_name(name);
    for (bool act_order : {false, true}) {
      for (int64_t block : {128, 48}) {  // 48: batches cut at group starts, groups spanning batches
        SCOPED_TRACE(name + (act_order ? " act-order" : "") + " block " + std::to_string(block));
        const GptqOptions o{.block = block, .act_order = act_order, .tensor_name = "test.w"};
        const GptqRun blocked = run_gptq(f, l, o, &pool);
        const GptqRun ref = run_gptq(f, l, o, nullptr);
        expect_close_to_reference(blocked, ref, l.rows, l.cols);
        // The values are what the bytes decode to.
        std::vector<float> decoded(l.w.size());
        f.dequantize(pool, blocked.bytes.data(), l.rows, l.cols, decoded.data());
        EXPECT_EQ(std::memcmp(decoded.data(), blocked.q.data(), decoded.size() * sizeof(float)), 0);
      }
    }
  }
}

TEST(Gptq, ReportedErrorIsTheOutputError) {
  ThreadPool pool(1);
  const Layer l = make_layer(32, 640, 2, {5, 90, 600});  // 640: more than one factorisation tile
  for (bool act_order : {false, true}) {
    const GptqOptions o{.block = 48, .act_order = act_order};  // batches and sgemm updates
    const GptqRun run = run_gptq(format_by_name("int4-g32-asym"), l, o, &pool);
    const double direct = output_error(l, run.q);
    EXPECT_NEAR(run.result.error, direct, 1e-3 * direct) << act_order;
  }
}

TEST(Gptq, BeatsRoundToNearest) {
  ThreadPool pool(2);
  const Layer l = make_layer(64, 256, 3);
  std::vector<std::string> names = {"int4-g128-asym", "int3-g128-asym"};
  for (const Format* f : all_formats()) {  // one GGUF type, when its codec exists
    if (f->traits().family == "gguf" && f->grid_codec() != nullptr) {
      names.push_back(f->name());
      break;
    }
  }
  for (const std::string& name : names) {
    const Format& f = format_by_name(name);
    const double base = output_error(l, rtn(f, l, pool));
    for (bool act_order : {false, true}) {
      const GptqRun run = run_gptq(f, l, GptqOptions{.act_order = act_order}, &pool);
      const double err = output_error(l, run.q);
      EXPECT_LT(err, 0.8 * base) << name << (act_order ? " act-order" : "") << ": gptq " << err << " rtn " << base;
    }
  }
}

TEST(Gptq, DeadInputsQuantizeToZero) {
  ThreadPool pool(2);
  const std::vector<int64_t> dead = {0, 17, 200};
  const Layer l = make_layer(40, 256, 4, dead);
  for (bool act_order : {false, true}) {
    const GptqRun run = run_gptq(format_by_name("int4-g128-asym"), l, GptqOptions{.act_order = act_order}, &pool);
    EXPECT_EQ(run.result.dead_columns, 3);
    for (int64_t r = 0; r < l.rows; ++r) {
      for (int64_t j : dead) EXPECT_EQ(run.q[r * l.cols + j], 0.0f) << r << "," << j;
    }
    for (float v : run.q) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(Gptq, DampGrowsUntilTheHessianFactorises) {
  ThreadPool pool(1);
  Layer l = make_layer(8, 320, 5);
  const auto n = static_cast<size_t>(l.cols);
  // Identity but for the first pair, [[1, 1.5], [1.5, 1]] (eigenvalues 2.5 and −0.5; the
  // factorisation runs on the reversed matrix, so it sits in the last tile): mean diagonal 1, so λ
  // must pass 0.5: 0.01 and 0.1 fail, 1 works.
  std::fill(l.h.begin(), l.h.end(), 0.0);
  for (size_t i = 0; i < n; ++i) l.h[i * n + i] = 1.0;
  l.h[1] = l.h[n] = 1.5;
  GptqRun run = run_gptq(format_by_name("int4-g32-asym"), l, GptqOptions{.damp = 0.01}, &pool);
  EXPECT_DOUBLE_EQ(run.result.damp_used, 1.0);
  // Singular (pairs of equal inputs) with no damping: the first retry uses kGptqZeroDampRetry.
  for (size_t i = 0; i < n; i += 2) l.h[i * n + i + 1] = l.h[(i + 1) * n + i] = 1.0;
  run = run_gptq(format_by_name("int4-g32-asym"), l, GptqOptions{.damp = 0.0}, &pool);
  EXPECT_DOUBLE_EQ(run.result.damp_used, kGptqZeroDampRetry);
  for (float v : run.q) ASSERT_TRUE(std::isfinite(v));
  // Hopeless: off-diagonal 1e9 needs λ ≈ 1e9, beyond 0.01·10⁵.
  for (size_t i = 0; i < n; i += 2) l.h[i * n + i + 1] = l.h[(i + 1) * n + i] = 1e9;
  try {
    run_gptq(format_by_name("int4-g32-asym"), l, GptqOptions{.tensor_name = "blk.0.attn_q"}, &pool);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q"), std::string::npos) << e.what();
  }
}

TEST(Gptq, ThreadCountDoesNotChangeTheBytes) {
  const Layer l = make_layer(150, 608, 6);  // 3 row chunks (the last partial), 3 factorisation tiles
  for (bool act_order : {false, true}) {
    const GptqOptions o{.block = 32, .act_order = act_order};
    ThreadPool p1(1), p2(2), p3(3);
    const GptqRun a = run_gptq(format_by_name("int4-g32-sym"), l, o, &p1);
    const GptqRun b = run_gptq(format_by_name("int4-g32-sym"), l, o, &p2);
    const GptqRun c = run_gptq(format_by_name("int4-g32-sym"), l, o, &p3);
    EXPECT_TRUE(a.bytes == b.bytes);
    EXPECT_TRUE(a.bytes == c.bytes);
    EXPECT_EQ(a.result.error, b.result.error);
    EXPECT_EQ(a.result.error, c.result.error);
  }
}

TEST(Gptq, BadInputNamesTheTensor) {
  ThreadPool pool(1);
  const Layer good = make_layer(8, 64, 7);
  const Format& f = format_by_name("int4-g32-asym");
  const GptqOptions o{.tensor_name = "blk.3.ffn_down"};
  auto expect_error = [&](const Layer& l, const Format& fmt, const GptqOptions& opt, size_t dst_bytes,
                          const char* what) {
    std::vector<std::byte> dst(dst_bytes);
    try {
      gptq_quantize(fmt, l.w.data(), l.rows, l.cols, l.h, dst, nullptr, opt, pool);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.3.ffn_down"), std::string::npos) << what << ": " << e.what();
    }
  };
  const size_t bytes = f.tensor_bytes(good.rows, good.cols);
  Layer bad = good;
  bad.w[37] = std::nanf("");
  expect_error(bad, f, o, bytes, "NaN weight");
  bad = good;
  bad.h[5] = INFINITY;
  expect_error(bad, f, o, bytes, "infinite Hessian");
  bad = good;
  bad.h.pop_back();
  expect_error(bad, f, o, bytes, "short Hessian");
  expect_error(good, f, o, bytes + 1, "wrong dst size");
  GptqOptions neg = o;
  neg.damp = -1;
  expect_error(good, f, neg, bytes, "negative damp");
  for (const char* other : {"fp8-e4m3", "int4-pt-sym", "nf4"}) {
    const Format& g = format_by_name(other);
    expect_error(good, g, o, g.tensor_bytes(good.rows, good.cols), other);
  }
}

}  // namespace
}  // namespace calq::quant
