#include "quant/awq.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "model/fold.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::quant {
namespace {

constexpr int64_t kIn = 256;
constexpr int64_t kTokens = 384;

// A layer whose input has a few salient channels (mean |x| ~25× the rest), and two consumers.
struct Layer {
  std::vector<float> x;  // [kTokens, kIn]
  std::vector<Tensor> w;
  std::vector<float> mean_abs;
  std::vector<double> hessian;
};

Layer make_layer(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  Layer l;
  std::vector<float> channel_scale(kIn, 1.0f);
  for (int64_t j : {3, 40, 41, 100, 170, 250}) channel_scale[static_cast<size_t>(j)] = 25.0f;
  l.x.resize(kTokens * kIn);
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t j = 0; j < kIn; ++j) l.x[t * kIn + j] = n01(rng) * channel_scale[static_cast<size_t>(j)];
  }
  for (int64_t rows : {48, 16}) {
    Tensor w = Tensor::zeros(DType::kF32, {rows, kIn});
    for (int64_t i = 0; i < rows * kIn; ++i) w.mutable_f32()[i] = 0.05f * n01(rng);
    l.w.push_back(std::move(w));
  }
  l.mean_abs.assign(kIn, 0.0f);
  l.hessian.assign(kIn * kIn, 0.0);
  std::vector<double> sum_abs(kIn, 0.0);
  for (int64_t t = 0; t < kTokens; ++t) {
    const float* r = l.x.data() + t * kIn;
    for (int64_t i = 0; i < kIn; ++i) {
      sum_abs[static_cast<size_t>(i)] += std::abs(r[i]);
      for (int64_t j = 0; j < kIn; ++j) l.hessian[static_cast<size_t>(i * kIn + j)] += double(r[i]) * double(r[j]);
    }
  }
  for (int64_t i = 0; i < kIn; ++i) l.mean_abs[static_cast<size_t>(i)] = float(sum_abs[static_cast<size_t>(i)] / kTokens);
  return l;
}

std::vector<const Tensor*> pointers(const std::vector<Tensor>& w) {
  std::vector<const Tensor*> p;
  for (const auto& t : w) p.push_back(&t);
  return p;
}

std::vector<float> round_trip(const Format& f, const Tensor& w, ThreadPool& pool) {
  std::vector<std::byte> bytes(f.tensor_bytes(w.dim(0), w.dim(1)));
  f.quantize(pool, w.f32(), w.dim(0), w.dim(1), bytes);
  std::vector<float> out(static_cast<size_t>(w.numel()));
  f.dequantize(pool, bytes.data(), w.dim(0), w.dim(1), out.data());
  return out;
}

// ‖(X / s) · Qᵀ − X · Wᵀ‖² straight from the activations, Q the RTN round trip of `scaled`.
double output_error(const Layer& l, const std::vector<Tensor>& scaled, const std::vector<float>& s,
                    const Format& f, ThreadPool& pool) {
  double err = 0;
  for (size_t k = 0; k < scaled.size(); ++k) {
    const std::vector<float> q = round_trip(f, scaled[k], pool);
    const float* w = l.w[k].f32();
    for (int64_t t = 0; t < kTokens; ++t) {
      const float* x = l.x.data() + t * kIn;
      for (int64_t r = 0; r < scaled[k].dim(0); ++r) {
        double yq = 0, y = 0;
        for (int64_t j = 0; j < kIn; ++j) {
          yq += double(x[j]) / double(s[static_cast<size_t>(j)]) * double(q[static_cast<size_t>(r * kIn + j)]);
          y += double(x[j]) * double(w[r * kIn + j]);
        }
        err += (yq - y) * (yq - y);
      }
    }
  }
  return err;
}

TEST(Awq, BeatsRoundToNearestOnSalientChannels) {
  ThreadPool pool(2);
  const Layer l = make_layer(1);
  const auto ptrs = pointers(l.w);
  for (const char* name : {"int4-g128-asym", "int3-g128-asym"}) {
    const Format& f = format_by_name(name);
    const AwqResult r = awq_search(ptrs, l.mean_abs, l.hessian, f, nullptr, {.tensor_name = name}, pool);
    const std::vector<float> ones(kIn, 1.0f);
    const double rtn_direct = output_error(l, l.w, ones, f, pool);
    EXPECT_NEAR(r.error_rtn, rtn_direct, 1e-6 * rtn_direct) << name;
    EXPECT_GT(r.alpha, 0.0) << name;
    EXPECT_LT(r.error_scaled, 0.8 * r.error_rtn) << name;
    EXPECT_LE(r.error_clipped, r.error_scaled) << name;
    // The returned (clipped, scaled) weights, quantized with RTN and run on x/s, have that error.
    ASSERT_EQ(r.weights.size(), 2u);
    const double direct = output_error(l, r.weights, r.scales, f, pool);
    EXPECT_NEAR(r.error_clipped, direct, 1e-6 * direct) << name;
    // Salient channels got the largest scales.
    EXPECT_GT(r.scales[3], r.scales[4]) << name;
    std::printf("%s: alpha %.2f  rtn %.4g  scaled %.4g (%.3f)  clipped %.4g (%.3f)\n", name, r.alpha, r.error_rtn,
                r.error_scaled, r.error_scaled / r.error_rtn, r.error_clipped, r.error_clipped / r.error_rtn);
  }
}

TEST(Awq, AlphaZeroIsRoundToNearest) {
  ThreadPool pool(2);
  const Layer l = make_layer(2);
  const auto ptrs = pointers(l.w);
  const Format& f = format_by_name("int4-g128-asym");
  const AwqResult r = awq_search(ptrs, l.mean_abs, l.hessian, f, nullptr, {.grid = 1, .clip = false}, pool);
  EXPECT_EQ(r.alpha, 0.0);
  for (const float s : r.scales) ASSERT_EQ(s, 1.0f);
  for (size_t k = 0; k < 2; ++k) {
    ASSERT_EQ(r.weights[k].shape(), l.w[k].shape());
    EXPECT_EQ(std::memcmp(r.weights[k].data(), l.w[k].data(), l.w[k].nbytes()), 0);
  }
  EXPECT_EQ(r.error_scaled, r.error_rtn);
  EXPECT_EQ(r.error_clipped, r.error_rtn);
  // The objective is the plain RTN error, computed here independently.
  double expect = 0;
  for (size_t k = 0; k < 2; ++k) {
    const std::vector<float> q = round_trip(f, l.w[k], pool);
    expect += hessian_weighted_error(q.data(), l.w[k].f32(), l.w[k].dim(0), kIn, l.hessian, pool);
  }
  EXPECT_EQ(r.error_rtn, expect);
  // The full search starts from exactly that point.
  const AwqResult full = awq_search(ptrs, l.mean_abs, l.hessian, f, nullptr, {}, pool);
  EXPECT_EQ(full.error_rtn, r.error_rtn);
}

TEST(Awq, ClipSearchNeverIncreasesTheError) {
  ThreadPool pool(2);
  const Layer l = make_layer(3);
  const auto ptrs = pointers(l.w);
  for (const char* name : {"int4-g128-asym", "int3-g128-asym", "int4-g32-sym", "int4-pc-sym", "nf4", "q4_k"}) {
    const Format& f = format_by_name(name);
    const AwqResult r = awq_search(ptrs, l.mean_abs, l.hessian, f, nullptr, {.tensor_name = name}, pool);
    EXPECT_LE(r.error_clipped, r.error_scaled) << name;
    EXPECT_LE(r.error_scaled, r.error_rtn) << name;
    const double direct = output_error(l, r.weights, r.scales, f, pool);
    EXPECT_NEAR(r.error_clipped, direct, 1e-6 * direct) << name;
    std::printf("%s: alpha %.2f  scaled/rtn %.3f  clipped/rtn %.3f\n", name, r.alpha, r.error_scaled / r.error_rtn,
                r.error_clipped / r.error_rtn);
  }
}

TEST(Awq, ThreadCountDoesNotChangeTheResult) {
  ThreadPool one(1), three(3);
  const Layer l = make_layer(4);
  const auto ptrs = pointers(l.w);
  const Format& f = format_by_name("int3-g128-asym");
  std::vector<float> importance(kIn);
  for (int64_t j = 0; j < kIn; ++j) importance[static_cast<size_t>(j)] = l.mean_abs[static_cast<size_t>(j)] + 0.5f;
  const AwqResult a = awq_search(ptrs, l.mean_abs, l.hessian, f, importance.data(), {}, one);
  const AwqResult b = awq_search(ptrs, l.mean_abs, l.hessian, f, importance.data(), {}, three);
  EXPECT_EQ(a.alpha, b.alpha);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.error_rtn, b.error_rtn);
  EXPECT_EQ(a.error_scaled, b.error_scaled);
  EXPECT_EQ(a.error_clipped, b.error_clipped);
  EXPECT_EQ(a.importance, b.importance);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (size_t k = 0; k < a.weights.size(); ++k) {
    EXPECT_EQ(std::memcmp(a.weights[k].data(), b.weights[k].data(), a.weights[k].nbytes()), 0);
  }
  // The importance handed back is the input's, seen through the scaled input x / s.
  ASSERT_EQ(a.importance.size(), static_cast<size_t>(kIn));
  for (int64_t j = 0; j < kIn; ++j) {
    const float s = a.scales[static_cast<size_t>(j)];
    EXPECT_FLOAT_EQ(a.importance[static_cast<size_t>(j)], importance[static_cast<size_t>(j)] / (s * s));
  }
}

TEST(Awq, RejectsBadInput) {
  ThreadPool pool(1);
  const Layer l = make_layer(5);
  const auto ptrs = pointers(l.w);
  const Format& f = format_by_name("int4-g128-asym");
  const auto expect_error = [&](const std::function<void()>& fn) {
    try {
      fn();
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.0.ffn"), std::string::npos) << e.what();
    }
  };
  const AwqOptions o{.tensor_name = "blk.0.ffn"};
  std::vector<float> mean = l.mean_abs;
  mean[7] = -1.0f;
  expect_error([&] { awq_search(ptrs, mean, l.hessian, f, nullptr, o, pool); });
  expect_error([&] { awq_search(ptrs, l.mean_abs, std::span(l.hessian).first(100), f, nullptr, o, pool); });
  std::vector<double> h = l.hessian;
  h[5] = std::nan("");
  expect_error([&] { awq_search(ptrs, l.mean_abs, h, f, nullptr, o, pool); });
  expect_error([&] {
    awq_search(ptrs, std::span(l.mean_abs).first(128), std::span(l.hessian).first(128 * 128), f, nullptr, o, pool);
  });
  expect_error([&] {
    awq_search(ptrs, l.mean_abs, l.hessian, f, nullptr, {.grid = 0, .tensor_name = "blk.0.ffn"}, pool);
  });
}

// The caller's flow on a real layer: statistics from the forward pass, AWQ on the gate/up group,
// the scales folded into mlp_norm. Unclipped, the folded consumers are the result's weights bit
// for bit, and the folded float model still computes the same logits.
TEST(Awq, FoldedScalesMatchTheResultOnATinyModel) {
  ThreadPool pool(2);
  model::Model m = model::testutil::load_tiny_model(testing::temp_dir("awq_fold"), {.tied = true}, pool);
  const int64_t h = m.config.hidden_size;
  const auto ids = model::testutil::test_token_ids(40, m.config.vocab_size);
  std::vector<double> sum_abs(static_cast<size_t>(h), 0.0), hess(static_cast<size_t>(h * h), 0.0);
  int64_t rows = 0;
  const model::LinearHook hook = [&](const model::LinearInput& in) {
    if (in.layer != 0 || in.role != model::TensorRole::kMlpGate) return;
    rows += in.rows;
    for (int64_t t = 0; t < in.rows; ++t) {
      const float* x = in.x + t * h;
      for (int64_t i = 0; i < h; ++i) {
        sum_abs[static_cast<size_t>(i)] += std::abs(x[i]);
        for (int64_t j = 0; j < h; ++j) hess[static_cast<size_t>(i * h + j)] += double(x[i]) * double(x[j]);
      }
    }
  };
  const Tensor logits = model::forward(m, ids, pool, &hook);
  ASSERT_EQ(rows, 40);
  std::vector<float> mean_abs(static_cast<size_t>(h));
  for (int64_t i = 0; i < h; ++i) mean_abs[static_cast<size_t>(i)] = float(sum_abs[static_cast<size_t>(i)] / rows);
  const std::vector<const Tensor*> ws = {&m.layers[0].w_gate.dense(), &m.layers[0].w_up.dense()};
  const AwqResult r = awq_search(ws, mean_abs, hess, format_by_name("int4-g32-asym"), nullptr,
                                 {.clip = false, .tensor_name = "layer 0 mlp"}, pool);
  EXPECT_LE(r.error_scaled, r.error_rtn);
  ASSERT_GT(r.alpha, 0.0) << "the bit-for-bit check below needs scales other than 1";
  std::printf("tiny gate/up: alpha %.2f scaled/rtn %.3f\n", r.alpha, r.error_scaled / r.error_rtn);
  model::fold_input_scales(m.layers[0], m.config, 0, model::TensorRole::kMlpGate, r.scales);
  EXPECT_EQ(std::memcmp(m.layers[0].w_gate.dense().data(), r.weights[0].data(), r.weights[0].nbytes()), 0);
  EXPECT_EQ(std::memcmp(m.layers[0].w_up.dense().data(), r.weights[1].data(), r.weights[1].nbytes()), 0);
  const Tensor folded = model::forward(m, ids, pool);
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < logits.numel(); ++i) {
    diff = std::max(diff, double(std::abs(logits.f32()[i] - folded.f32()[i])));
    scale = std::max(scale, double(std::abs(logits.f32()[i])));
  }
  EXPECT_LE(diff, 1e-4 * scale);
}

}  // namespace
}  // namespace calq::quant
