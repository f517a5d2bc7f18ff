// Activation quantization in linear_nt: per-token int8/int4 (clipped or not) and per-tensor int8
// fake quantization and the
// LLM.int8() decomposition equal a plain loop written from the definition; the product is
// matmul_nt of that x̂; counters count calls, columns and outliers exactly (also from parallel
// windows); results are the same bits on 1 and 3 threads; GGUF keeps the spec and refuses
// malformed keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/matmul.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "io/gguf.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/linear_weight.h"
#include "model/tiny_model_testutil.h"
#include "support/random_data.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

using ::calq::testing::gaussian;
using Kind = ActivationQuant::Kind;

constexpr int64_t kM = 11;
constexpr int64_t kK = 96;
constexpr int64_t kN = 70;
constexpr int64_t kLdx = kK + 5;

// x[kM, kLdx] with row 4 all zero and the padding beyond k filled with a huge value (must be ignored).
std::vector<float> make_x(uint32_t seed, float sigma) {
  std::vector<float> x = gaussian(static_cast<size_t>(kM * kLdx), seed, sigma);
  for (int64_t r = 0; r < kM; ++r) {
    for (int64_t c = kK; c < kLdx; ++c) x[static_cast<size_t>(r * kLdx + c)] = 1e6f;
  }
  std::fill_n(x.begin() + 4 * kLdx, kK, 0.0f);
  return x;
}

// One value by the definition: round half to even, clamp to ±qmax, times s.
float quant_one(float v, float s, int64_t* clipped = nullptr, float qmax = 127.0f) {
  float q = std::nearbyint(v / s);
  if (std::fabs(q) > qmax) {
    if (clipped != nullptr) ++*clipped;
    q = std::copysign(qmax, q);
  }
  return q * s;
}

// x̂ for the spec, written plainly from the definition in linear_weight.h.
std::vector<float> manual(const ActivationQuant& a, const std::vector<float>& x, int64_t* outliers = nullptr,
                          int64_t* clipped = nullptr) {
  std::vector<bool> outlier(kK, false);
  if (a.kind == Kind::kLlmInt8) {
    for (int64_t c = 0; c < kK; ++c) {
      for (int64_t r = 0; r < kM; ++r) outlier[c] = outlier[c] || std::fabs(x[r * kLdx + c]) > a.threshold;
    }
  }
  if (outliers != nullptr) *outliers = std::count(outlier.begin(), outlier.end(), true);
  std::vector<float> out(static_cast<size_t>(kM * kK));
  for (int64_t r = 0; r < kM; ++r) {
    float amax = 0.0f;
    for (int64_t c = 0; c < kK; ++c) {
      if (!outlier[c]) amax = std::max(amax, std::fabs(x[r * kLdx + c]));
    }
    const float qmax = a.kind == Kind::kInt4PerToken ? 7.0f : 127.0f;
    const float clip = a.kind == Kind::kInt8PerToken || a.kind == Kind::kInt4PerToken ? a.clip : 1.0f;
    const float s = a.kind == Kind::kInt8PerTensor ? a.scale : clip * amax / qmax;
    for (int64_t c = 0; c < kK; ++c) {
      const float v = x[r * kLdx + c];
      out[r * kK + c] = outlier[c] ? v : (s == 0.0f ? v : quant_one(v, s, clipped, qmax));
    }
  }
  return out;
}

// y = x̂ · Wᵀ with the dense path.
std::vector<float> product(ThreadPool& pool, const std::vector<float>& xq, const LinearWeight& w) {
  const Tensor d = w.to_dense(pool);
  std::vector<float> y(static_cast<size_t>(kM * kN));
  matmul_nt(pool, MatmulArgs{.x = xq.data(), .ldx = kK, .w = d.f32(), .ldw = kK, .y = y.data(), .ldy = kN, .m = kM,
                             .n = kN, .k = kK});
  return y;
}

std::vector<float> run(ThreadPool& pool, const std::vector<float>& x, const LinearWeight& w) {
  std::vector<float> y(static_cast<size_t>(kM * kN));
  linear_nt(pool, x.data(), kLdx, kM, w, y.data(), kN);
  return y;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

LinearWeight with_spec(LinearWeight w, const ActivationQuant& a) {
  w.set_act_quant(a);
  return w;
}

Tensor dense_weight() {
  const auto v = gaussian(static_cast<size_t>(kN * kK), 21, 0.1f);
  Tensor t = Tensor::zeros(DType::kF32, {kN, kK});
  std::copy(v.begin(), v.end(), t.mutable_f32());
  return t;
}

TEST(ActQuant, PerTokenEqualsTheDefinition) {
  ThreadPool pool(3);
  const std::vector<float> x = make_x(5, 2.0f);
  const ActivationQuant a{.kind = Kind::kInt8PerToken};
  std::vector<float> xq(static_cast<size_t>(kM * kK));
  EXPECT_EQ(fake_quantize_activations(pool, a, x.data(), kLdx, kM, kK, xq.data()), 0);
  const std::vector<float> want = manual(a, x);
  EXPECT_TRUE(same_bits(xq, want));
  // Properties of the result, independent of the loop above: each row's largest |x| is hit
  // within rounding, every value within half a step, the zero row stays zero.
  for (int64_t r = 0; r < kM; ++r) {
    float amax = 0.0f;
    for (int64_t c = 0; c < kK; ++c) amax = std::max(amax, std::fabs(x[r * kLdx + c]));
    for (int64_t c = 0; c < kK; ++c) {
      EXPECT_LE(std::fabs(xq[r * kK + c] - x[r * kLdx + c]), amax / 127.0f * 0.5f * (1 + 1e-5f));
    }
  }
  for (int64_t c = 0; c < kK; ++c) EXPECT_EQ(xq[4 * kK + c], 0.0f);
  // Within a row, 255 levels at most.
  std::vector<float> row(xq.begin(), xq.begin() + kK);
  std::sort(row.begin(), row.end());
  EXPECT_LE(std::unique(row.begin(), row.end()) - row.begin(), 255);

  const LinearWeight w = with_spec(dense_weight(), a);
  EXPECT_TRUE(same_bits(run(pool, x, w), product(pool, want, w)));
}

TEST(ActQuant, Int4PerTokenWithClipEqualsTheDefinition) {
  ThreadPool pool(3);
  const std::vector<float> x = make_x(15, 2.0f);
  for (const float clip : {1.0f, 0.9f, 0.6f}) {
    SCOPED_TRACE(clip);
    const ActivationQuant a{.kind = Kind::kInt4PerToken, .clip = clip};
    ASSERT_TRUE(a.valid());
    EXPECT_EQ(a.qmax(), 7);
    int64_t want_clipped = 0;
    const std::vector<float> want = manual(a, x, nullptr, &want_clipped);
    std::vector<float> xq(static_cast<size_t>(kM * kK));
    int64_t clipped = 0;
    EXPECT_EQ(fake_quantize_activations(pool, a, x.data(), kLdx, kM, kK, xq.data(), &clipped), 0);
    EXPECT_TRUE(same_bits(xq, want));
    EXPECT_EQ(clipped, want_clipped);
    // Independent properties: at most 15 levels per row, each of them k · s for |k| ≤ 7 with
    // s = clip · absmax / 7; values within the clip are off by at most half a step, those beyond
    // it land on ±7 s; without clipping nothing saturates, with clip 0.6 the largest values do.
    int64_t beyond = 0;
    for (int64_t r = 0; r < kM; ++r) {
      float amax = 0.0f;
      for (int64_t c = 0; c < kK; ++c) amax = std::max(amax, std::fabs(x[r * kLdx + c]));
      const float s = clip * amax / 7.0f;
      std::vector<float> row(xq.begin() + r * kK, xq.begin() + (r + 1) * kK);
      std::sort(row.begin(), row.end());
      EXPECT_LE(std::unique(row.begin(), row.end()) - row.begin(), 15);
      for (int64_t c = 0; c < kK; ++c) {
        const float v = x[r * kLdx + c];
        const float got = xq[r * kK + c];
        if (s == 0.0f) {
          EXPECT_EQ(got, 0.0f);
          continue;
        }
        EXPECT_EQ(got, std::nearbyint(got / s) * s);
        EXPECT_LE(std::fabs(got), 7.0f * s * (1 + 1e-6f));
        if (std::fabs(v) > 7.5f * s) {
          ++beyond;
          EXPECT_EQ(got, std::copysign(7.0f, v) * s);
        } else {
          EXPECT_LE(std::fabs(got - v), 0.5f * s * (1 + 1e-5f));
        }
      }
    }
    if (clip == 1.0f) {
      EXPECT_EQ(clipped, 0);
    }
    if (clip == 0.6f) {
      EXPECT_GE(clipped, kM - 1);  // every non-zero row's absmax at least
    }
    EXPECT_EQ(clipped, beyond);
    const LinearWeight w = with_spec(dense_weight(), a);
    EXPECT_TRUE(same_bits(run(pool, x, w), product(pool, want, w)));
    EXPECT_EQ(w.act_quant_counts().saturated, clipped);
  }
}

TEST(ActQuant, Int8PerTokenClipSaturatesTheRowsLargest) {
  ThreadPool pool(2);
  const std::vector<float> x = make_x(16, 1.0f);
  const ActivationQuant a{.kind = Kind::kInt8PerToken, .clip = 0.5f};
  int64_t want_clipped = 0;
  const std::vector<float> want = manual(a, x, nullptr, &want_clipped);
  std::vector<float> xq(static_cast<size_t>(kM * kK));
  int64_t clipped = 0;
  fake_quantize_activations(pool, a, x.data(), kLdx, kM, kK, xq.data(), &clipped);
  EXPECT_TRUE(same_bits(xq, want));
  EXPECT_EQ(clipped, want_clipped);
  EXPECT_GT(clipped, kM);  // half the absmax: several values per row beyond it
  // clip 1 is the unclipped scale bit for bit.
  const std::vector<float> one = manual({.kind = Kind::kInt8PerToken, .clip = 1.0f}, x);
  EXPECT_TRUE(same_bits(one, manual({.kind = Kind::kInt8PerToken}, x)));
}

TEST(ActQuant, PerTensorSaturatesBeyondTheStaticClip) {
  ThreadPool pool(3);
  const std::vector<float> x = make_x(6, 1.0f);
  const ActivationQuant a{.kind = Kind::kInt8PerTensor, .scale = 1.5f / 127.0f};  // clip at 1.5: ~13% beyond
  int64_t want_clipped = 0;
  const std::vector<float> want = manual(a, x, nullptr, &want_clipped);
  std::vector<float> xq(static_cast<size_t>(kM * kK));
  int64_t clipped = 0;
  fake_quantize_activations(pool, a, x.data(), kLdx, kM, kK, xq.data(), &clipped);
  EXPECT_TRUE(same_bits(xq, want));
  EXPECT_EQ(clipped, want_clipped);
  int64_t beyond = 0;
  for (int64_t r = 0; r < kM; ++r) {
    for (int64_t c = 0; c < kK; ++c) {
      const float v = x[r * kLdx + c];
      const float got = xq[r * kK + c];
      EXPECT_LE(std::fabs(got), 127.0f * a.scale);
      if (std::fabs(v) > 127.5f * a.scale) {
        ++beyond;
        EXPECT_EQ(got, std::copysign(127.0f, v) * a.scale);
      }
    }
  }
  EXPECT_GT(beyond, 20);
  EXPECT_EQ(clipped, beyond);  // no value lies within float rounding of 127.5 s here

  const LinearWeight w = with_spec(dense_weight(), a);
  EXPECT_TRUE(same_bits(run(pool, x, w), product(pool, want, w)));
  EXPECT_EQ(w.act_quant_counts().saturated, beyond);
}

TEST(ActQuant, LlmInt8KeepsOutlierColumnsExact) {
  ThreadPool pool(3);
  std::vector<float> x = make_x(7, 1.0f);
  for (float& v : x) v = std::clamp(v, -3.0f, 3.0f);
  x[2 * kLdx + 13] = 25.0f;    // outlier column 13 (one row is enough)
  x[9 * kLdx + 40] = -7.5f;    // outlier column 40
  x[5 * kLdx + 41] = 6.0f;     // exactly the threshold: not an outlier
  const ActivationQuant a{.kind = Kind::kLlmInt8, .threshold = 6.0f};
  int64_t want_outliers = 0;
  const std::vector<float> want = manual(a, x, &want_outliers);
  ASSERT_EQ(want_outliers, 2);
  std::vector<float> xq(static_cast<size_t>(kM * kK));
  EXPECT_EQ(fake_quantize_activations(pool, a, x.data(), kLdx, kM, kK, xq.data()), 2);
  EXPECT_TRUE(same_bits(xq, want));
  for (int64_t r = 0; r < kM; ++r) {
    EXPECT_EQ(xq[r * kK + 13], x[r * kLdx + 13]);
    EXPECT_EQ(xq[r * kK + 40], x[r * kLdx + 40]);
  }
  // Row 2's scale comes from its non-outlier columns (≤ 3), not from the 25: fine steps.
  float amax2 = 0.0f;
  for (int64_t c = 0; c < kK; ++c) {
    if (c != 13 && c != 40) amax2 = std::max(amax2, std::fabs(x[2 * kLdx + c]));
  }
  ASSERT_LE(amax2, 3.0f);
  for (int64_t c = 0; c < kK; ++c) {
    if (c == 13 || c == 40) continue;
    EXPECT_LE(std::fabs(xq[2 * kK + c] - x[2 * kLdx + c]), amax2 / 127.0f * 0.5f * (1 + 1e-5f));
  }
  // Column 41 (exactly 6) is quantized: row 5's 6.0 is its absmax, so it maps to 127 · s.
  EXPECT_EQ(xq[5 * kK + 41], 127.0f * (6.0f / 127.0f));

  const LinearWeight w = with_spec(dense_weight(), a);
  EXPECT_TRUE(same_bits(run(pool, x, w), product(pool, want, w)));
  const ActivationQuantCounts n = w.act_quant_counts();
  EXPECT_EQ(n.calls, 1);
  EXPECT_EQ(n.rows, kM);
  EXPECT_EQ(n.columns, kK);
  EXPECT_EQ(n.outlier_columns, 2);
}

TEST(ActQuant, CountersSumCallsAndWindowsAndReset) {
  ThreadPool pool(3);
  std::vector<float> x = make_x(8, 1.0f);
  for (float& v : x) v = std::clamp(v, -3.0f, 3.0f);
  x[0 * kLdx + 3] = 10.0f;  // an outlier in row 0 only
  const LinearWeight w = with_spec(dense_weight(), {.kind = Kind::kLlmInt8, .threshold = 6.0f});
  const LinearWeight copy = w;  // shares the counters
  // 16 "windows" from the pool, as eval runs them: rows 0..m (m = 1 + i % kM); window i sees the
  // outlier (row 0) always.
  int64_t want_rows = 0;
  for (int i = 0; i < 16; ++i) want_rows += 1 + i % kM;
  pool.parallel_for(0, 16, Grain{.min_items = 1}, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const int64_t m = 1 + static_cast<int64_t>(i) % kM;
      std::vector<float> y(static_cast<size_t>(m * kN));
      linear_nt(pool, x.data(), kLdx, m, i % 2 == 0 ? w : copy, y.data(), kN);
    }
  });
  ActivationQuantCounts n = w.act_quant_counts();
  EXPECT_EQ(n.calls, 16);
  EXPECT_EQ(n.rows, want_rows);
  EXPECT_EQ(n.columns, 16 * kK);
  EXPECT_EQ(n.outlier_columns, 16);
  EXPECT_EQ(copy.act_quant_counts(), n);
  // Rows 1.. only: no outliers.
  std::vector<float> y(static_cast<size_t>(kM * kN));
  linear_nt(pool, x.data() + kLdx, kLdx, kM - 1, w, y.data(), kN);
  n = w.act_quant_counts();
  EXPECT_EQ(n.calls, 17);
  EXPECT_EQ(n.outlier_columns, 16);
  w.reset_act_quant_counts();
  EXPECT_EQ(copy.act_quant_counts(), ActivationQuantCounts{});
  // A new spec gets its own counters; a plain weight reports zeros.
  LinearWeight other = w;
  other.set_act_quant({.kind = Kind::kInt8PerToken});
  linear_nt(pool, x.data(), kLdx, kM, other, y.data(), kN);
  EXPECT_EQ(other.act_quant_counts().calls, 1);
  EXPECT_EQ(other.act_quant_counts().outlier_columns, 0);
  EXPECT_EQ(w.act_quant_counts().calls, 0);
  other.set_act_quant({});
  linear_nt(pool, x.data(), kLdx, kM, other, y.data(), kN);
  EXPECT_EQ(other.act_quant_counts(), ActivationQuantCounts{});
}

TEST(ActQuant, NoneIsThePlainProductAndThreadsDoNotChangeBits) {
  ThreadPool one(1);
  ThreadPool three(3);
  std::vector<float> x = make_x(9, 1.5f);
  x[3 * kLdx + 7] = 30.0f;
  const Tensor dense = dense_weight();
  const QuantizedTensor q8 =
      QuantizedTensor::quantize(one, format_by_name("int8-pc-sym"), dense.f32(), kN, kK, {.tensor_name = "w"});
  for (const LinearWeight& base : {LinearWeight(dense), LinearWeight(q8)}) {
    SCOPED_TRACE(base.format_name());
    // kNone: exactly the plain product, also after a spec was set and cleared.
    LinearWeight cleared = with_spec(base, {.kind = Kind::kInt8PerToken});
    cleared.set_act_quant({});
    EXPECT_TRUE(same_bits(run(three, x, cleared), run(three, x, base)));
    for (const ActivationQuant& a : {ActivationQuant{.kind = Kind::kInt8PerToken},
                                     ActivationQuant{.kind = Kind::kInt4PerToken, .clip = 0.9f},
                                     ActivationQuant{.kind = Kind::kInt8PerTensor, .scale = 0.02f},
                                     ActivationQuant{.kind = Kind::kLlmInt8, .threshold = 4.0f}}) {
      SCOPED_TRACE(std::string(activation_quant_name(a.kind)));
      const LinearWeight w = with_spec(base, a);
      const std::vector<float> y1 = run(one, x, w);
      EXPECT_TRUE(same_bits(y1, run(three, x, w)));
      EXPECT_FALSE(same_bits(y1, run(one, x, base)));  // the quantization changed something
      // The weight as stored: the product is x̂ against the (dequantized) weight.
      EXPECT_TRUE(same_bits(y1, product(one, manual(a, x), base)));
    }
  }
}

TEST(ActQuant, NamesRoundTrip) {
  for (const Kind k : {Kind::kNone, Kind::kInt8PerToken, Kind::kInt8PerTensor, Kind::kLlmInt8, Kind::kInt4PerToken}) {
    EXPECT_EQ(activation_quant_by_name(activation_quant_name(k)), k);
  }
  EXPECT_EQ(activation_quant_name(Kind::kInt4PerToken), "int4-token");
  for (const float bad : {0.0f, -0.5f, 1.01f, NAN, INFINITY}) {
    EXPECT_FALSE((ActivationQuant{.kind = Kind::kInt4PerToken, .clip = bad}).valid()) << bad;
    EXPECT_FALSE((ActivationQuant{.kind = Kind::kInt8PerToken, .clip = bad}).valid()) << bad;
  }
  EXPECT_TRUE((ActivationQuant{.kind = Kind::kInt4PerToken, .clip = 1.0f}).valid());
  EXPECT_FALSE(activation_quant_by_name("int8").has_value());
  EXPECT_FALSE((ActivationQuant{.kind = Kind::kInt8PerTensor}).valid());  // scale 0
  EXPECT_FALSE((ActivationQuant{.kind = Kind::kLlmInt8, .threshold = -1.0f}).valid());
  EXPECT_FALSE((ActivationQuant{.kind = Kind::kInt8PerTensor, .scale = INFINITY}).valid());
}

// A tiny model with specs on a few weights, the (tied) head included.
Model tiny_with_specs(const std::filesystem::path& dir, ThreadPool& pool) {
  Model m = testutil::load_tiny_model(dir / "hf", {.tied = true}, pool);
  m.source.clear();
  m.layers[0].wq.set_act_quant({.kind = Kind::kInt8PerToken});
  m.layers[0].wk.set_act_quant({.kind = Kind::kInt4PerToken});
  m.layers[0].wv.set_act_quant({.kind = Kind::kInt4PerToken, .clip = 0.875f});
  m.layers[1].wo.set_act_quant({.kind = Kind::kInt8PerToken, .clip = 0.75f});
  m.layers[0].w_down.set_act_quant({.kind = Kind::kInt8PerTensor, .scale = 0.0123f});
  m.layers[1].w_up.set_act_quant({.kind = Kind::kLlmInt8, .threshold = 1.25f});
  m.output.set_act_quant({.kind = Kind::kLlmInt8, .threshold = 2.5f});
  return m;
}

TEST(ActQuantGguf, WriteReadKeepsTheSpec) {
  ThreadPool pool(2);
  const auto dir = calq::testing::temp_dir("act_quant_gguf");
  const Model m = tiny_with_specs(dir, pool);
  ASSERT_TRUE(m.output.same_storage(m.embedding));
  const auto out = dir / "aq.gguf";
  write_gguf_model(m, out, {}, pool);
  {
    const io::GgufFile file = io::GgufFile::open(out);
    EXPECT_TRUE(file.get(std::string(kCalqRequiresCalqKey)).as_bool("requires"));
    EXPECT_EQ(file.get(calq_act_quant_key("blk.0.attn_q.weight")).s, "int8-token");
    EXPECT_EQ(file.find(calq_act_quant_value_key("blk.0.attn_q.weight")), nullptr);
    EXPECT_EQ(file.get(calq_act_quant_key("blk.0.attn_k.weight")).s, "int4-token");
    EXPECT_EQ(file.find(calq_act_quant_value_key("blk.0.attn_k.weight")), nullptr);  // clip 1: no value
    EXPECT_EQ(file.get(calq_act_quant_value_key("blk.0.attn_v.weight")).f, 0.875);
    EXPECT_EQ(file.get(calq_act_quant_value_key("blk.1.attn_output.weight")).f, 0.75);
    EXPECT_EQ(file.get(calq_act_quant_key("blk.0.ffn_down.weight")).s, "int8-tensor");
    EXPECT_EQ(file.get(calq_act_quant_value_key("blk.0.ffn_down.weight")).f, static_cast<double>(0.0123f));
    EXPECT_EQ(file.get(calq_act_quant_key("output.weight")).s, "llm-int8");
    EXPECT_EQ(file.find_tensor("output.weight"), nullptr);
    EXPECT_EQ(file.find(calq_act_quant_key("blk.1.attn_q.weight")), nullptr);
  }
  const Model back = load_gguf_model(out, pool);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (TensorRole r : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut,
                         TensorRole::kMlpGate, TensorRole::kMlpUp, TensorRole::kMlpDown}) {
      EXPECT_EQ(back.layers[l].linear(r).act_quant(), m.layers[l].linear(r).act_quant()) << l << role_name(r);
    }
  }
  EXPECT_EQ(back.output.act_quant(), m.output.act_quant());
  EXPECT_FALSE(back.embedding.act_quant().enabled());
  EXPECT_TRUE(back.output.same_storage(back.embedding));
  // Same logits, activation quantization applied on both sides (and it does change them).
  const std::vector<int32_t> ids = testutil::test_token_ids(10, m.config.vocab_size);
  const Tensor a = forward(m, ids, pool);
  const Tensor b = forward(back, ids, pool);
  EXPECT_EQ(std::memcmp(a.f32(), b.f32(), a.nbytes()), 0);
  EXPECT_GT(back.layers[1].w_up.act_quant_counts().calls, 0);
  Model plain = back;
  for (LayerWeights& l : plain.layers) {
    for (TensorRole r : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut,
                         TensorRole::kMlpUp, TensorRole::kMlpDown}) {
      l.linear(r).set_act_quant({});
    }
  }
  plain.output.set_act_quant({});
  const Tensor c = forward(plain, ids, pool);
  EXPECT_NE(std::memcmp(a.f32(), c.f32(), a.nbytes()), 0);
  std::filesystem::remove_all(dir);
}

TEST(ActQuantGguf, LoaderRefusesMalformedKeys) {
  ThreadPool pool(2);
  const auto dir = calq::testing::temp_dir("act_quant_gguf_bad");
  const Model m = tiny_with_specs(dir, pool);
  const auto out = dir / "aq.gguf";
  write_gguf_model(m, out, {}, pool);
  const io::GgufFile good = io::GgufFile::open(out);
  const auto expect_refused = [&](const std::function<void(io::GgufMetadata&)>& edit, const std::string& key,
                                  const std::string& text) {
    io::GgufMetadata meta = good.metadata();
    edit(meta);
    const io::GgufFile bad =
        io::GgufFile::from_bytes(io::gguf_to_bytes(meta, io::gguf_write_tensors(good)), "bad.gguf");
    try {
      load_gguf_model(bad, pool);
      ADD_FAILURE() << "accepted; expected: " << text;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
      EXPECT_NE(msg.find(key), std::string::npos) << msg;
      EXPECT_NE(msg.find(text), std::string::npos) << msg;
    }
  };
  const auto set = [](const std::string& key, io::GgufValue v) {
    return [key, v](io::GgufMetadata& meta) {
      bool found = false;
      for (auto& kv : meta) {
        if (kv.first == key) kv.second = v, found = true;
      }
      if (!found) meta.emplace_back(key, v);
    };
  };
  const auto erase = [](const std::string& key) {
    return [key](io::GgufMetadata& meta) {
      std::erase_if(meta, [&](const auto& kv) { return kv.first == key; });
    };
  };
  const std::string down = "blk.0.ffn_down.weight";
  const std::string up = "blk.1.ffn_up.weight";
  expect_refused(set(calq_act_quant_key(down), io::GgufValue::of_string("int2-token")), calq_act_quant_key(down),
                 "'int2-token'");
  expect_refused(set(calq_act_quant_key(down), io::GgufValue::of_string("none")), calq_act_quant_key(down), "'none'");
  expect_refused(set(calq_act_quant_key(down), io::GgufValue::of_uint32(1)), calq_act_quant_key(down), "");
  expect_refused(erase(calq_act_quant_value_key(down)), calq_act_quant_value_key(down), "missing");
  expect_refused(erase(calq_act_quant_key(down)), calq_act_quant_value_key(down), "without");
  expect_refused(set(calq_act_quant_value_key(down), io::GgufValue::of_float32(-0.5f)), calq_act_quant_value_key(down),
                 "positive");
  expect_refused(set(calq_act_quant_value_key(up), io::GgufValue::of_float32(NAN)), calq_act_quant_value_key(up),
                 "positive");
  expect_refused(set(calq_act_quant_value_key(up), io::GgufValue::of_string("6")), calq_act_quant_value_key(up),
                 "float32");
  expect_refused(set(calq_act_quant_value_key("blk.0.attn_q.weight"), io::GgufValue::of_float32(1.5f)),
                 calq_act_quant_value_key("blk.0.attn_q.weight"), "a clip ratio in (0, 1]");
  expect_refused(set(calq_act_quant_value_key("blk.0.attn_v.weight"), io::GgufValue::of_float32(0.0f)),
                 calq_act_quant_value_key("blk.0.attn_v.weight"), "a clip ratio in (0, 1]");
  expect_refused(set(calq_act_quant_key("blk.7.ffn_up.weight"), io::GgufValue::of_string("int8-token")),
                 calq_act_quant_key("blk.7.ffn_up.weight"), "names no linear weight");
  expect_refused(set(calq_act_quant_key("blk.0.attn_norm.weight"), io::GgufValue::of_string("int8-token")),
                 calq_act_quant_key("blk.0.attn_norm.weight"), "names no linear weight");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
