#include "quant/qat_block.h"

#include <fmt/format.h>

#include <algorithm>
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

namespace calq::quant {
namespace {

using model::TensorRole;

std::vector<float>& linear_of(grad::LayerParams<float>& p, TensorRole role) {
  switch (role) {
    case TensorRole::kAttnQ: return p.wq;
    case TensorRole::kAttnK: return p.wk;
    case TensorRole::kAttnV: return p.wv;
    case TensorRole::kAttnOut: return p.wo;
    case TensorRole::kMlpGate: return p.w_gate;
    case TensorRole::kMlpUp: return p.w_up;
    case TensorRole::kMlpDown: return p.w_down;
    default: break;
  }
  assert(false && "not a per-layer linear role");
  return p.wq;
}

// One trained linear: its latent weights and (int family) learned step sizes / zero points.
struct Trainable {
  TensorRole role{};
  const Format* format = nullptr;
  std::string name;
  int64_t rows = 0, cols = 0;
  bool is_int = false;
  grad::IntLayout layout;
  std::vector<float> w, step, zero, min_step;
  std::unique_ptr<grad::FakeQuantizer> fq;  // non-int formats
  std::vector<uint8_t> mask;
  std::vector<float> grad_w, grad_step, grad_zero;

  void forward(ThreadPool& pool, float* w_hat) {
    if (is_int) {
      grad::lsq_forward<float>(pool, layout, rows, cols, w.data(), step, zero, w_hat, name);
    } else {
      fq->forward(pool, w.data(), w_hat, mask.data());
    }
  }
  // grad_w_hat: dL/dŴ. Fills grad_w (when trained), grad_step, grad_zero.
  void backward(ThreadPool& pool, const float* grad_w_hat) {
    if (is_int) {
      grad::lsq_backward<float>(pool, layout, rows, cols, w.data(), step, zero, grad_w_hat,
                                grad_w.empty() ? nullptr : grad_w.data(), grad_step, grad_zero);
    } else {
      grad::ste_backward<float>({grad_w_hat, w.size()}, mask, grad_w);
    }
  }
  QuantizedTensor encode(ThreadPool& pool) {
    std::vector<std::byte> bytes =
        is_int ? grad::encode_with_params(*format, w.data(), rows, cols, grad::lsq_quant_params(layout, step, zero, name),
                                          name)
               : fq->encode(pool, w.data());
    return QuantizedTensor::copy_of(*format, rows, cols, bytes);
  }
};

// Latent weights of an int linear: the point of the quantizer's rounding cell nearest the original
// weight (qat_block.h), with LSQ steps / zero points from the stored parameters.
void init_int(Trainable& tr, const float* original, const std::vector<float>& start,
              std::span<const QuantParams> params) {
  const grad::IntLayout& l = tr.layout;
  const auto groups = params.size();
  tr.step.resize(groups);
  tr.zero.resize(l.symmetric ? 0 : groups);
  grad::lsq_init(params, tr.step, tr.zero);
  tr.min_step.resize(groups);
  // A zero-scale group (all its start values 0) gets the smallest step the scale type stores, so
  // that LSQ's step is > 0; its values stay 0 until trained.
  const float tiny = l.f32 ? std::numeric_limits<float>::min() : 0x1p-24f;
  for (size_t g = 0; g < groups; ++g) {
    if (!(tr.step[g] > 0)) tr.step[g] = tiny;
    tr.min_step[g] = std::max(tr.step[g] * 0.01f, tiny);
  }
  tr.w.resize(start.size());
  const double qmin = l.grid.qmin, qmax = l.grid.qmax;
  for (int64_t r = 0; r < tr.rows; ++r) {
    for (int64_t c = 0; c < tr.cols; ++c) {
      const size_t i = static_cast<size_t>(r * tr.cols + c);
      const QuantParams& p = params[static_cast<size_t>(l.group_of(r, c, tr.cols))];
      if (!(p.scale > 0)) {
        tr.w[i] = start[i];
        continue;
      }
      const double s = p.scale;
      const double q = std::nearbyint(start[i] / s) + p.zero_point;  // the quantizer's code
      const double lo = q <= qmin ? -std::numeric_limits<double>::infinity() : -0.45;
      const double hi = q >= qmax ? std::numeric_limits<double>::infinity() : 0.45;
      const double u = std::clamp((static_cast<double>(original[i]) - start[i]) / s, lo, hi);
      tr.w[i] = static_cast<float>(start[i] + s * u);
    }
  }
}

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

// The first trained value or gradient that is not finite, for the error of a non-finite loss.
std::string first_non_finite(const std::vector<Trainable>& trs) {
  const auto bad = [](std::span<const float> v) {
    return std::any_of(v.begin(), v.end(), [](float x) { return !std::isfinite(x); });
  };
  for (const Trainable& tr : trs) {
    if (bad(tr.w)) return fmt::format("parameter {} (weights) is not finite", tr.name);
    if (bad(tr.step)) return fmt::format("parameter {} (step sizes) is not finite", tr.name);
    if (bad(tr.zero)) return fmt::format("parameter {} (zero points) is not finite", tr.name);
  }
  for (const Trainable& tr : trs) {
    if (bad(tr.grad_w)) return fmt::format("the gradient of {} (weights) is not finite", tr.name);
    if (bad(tr.grad_step)) return fmt::format("the gradient of {} (step sizes) is not finite", tr.name);
    if (bad(tr.grad_zero)) return fmt::format("the gradient of {} (zero points) is not finite", tr.name);
  }
  return "every parameter and gradient is finite (a non-finite input or target, or an overflow inside the layer)";
}

// Seeded Fisher–Yates on raw 64-bit outputs (std::shuffle's use of the engine is not specified).
void shuffle(std::vector<int64_t>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
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
      init_int(tr, orig.f32(), w_start, grad::read_int_params(*lin.format, q.quantized().bytes, tr.rows, tr.cols, tr.name));
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

  // Parameter groups: latent weights, step sizes, zero points (ParamGroup spans point into trs).
  std::vector<grad::ParamGroup> groups;
  std::vector<size_t> sizes;
  for (Trainable& tr : trs) {
    if (o.train_weights)
      groups.push_back({.name = tr.name, .param = tr.w, .grad = tr.grad_w, .lr_scale = o.lr_weights, .decay = false});
    if (tr.is_int) {
      groups.push_back({.name = tr.name + " step sizes", .param = tr.step, .grad = tr.grad_step,
                        .lr_scale = o.lr_quant, .decay = false});
      if (!tr.zero.empty())
        groups.push_back({.name = tr.name + " zero points", .param = tr.zero, .grad = tr.grad_zero,
                          .lr_scale = o.lr_quant, .decay = false});
    }
  }
  for (const auto& g : groups) sizes.push_back(g.param.size());
  grad::AdamW adam({.lr = 1.0, .weight_decay = 0}, sizes);
  const int64_t steps_per_epoch = (t.samples + batch - 1) / batch;
  const grad::CosineSchedule schedule({.lr = 1.0, .warmup_steps = 0, .total_steps = o.epochs * steps_per_epoch});

  grad::LayerParams<float> p = start;  // the trained linears replaced by their fake-quantized weights
  grad::LayerGrads<float> grads = grad::LayerParams<float>::zeros(config);
  std::vector<float> x, y, out, d_out, d_in;
  std::vector<int64_t> order(static_cast<size_t>(t.samples));
  for (int64_t i = 0; i < t.samples; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(o.seed);
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    shuffle(order, rng);
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
      if (!std::isfinite(loss))
        fail(ErrorKind::kInvalidArgument, "step {}: the loss is {}; {}", step + 1, loss, first_non_finite(trs));
      adam.step(groups, schedule.lr(step));
      for (Trainable& tr : trs) {
        for (size_t g = 0; g < tr.step.size(); ++g) tr.step[g] = std::max(tr.step[g], tr.min_step[g]);
      }
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
