// Test fixture of the layer-reconstruction methods (qat-block, autoround): layer 0 of the tiny model
// (hidden 32, intermediate 48) quantized by round to nearest, embedding inputs, the float layer's
// outputs as targets; and the check that what a method wrote is what it trained (issue 17 item 7).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "formats/format.h"
#include "grad/loss.h"
#include "grad/model_grad.h"
#include "model/architecture.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "quant/method.h"
#include "support/shared_dir.h"

namespace calq::quant::testutil {

using model::TensorRole;

inline constexpr int64_t kSeq = 16, kSamples = 4;

inline const model::Model& tiny_model() {
  static const model::Model m = [] {
    ThreadPool pool(2);
    return model::testutil::load_tiny_model(calq::testing::temp_dir("reconstruction"), {.tied = true, .layers = 1}, pool);
  }();
  return m;
}

// A layer-0 reconstruction problem: RTN start in `family`'s format (a group format where the row
// length allows), embedding inputs, the float layer's outputs as targets.
struct Problem {
  model::LayerWeights original, quantized;
  std::vector<ReconstructionLinear> linears;
  std::vector<std::string> names;
  std::vector<float> inputs, targets;

  LayerReconstructionTarget target(const model::Model& m) const {
    return {.layer = 0, .config = &m.config, .original = &original, .quantized = &quantized, .linears = linears,
            .samples = kSamples, .seq_len = kSeq, .inputs = inputs, .targets = targets};
  }
};

inline Problem make_problem(const std::string& group_format, const std::string& row_format, ThreadPool& pool) {
  const model::Model& m = tiny_model();
  Problem p;
  p.original = m.layers[0];
  p.quantized = m.layers[0];
  p.names.reserve(7);
  for (const TensorRole role : model::kLayerLinearRoles) {
    const model::LinearWeight& w = p.original.linear(role);
    const Format& g = format_by_name(group_format);
    const Format& f = g.can_store(w.rows(), w.cols()) ? g : format_by_name(row_format);
    p.names.push_back(model::gguf_tensor_name(*m.arch, role, 0));
    p.linears.push_back({.role = role, .format = &f, .name = p.names.back()});
    p.quantized.linear(role) = QuantizedTensor::quantize(pool, f, w.dense().f32(), w.rows(), w.cols());
  }
  const int64_t hs = m.config.hidden_size;
  const std::vector<int32_t> ids = model::testutil::test_token_ids(kSeq * kSamples, m.config.vocab_size);
  p.inputs.resize(static_cast<size_t>(kSeq * kSamples * hs));
  for (int64_t s = 0; s < kSamples; ++s)
    model::embed_tokens(m, std::span(ids).subspan(static_cast<size_t>(s * kSeq), kSeq), &p.inputs[s * kSeq * hs]);
  p.targets = p.inputs;
  model::LayerScratch scratch(m.config, kSeq);
  for (int64_t s = 0; s < kSamples; ++s)
    model::decoder_layer_forward(m.config, p.original, 0, &p.targets[s * kSeq * hs], kSeq, scratch, pool);
  return p;
}

inline const std::vector<float>& linear_of(const grad::LayerParams<float>& p, TensorRole role) {
  for (const auto& [r, v] : p.tensors())
    if (r == role) return *v;
  ADD_FAILURE() << "no tensor of that role";
  return p.wq;
}

// Targets the start reproduces exactly: the training engine's forward of the quantized layer on the
// inputs, `batch` samples a call as the methods compute their losses (sgemm's rounding of a row can
// depend on the number of rows in the call, so another batching may differ in the last bit).
inline void set_targets_to_start(const model::Model& m, Problem& p, int64_t batch, ThreadPool& pool) {
  const grad::LayerParams<float> start = grad::LayerParams<float>::from_weights(m.config, p.quantized, pool);
  const int64_t hs = m.config.hidden_size;
  p.targets = p.inputs;
  for (int64_t s0 = 0; s0 < kSamples; s0 += batch) {
    const int64_t b = std::min(batch, kSamples - s0);
    grad::LayerWorkspace<float> ws(m.config, kSeq, b);
    grad::layer_forward(pool, m.config, 0, start, &p.targets[static_cast<size_t>(s0 * kSeq * hs)], ws);
  }
}

// Runtime (model/forward.h) MSE of `w` on the problem's samples.
inline double runtime_mse(const model::Model& m, const Problem& p, const model::LayerWeights& w, ThreadPool& pool) {
  const int64_t hs = m.config.hidden_size;
  std::vector<float> h = p.inputs;
  model::LayerScratch scratch(m.config, kSeq);
  for (int64_t s = 0; s < kSamples; ++s) model::decoder_layer_forward(m.config, w, 0, &h[s * kSeq * hs], kSeq, scratch, pool);
  return grad::mse<float>(pool, h.data(), p.targets.data(), static_cast<int64_t>(h.size()), nullptr);
}

// The written tensors of result `r` (weights, fake_quantized, loss_trained: QatBlockResult,
// AutoRoundResult) dequantize bit for bit to the fake-quantized weights of its final forward; its
// loss is the runtime's MSE with them; and the model's logits with the written layer through the
// runtime equal the fake-quantized forward through the training engine to 1e-5 relative.
template <class Result>
void expect_written_is_trained(const model::Model& m, const Problem& p, const Result& r, ThreadPool& pool,
                               const std::string& what) {
  // What is written is what was trained: bit for bit.
  ASSERT_EQ(r.weights.size(), 7u);
  model::LayerWeights written = p.quantized;
  for (const auto& [role, tensor] : r.weights) {
    std::vector<float> deq(static_cast<size_t>(tensor.rows * tensor.cols));
    tensor.dequantize(pool, deq.data());
    const std::vector<float>& fq = linear_of(r.fake_quantized, role);
    ASSERT_EQ(deq.size(), fq.size());
    EXPECT_EQ(std::memcmp(deq.data(), fq.data(), deq.size() * sizeof(float)), 0) << what;
    written.linear(role) = tensor;
  }
  EXPECT_NEAR(r.loss_trained, runtime_mse(m, p, written, pool), 1e-5 * r.loss_trained);

  // The model's logits with the written layer through the runtime vs the fake-quantized forward of
  // the final parameters through the training engine.
  model::Model qm = m;
  qm.layers[0] = written;
  grad::ModelParams<float> params = grad::ModelParams<float>::from_model(m, pool);
  params.layers[0] = r.fake_quantized;
  const std::vector<int32_t> ids = model::testutil::test_token_ids(2 * kSeq, m.config.vocab_size);
  const std::vector<float> trained = grad::model_logits<float>(pool, m.config, params, ids, 2 * kSeq);
  const Tensor runtime = model::forward(qm, ids, pool);
  ASSERT_EQ(static_cast<size_t>(runtime.numel()), trained.size());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < trained.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(trained[i]) - runtime.f32()[i]));
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(runtime.f32()[i])));
  }
  EXPECT_LE(max_diff, 1e-5 * max_abs) << what;
}

}  // namespace calq::quant::testutil
