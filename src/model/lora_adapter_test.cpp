// LoraAdapter: make()'s checks, apply() against its double-precision twin, and a tiny model with
// adapters (dense and quantized base) against the same model with the adapters merged into its
// weights — full forward and incremental decoding, same bits for any thread count.
#include "model/lora_adapter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "model/decode.h"
#include "model/fold.h"
#include "model/forward.h"
#include "model/rotate.h"
#include "model/site_transform.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

using calq::testing::error_of;

Tensor random_tensor(const Shape& shape, float sigma, uint32_t seed) {
  Tensor t = Tensor::zeros(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_f32()[i] = d(rng);
  return t;
}

LoraAdapter random_adapter(int64_t in, int64_t out, int64_t rank, double alpha, uint32_t seed) {
  // B is drawn non-zero (PEFT initialises it to zero, which would make every test below vacuous).
  return LoraAdapter::make(random_tensor({rank, in}, 0.3f, seed), random_tensor({out, rank}, 0.3f, seed + 1), alpha,
                           in, out, "test adapter");
}

TEST(LoraAdapter, MakeChecksShapesValuesAndAlpha) {
  const int64_t in = 6, out = 5, r = 2;
  const Tensor a = random_tensor({r, in}, 1, 1), b = random_tensor({out, r}, 1, 2);
  const LoraAdapter ok = LoraAdapter::make(a, b, 4.0, in, out, "layer 0 attn_q adapter");
  EXPECT_EQ(ok.rank(), r);
  EXPECT_EQ(ok.in(), in);
  EXPECT_EQ(ok.out(), out);
  EXPECT_FLOAT_EQ(ok.scale(), 2.0f);
  EXPECT_EQ(ok.nbytes(), static_cast<uint64_t>((r * in + out * r) * 4));

  ErrorKind kind{};
  const auto bad = [&](Tensor ta, Tensor tb, double alpha) {
    return error_of([&] { LoraAdapter::make(std::move(ta), std::move(tb), alpha, in, out, "layer 3 mlp_down adapter"); },
                    &kind);
  };
  const auto expect_error = [&](const std::string& msg, const char* needle) {
    EXPECT_EQ(msg.rfind("layer 3 mlp_down adapter:", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  };
  expect_error(bad(random_tensor({r, in + 1}, 1, 3), b, 1), "A is [2, 7]");             // A's in
  expect_error(bad(a, random_tensor({out + 1, r}, 1, 3), 1), "B is [6, 2]");            // B's out
  expect_error(bad(a, random_tensor({out, r + 1}, 1, 3), 1), "B is [5, 3]");            // ranks differ
  expect_error(bad(Tensor::zeros(DType::kF32, {0, in}), Tensor::zeros(DType::kF32, {out, 0}), 1), "A is [0, 6]");
  expect_error(bad(random_tensor({r * in}, 1, 3), b, 1), "A is [12]");                  // not a matrix
  expect_error(bad(Tensor::zeros(DType::kF16, {r, in}), b, 1), "float32");
  for (const double alpha : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()})
    expect_error(bad(a, b, alpha), "alpha");
  Tensor nan_a = random_tensor({r, in}, 1, 4);
  nan_a.mutable_f32()[7] = std::nanf("");
  expect_error(bad(nan_a, b, 1), "A[7] is not finite");
  Tensor inf_b = random_tensor({out, r}, 1, 5);
  inf_b.mutable_f32()[3] = -std::numeric_limits<float>::infinity();
  expect_error(bad(a, inf_b, 1), "B[3] is not finite");
}

// apply (float32, sgemm) against apply_reference (double accumulation), on top of a non-zero y.
// The bound is the classical one for float32 dot products (Higham, Accuracy and Stability, §3.1):
// |fl(Σ uᵢvᵢ) − Σ uᵢvᵢ| ≤ γ_n Σ|uᵢvᵢ|, γ_n = n·u/(1 − n·u), u = 2⁻²⁴; here two chained products
// (n = in, then rank + the accumulation into y and the scaling), so the error of each output is at
// most γ_{in + rank + 3} times the same expression on absolute values.
TEST(LoraAdapter, ApplyMatchesDoubleReference) {
  const int64_t in = 67, out = 29, r = 5, rows = 11;
  const LoraAdapter ad = random_adapter(in, out, r, 12.0, 7);
  const Tensor x = random_tensor({rows, in}, 1.0f, 9);
  const Tensor y0 = random_tensor({rows, out}, 1.0f, 10);
  std::vector<float> fast(y0.f32(), y0.f32() + y0.numel()), ref = fast, fast1 = fast;
  ThreadPool pool(2), one(1);
  ad.apply(pool, x.f32(), rows, fast.data());
  ad.apply(one, x.f32(), rows, fast1.data());
  ad.apply_reference(x.f32(), rows, ref.data());
  EXPECT_EQ(std::memcmp(fast.data(), fast1.data(), fast.size() * sizeof(float)), 0) << "1 vs 2 threads";

  const double u = std::ldexp(1.0, -24), n = static_cast<double>(in + r + 3);
  const double gamma = n * u / (1 - n * u);
  double max_change = 0;
  for (int64_t i = 0; i < rows; ++i) {
    std::vector<double> t(static_cast<size_t>(r));
    for (int64_t k = 0; k < r; ++k)
      for (int64_t c = 0; c < in; ++c) t[static_cast<size_t>(k)] += std::abs(x.f32()[i * in + c] * ad.a().f32()[k * in + c]);
    for (int64_t o = 0; o < out; ++o) {
      double abs_sum = std::abs(y0.f32()[i * out + o]);
      for (int64_t k = 0; k < r; ++k) abs_sum += ad.scale() * t[static_cast<size_t>(k)] * std::abs(ad.b().f32()[o * r + k]);
      const size_t idx = static_cast<size_t>(i * out + o);
      EXPECT_LE(std::abs(static_cast<double>(fast[idx]) - ref[idx]), gamma * abs_sum + u * std::abs(ref[idx]))
          << "row " << i << " out " << o;
      max_change = std::max(max_change, std::abs(static_cast<double>(ref[idx]) - y0.f32()[idx]));
    }
  }
  EXPECT_GT(max_change, 1.0);  // the adapter's term is not negligible
}

// The roles the model tests put adapters on (query projection: GQA-wide input; down: the
// intermediate width), with their ranks.
struct AdapterSpec {
  int64_t layer;
  TensorRole role;
  int64_t rank;
};
const AdapterSpec kSpecs[] = {{0, TensorRole::kAttnQ, 4}, {1, TensorRole::kAttnQ, 4}, {0, TensorRole::kMlpDown, 3},
                              {1, TensorRole::kAttnV, 2}};

void add_adapters(Model& m, uint32_t seed) {
  for (const AdapterSpec& s : kSpecs) {
    LayerWeights& l = m.layers[static_cast<size_t>(s.layer)];
    const LinearWeight& w = l.linear(s.role);
    l.adapter_slot(s.role) = random_adapter(w.cols(), w.rows(), s.rank, 2.0 * static_cast<double>(s.rank), seed++);
  }
}

// A copy of `m` without adapters whose weights are W + scale·B·A (the base dequantized first),
// computed in double and rounded once to float32.
Model merged_copy(const Model& m, ThreadPool& pool) {
  Model out = m;
  for (LayerWeights& l : out.layers) {
    for (const TensorRole role : kLayerLinearRoles) {
      const LoraAdapter* ad = l.adapter(role);
      if (ad == nullptr) continue;
      const Tensor w = l.linear(role).to_dense(pool);
      Tensor merged = Tensor::zeros(DType::kF32, w.shape());
      const int64_t r = ad->rank(), in = ad->in();
      for (int64_t o = 0; o < ad->out(); ++o) {
        for (int64_t c = 0; c < in; ++c) {
          double acc = 0;
          for (int64_t k = 0; k < r; ++k) acc += static_cast<double>(ad->b().f32()[o * r + k]) * ad->a().f32()[k * in + c];
          merged.mutable_f32()[o * in + c] =
              static_cast<float>(static_cast<double>(w.f32()[o * in + c]) + static_cast<double>(ad->scale()) * acc);
        }
      }
      l.linear(role) = LinearWeight(std::move(merged));
      l.adapter_slot(role).reset();
    }
  }
  return out;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d = std::max(d, static_cast<double>(std::abs(a.f32()[i] - b.f32()[i])));
  return d;
}

double max_abs(const Tensor& a) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d = std::max(d, static_cast<double>(std::abs(a.f32()[i])));
  return d;
}

// forward(adapted) against forward(merged): the same function, summed in another order. The bound
// is the one tiny_model_test holds forward to against the double-precision naive forward (5e-5 on
// logits of magnitude ~1–5), since both sides here are such float32 evaluations.
void expect_adapted_equals_merged(const Model& adapted, ThreadPool& pool) {
  ASSERT_TRUE(adapted.has_adapters());
  const Model merged = merged_copy(adapted, pool);
  ASSERT_FALSE(merged.has_adapters());
  Model base = adapted;
  for (LayerWeights& l : base.layers)
    for (auto& a : l.adapters) a.reset();
  const auto ids = testutil::test_token_ids(13, adapted.config.vocab_size);
  const Tensor ya = forward(adapted, ids, pool), ym = forward(merged, ids, pool), yb = forward(base, ids, pool);
  EXPECT_GT(max_abs(ya), 0.5);
  EXPECT_LT(max_abs_diff(ya, ym), 5e-5);
  // The adapters change the logits far beyond that bound (a forward that skipped them would fail).
  EXPECT_GT(max_abs_diff(ya, yb), 0.05);
  const auto naive = testutil::naive_forward(merged, ids);
  double naive_err = 0;
  for (size_t i = 0; i < naive.size(); ++i) naive_err = std::max(naive_err, std::abs(ya.f32()[i] - naive[i]));
  EXPECT_LT(naive_err, 5e-5);
}

TEST(LoraAdapter, ModelForwardEqualsMergedWeightsDenseBase) {
  ThreadPool pool(2);
  Model m = testutil::load_tiny_model(testing::temp_dir("lora_dense"), {.tied = false}, pool);
  add_adapters(m, 20);
  expect_adapted_equals_merged(m, pool);
}

TEST(LoraAdapter, ModelForwardEqualsMergedWeightsQuantizedBaseQwen2) {
  ThreadPool pool(2);
  Model m = testutil::load_tiny_model(testing::temp_dir("lora_quant"), {.model_type = "qwen2"}, pool);
  const Format& f = format_by_name("int4-pc-sym");
  for (LayerWeights& l : m.layers) {
    for (const TensorRole role : kLayerLinearRoles) {
      const Tensor d = l.linear(role).dense();
      l.linear(role) = QuantizedTensor::quantize(pool, f, d.f32(), d.dim(0), d.dim(1));
    }
  }
  add_adapters(m, 40);
  ASSERT_TRUE(m.layers[0].wq.is_quantized());
  expect_adapted_equals_merged(m, pool);
}

// merge_adapters (float32 matmul_nn) against merged_copy (double), weight by weight: each element
// is a float32 dot product of length rank added to W, so |error| ≤ γ_{rank+2}·(|W| + scale·Σ|B||A|)
// (Higham §3.1; one more u for the scaling of B). The base is quantized (int4-pc-sym), and a
// copy sharing its storage keeps its weights and adapters.
TEST(LoraAdapter, MergeAdaptersFoldsEveryAdapter) {
  ThreadPool pool(2), one(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("lora_merge"), {.tied = true}, pool);
  const Format& f = format_by_name("int4-pc-sym");
  for (LayerWeights& l : m.layers) {
    const Tensor d = l.wq.dense();
    l.wq = QuantizedTensor::quantize(pool, f, d.f32(), d.dim(0), d.dim(1));
  }
  add_adapters(m, 120);
  const Model want = merged_copy(m, pool);
  Model merged = m, merged1 = m;
  merge_adapters(merged, pool);
  merge_adapters(merged1, one);
  EXPECT_FALSE(merged.has_adapters());
  EXPECT_TRUE(m.has_adapters());
  EXPECT_TRUE(m.layers[0].wq.is_quantized());
  const double u = std::ldexp(1.0, -24);
  for (const AdapterSpec& s : kSpecs) {
    const LayerWeights& l = m.layers[static_cast<size_t>(s.layer)];
    const LoraAdapter& ad = *l.adapter(s.role);
    const Tensor base = l.linear(s.role).to_dense(pool);
    const Tensor& got = merged.layers[static_cast<size_t>(s.layer)].linear(s.role).dense();
    const Tensor& got1 = merged1.layers[static_cast<size_t>(s.layer)].linear(s.role).dense();
    const Tensor& ref = want.layers[static_cast<size_t>(s.layer)].linear(s.role).dense();
    EXPECT_EQ(std::memcmp(got.data(), got1.data(), got.nbytes()), 0) << "1 vs 2 threads";
    const double gamma = (s.rank + 3) * u / (1 - (s.rank + 3) * u);
    for (int64_t o = 0; o < ad.out(); ++o) {
      for (int64_t c = 0; c < ad.in(); ++c) {
        double abs_sum = 0;
        for (int64_t k = 0; k < s.rank; ++k) abs_sum += std::abs(ad.b().f32()[o * s.rank + k] * ad.a().f32()[k * ad.in() + c]);
        const int64_t i = o * ad.in() + c;
        ASSERT_LE(std::abs(got.f32()[i] - ref.f32()[i]),
                  gamma * (std::abs(base.f32()[i]) + ad.scale() * abs_sum) + u * std::abs(ref.f32()[i]))
            << "layer " << s.layer << " " << role_name(s.role) << " [" << o << ", " << c << "]";
      }
    }
  }
  // Untouched linears keep their storage.
  EXPECT_TRUE(merged.layers[0].wk.dense().data() == m.layers[0].wk.dense().data());
  const auto ids = testutil::test_token_ids(11, m.config.vocab_size);
  EXPECT_LT(max_abs_diff(forward(merged, ids, pool), forward(m, ids, pool)), 5e-5);
}

TEST(LoraAdapter, StorageBytesCountAdapters) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("lora_bytes"), {.tied = true}, pool);
  const uint64_t before = m.storage_bytes();
  const int64_t params = m.parameter_count();
  add_adapters(m, 60);
  uint64_t adapter_bytes = 0;
  for (const AdapterSpec& s : kSpecs) {
    const LinearWeight& w = m.layers[static_cast<size_t>(s.layer)].linear(s.role);
    adapter_bytes += static_cast<uint64_t>(4 * s.rank * (w.rows() + w.cols()));
  }
  EXPECT_EQ(m.storage_bytes(), before + adapter_bytes);
  EXPECT_EQ(m.parameter_count(), params);
}

TEST(LoraAdapter, SameBitsForAnyThreadCount) {
  ThreadPool one(1), two(2);
  Model m = testutil::load_tiny_model(testing::temp_dir("lora_threads"), {.tied = true}, one);
  add_adapters(m, 80);
  const auto ids = testutil::test_token_ids(17, m.config.vocab_size);
  const Tensor a = forward(m, ids, one), b = forward(m, ids, two);
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);

  const int64_t V = m.config.vocab_size, T = 6;
  DecodeCache ca(m.config, 2, T), cb(m.config, 2, T);
  std::vector<float> la(static_cast<size_t>(2 * V)), lb(la.size());
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<int32_t> step = {ids[static_cast<size_t>(t)], ids[static_cast<size_t>(t + T)]};
    decode_step(m, step, ca, la.data(), one);
    decode_step(m, step, cb, lb.data(), two);
    ASSERT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0) << "step " << t;
  }
}

// Decoding token by token with adapters gives the full forward's logits (decode_test's bound).
TEST(LoraAdapter, DecodeMatchesForward) {
  ThreadPool pool(2);
  Model m = testutil::load_tiny_model(testing::temp_dir("lora_decode"), {.model_type = "mistral", .sliding_window = 5},
                                      pool);
  add_adapters(m, 100);
  const int64_t V = m.config.vocab_size, T = 12;
  std::vector<std::vector<int32_t>> seqs = {testutil::test_token_ids(T, V), testutil::test_token_ids(T + 3, V)};
  seqs[1].erase(seqs[1].begin(), seqs[1].begin() + 3);
  std::vector<Tensor> full;
  for (const auto& s : seqs) full.push_back(forward(m, s, pool));
  DecodeCache cache(m.config, 2, T);
  std::vector<float> logits(static_cast<size_t>(2 * V));
  double max_err = 0, max_val = 0;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<int32_t> ids = {seqs[0][static_cast<size_t>(t)], seqs[1][static_cast<size_t>(t)]};
    decode_step(m, ids, cache, logits.data(), pool);
    for (int64_t b = 0; b < 2; ++b) {
      const float* want = full[static_cast<size_t>(b)].f32() + t * V;
      for (int64_t i = 0; i < V; ++i) {
        max_err = std::max(max_err, static_cast<double>(std::abs(logits[static_cast<size_t>(b * V + i)] - want[i])));
        max_val = std::max(max_val, static_cast<double>(std::abs(want[i])));
      }
    }
  }
  EXPECT_GT(max_val, 0.1);
  EXPECT_LT(max_err, 2e-5 * std::max(1.0, max_val));
}

// Operations that rewrite a linear's weights for a changed input or output basis would leave its
// adapter computing the old function: they refuse, and change nothing.
TEST(LoraAdapter, FoldRotateAndTransformsRefuseAdaptedLinears) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("lora_refuse"), {.tied = false}, pool);
  const int64_t h = m.config.hidden_size;
  const std::vector<float> s(static_cast<size_t>(h), 2.0f);
  Model q = m;  // an adapter on a consumer of attn_in (q, k, v)
  q.layers[0].adapter_slot(TensorRole::kAttnK) = random_adapter(h, m.config.kv_dim(), 2, 2, 1);
  const Model before = q;
  ErrorKind kind{};
  std::string msg = error_of([&] { fold_input_scales(q.layers[0], q.config, 0, InputSite::kAttnIn, s); }, &kind);
  EXPECT_NE(msg.find("LoRA adapter"), std::string::npos) << msg;
  EXPECT_NE(msg.find("attn_in"), std::string::npos) << msg;
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_TRUE(q.layers[0].wq.dense().data() == before.layers[0].wq.dense().data());  // unchanged
  EXPECT_TRUE(q.layers[0].attn_norm.data() == before.layers[0].attn_norm.data());
  // Another site of the same layer folds.
  fold_input_scales(q.layers[0], q.config, 0, InputSite::kMlpIn, s);

  // An adapter on a linear producer: mlp_down's scales fold into the rows of up.
  Model up = m;
  up.layers[1].adapter_slot(TensorRole::kMlpUp) = random_adapter(h, m.config.intermediate_size, 2, 2, 3);
  const std::vector<float> si(static_cast<size_t>(m.config.intermediate_size), 2.0f);
  msg = error_of([&] { fold_input_scales(up.layers[1], up.config, 1, InputSite::kMlpDown, si); });
  EXPECT_NE(msg.find("LoRA adapter"), std::string::npos) << msg;
  msg = error_of([&] { fold_into_producer(up.layers[1], up.config, 1, InputSite::kMlpDown, si); });
  EXPECT_NE(msg.find("LoRA adapter"), std::string::npos) << msg;

  msg = error_of([&] { rotate_model(q, {}, pool); }, &kind);
  EXPECT_NE(msg.find("LoRA adapters"), std::string::npos) << msg;
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_FALSE(q.config.rotation.has_value());

  msg = error_of([&] {
    set_site_transform(q, 0, InputSite::kAttnIn, KronTransform::identity(kron_factors(h)), pool);
  });
  EXPECT_NE(msg.find("LoRA adapter"), std::string::npos) << msg;
  EXPECT_FALSE(q.layers[0].has_transforms());
}

}  // namespace
}  // namespace calq::model
