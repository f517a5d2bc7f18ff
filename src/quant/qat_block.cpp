#include "quant/qat_block.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>

#include "core/error.h"
#include "grad/fake_quant.h"
#include "grad/fake_quant_int.h"
#include "grad/fake_quant_learn.h"
#include "grad/loss.h"
#include "grad/optim.h"
#include "quant/qat_trainable.h"

namespace calq::quant {
namespace {

using model::TensorRole;
using detail::Trainable;
using detail::linear_of;

// Mean squared error over all samples of the layer `p` on the inputs against the targets.
double full_loss(ThreadPool& pool, const LayerReconstructionTarget& t, const grad::LayerParams<float>& p,
                 int64_t batch, std::optional<grad::LayerWorkspace<float>>& ws) {
  const int64_t hs = t.config->hidden_size, stride = t.seq_len * hs;
  double sum = 0;
  std::vector<float> h;
  for (int64_t s0 = 0; s0 < t.samples; s0 += batch) {
    const int64_t b = std::min(batch, t.samples - s0);
    if (!ws || ws->batch() != b) ws.emplace(*t.config, t.seq_len, b);
    h.assign(t.inputs.begin() + s0 * stride, t.inputs.begin() + (s0 + b) * stride);
    grad::layer_forward(pool, *t.config, t.layer, p, h.data(), *ws);
    sum += grad::mse<float>(pool, h.data(), t.targets.data() + s0 * stride, b * stride, nullptr) *
           static_cast<double>(b);
  }
  return sum / static_cast<double>(t.samples);
}

QatBlockResult run(const LayerReconstructionTarget& t, const QatBlockOptions& o, ThreadPool& pool) {
  const model::ModelConfig& config = *t.config;
  const int64_t hs = config.hidden_size, stride = t.seq_len * hs;
  assert(t.samples >= 1 && t.seq_len >= 1);
  assert(static_cast<int64_t>(t.inputs.size()) == t.samples * stride && t.targets.size() == t.inputs.size());
  const int64_t batch = std::min(o.batch, t.samples);

  QatBlockResult r;
  const grad::LayerParams<float> start = grad::LayerParams<float>::from_weights(config, *t.quantized, pool);
  std::optional<grad::LayerWorkspace<float>> ws;
  r.loss_start = full_loss(pool, t, start, batch, ws);
  r.loss_trained = r.loss_start;
  r.fake_quantized = start;

  std::vector<Trainable> trs;
  for (const ReconstructionLinear& lin : t.linears) {
    if (lin.format == nullptr) continue;
    if (!grad::has_fake_quant(*lin.format))
      fail(ErrorKind::kUnsupported, "tensor {}: format {} has no fake-quantization path to train through",
           lin.name, lin.format->name());
    const bool is_int = grad::is_int_format(*lin.format);
    if (!is_int && !o.train_weights) continue;  // nothing of it to train
    const model::LinearWeight& q = t.quantized->linear(lin.role);
    if (!q.is_quantized() || q.quantized().format != lin.format)
      fail(ErrorKind::kInvalidArgument, "tensor {}: the weight quantizer did not leave it in {}", lin.name,
           lin.format->name());
    Trainable tr{.role = lin.role, .format = lin.format, .name = std::string(lin.name), .rows = q.rows(),
                 .cols = q.cols(), .is_int = is_int};
    const std::vector<float>& w_start = linear_of(r.fake_quantized, lin.role);
    if (is_int) {
      tr.layout = grad::int_layout(*lin.format);
      const Tensor orig = t.original->linear(lin.role).to_dense(pool);
      detail::init_int(tr, orig.f32(), w_start,
                       grad::read_int_params(*lin.format, q.quantized().bytes, tr.rows, tr.cols, tr.name), o.start_reach);
      tr.grad_step.resize(tr.step.size());
      tr.grad_zero.resize(tr.zero.size());
    } else {
      tr.w = w_start;
      tr.fq = std::make_unique<grad::FakeQuantizer>(pool, *lin.format, w_start.data(), tr.rows, tr.cols,
                                                    QuantizeOptions{.tensor_name = lin.name});
      tr.mask.resize(tr.w.size());
    }
    if (o.train_weights) tr.grad_w.resize(tr.w.size());
    trs.push_back(std::move(tr));
  }
  if (trs.empty()) return r;
  r.trained = true;

  const int64_t steps_per_epoch = (t.samples + batch - 1) / batch;
  const int64_t total_steps = o.epochs * steps_per_epoch;
  detail::Trainer trainer(trs, {.train_weights = o.train_weights, .lr_weights = o.lr_weights, .lr_quant = o.lr_quant,
                                .warmup = o.warmup, .total_steps = total_steps, .method = "qat-block",
                                .layer = t.layer, .progress = t.progress});

  grad::LayerParams<float> p = start;  // the trained linears replaced by their fake-quantized weights
  grad::LayerGrads<float> grads = grad::LayerParams<float>::zeros(config);
  std::vector<float> x, y, out, d_out, d_in;
  std::vector<int64_t> order(static_cast<size_t>(t.samples));
  for (int64_t i = 0; i < t.samples; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(o.seed);
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    detail::shuffle(order, rng);
    for (int64_t s0 = 0; s0 < t.samples; s0 += batch, ++step) {
      const int64_t b = std::min(batch, t.samples - s0);
      const auto n = static_cast<size_t>(b * stride);
      x.resize(n);
      y.resize(n);
      for (int64_t k = 0; k < b; ++k) {
        const int64_t s = order[static_cast<size_t>(s0 + k)];
        std::memcpy(&x[static_cast<size_t>(k * stride)], t.inputs.data() + s * stride, sizeof(float) * stride);
        std::memcpy(&y[static_cast<size_t>(k * stride)], t.targets.data() + s * stride, sizeof(float) * stride);
      }
      for (Trainable& tr : trs) tr.forward(pool, linear_of(p, tr.role).data());
      if (!ws || ws->batch() != b) ws.emplace(config, t.seq_len, b);
      out = x;
      grad::layer_forward(pool, config, t.layer, p, out.data(), *ws);
      d_out.resize(n);
      d_in.resize(n);
      const double loss = grad::mse<float>(pool, out.data(), y.data(), static_cast<int64_t>(n), d_out.data());
      for (auto& [role, v] : grads.tensors()) std::fill(v->begin(), v->end(), 0.0f);
      grad::layer_backward(pool, config, t.layer, p, x.data(), d_out.data(), d_in.data(), grads, *ws);
      for (Trainable& tr : trs) tr.backward(pool, linear_of(grads, tr.role).data());
      trainer.step(step, loss, r.curve);
    }
  }
  r.steps = step;

  // What is written, and the guard.
  model::LayerWeights written = *t.quantized;
  std::vector<std::pair<TensorRole, QuantizedTensor>> weights;
  for (Trainable& tr : trs) {
    tr.forward(pool, linear_of(p, tr.role).data());
    weights.emplace_back(tr.role, tr.encode(pool));
    written.linear(tr.role) = weights.back().second;
  }
  const grad::LayerParams<float> as_written = grad::LayerParams<float>::from_weights(config, written, pool);
  r.loss_trained = full_loss(pool, t, as_written, batch, ws);
  if (r.loss_trained < r.loss_start) {
    r.trained_kept = true;
    r.weights = std::move(weights);
    r.fake_quantized = std::move(p);
  }
  return r;
}

}  // namespace

QatBlockResult qat_block(const LayerReconstructionTarget& t, const QatBlockOptions& o, ThreadPool& pool) {
  try {
    return run(t, o, pool);
  } catch (const Error& e) {
    fail(e.kind(), "qat-block layer {}: {}", t.layer, e.what());
  }
}

}  // namespace calq::quant
