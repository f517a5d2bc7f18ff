#include "quant/qat_trainable.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "grad/fake_quant_learn.h"
#include "grad/loss.h"

namespace calq::quant::detail {

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

void Trainable::forward(ThreadPool& pool, float* w_hat) {
  if (frozen_codes) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = static_cast<size_t>(r * cols + c);
        w_hat[i] = layout.store_scale(step[static_cast<size_t>(layout.group_of(r, c, cols))]) * codes[i];
      }
    }
  } else if (is_int) {
    grad::lsq_forward<float>(pool, layout, rows, cols, w.data(), step, zero, w_hat, name);
  } else {
    fq->forward(pool, w.data(), w_hat, mask.data());
  }
}

void Trainable::backward(ThreadPool& pool, const float* grad_w_hat) {
  if (frozen_codes) {
    std::vector<double> sum(step.size(), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = static_cast<size_t>(r * cols + c);
        sum[static_cast<size_t>(layout.group_of(r, c, cols))] += static_cast<double>(grad_w_hat[i]) * codes[i];
      }
    }
    for (size_t g = 0; g < step.size(); ++g) grad_step[g] = static_cast<float>(sum[g]);
  } else if (is_int) {
    grad::lsq_backward<float>(pool, layout, rows, cols, w.data(), step, zero, grad_w_hat,
                              grad_w.empty() ? nullptr : grad_w.data(), grad_step, grad_zero);
  } else {
    grad::ste_backward<float>({grad_w_hat, w.size()}, mask, grad_w);
  }
}

QuantizedTensor Trainable::encode(ThreadPool& pool) {
  std::vector<std::byte> bytes;
  if (frozen_codes) {
    std::vector<float> w_hat(codes.size());
    forward(pool, w_hat.data());
    std::vector<QuantParams> params(step.size());
    for (size_t g = 0; g < step.size(); ++g) params[g] = {.scale = layout.store_scale(step[g]), .zero_point = zero_points[g]};
    bytes = grad::encode_with_params(*format, w_hat.data(), rows, cols, params, name);
  } else if (is_int) {
    bytes = grad::encode_with_params(*format, w.data(), rows, cols, grad::lsq_quant_params(layout, step, zero, name),
                                     name);
  } else {
    bytes = fq->encode(pool, w.data());
  }
  return QuantizedTensor::copy_of(*format, rows, cols, bytes);
}

void init_int(Trainable& tr, const float* original, const std::vector<float>& start,
              std::span<const QuantParams> params, double reach) {
  assert(reach >= 0 && reach < 0.5);
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
  tr.w = start_latent(l, tr.rows, tr.cols, original, start, params, reach);
}

std::vector<float> start_latent(const grad::IntLayout& l, int64_t rows, int64_t cols, const float* original,
                                const std::vector<float>& start, std::span<const QuantParams> params, double reach) {
  assert(reach >= 0 && reach < 0.5);
  std::vector<float> w(start.size());
  const double qmin = l.grid.qmin, qmax = l.grid.qmax;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      const QuantParams& p = params[static_cast<size_t>(l.group_of(r, c, cols))];
      if (!(p.scale > 0)) {
        w[i] = start[i];
        continue;
      }
      const double s = p.scale;
      const double q = std::nearbyint(start[i] / s) + p.zero_point;  // the quantizer's code
      const double lo = q <= qmin ? -std::numeric_limits<double>::infinity() : -reach;
      const double hi = q >= qmax ? std::numeric_limits<double>::infinity() : reach;
      const double u = std::clamp((static_cast<double>(original[i]) - start[i]) / s, lo, hi);
      w[i] = static_cast<float>(start[i] + s * u);
    }
  }
  return w;
}

std::vector<double> sample_losses(ThreadPool& pool, const LayerReconstructionTarget& t, const grad::LayerParams<float>& p,
                                  int64_t batch, std::optional<grad::LayerWorkspace<float>>& ws) {
  const int64_t stride = t.seq_len * t.config->hidden_size;
  std::vector<double> out(static_cast<size_t>(t.samples));
  std::vector<float> h;
  for (int64_t s0 = 0; s0 < t.samples; s0 += batch) {
    const int64_t b = std::min(batch, t.samples - s0);
    if (!ws || ws->batch() != b) ws.emplace(*t.config, t.seq_len, b);
    h.assign(t.inputs.begin() + s0 * stride, t.inputs.begin() + (s0 + b) * stride);
    grad::layer_forward(pool, *t.config, t.layer, p, h.data(), *ws);
    for (int64_t k = 0; k < b; ++k) {
      out[static_cast<size_t>(s0 + k)] =
          grad::mse<float>(pool, h.data() + k * stride, t.targets.data() + (s0 + k) * stride, stride, nullptr);
    }
  }
  return out;
}


void init_frozen(Trainable& tr, const std::vector<float>& start, std::span<const QuantParams> params) {
  const grad::IntLayout& l = tr.layout;
  tr.frozen_codes = true;
  tr.step.resize(params.size());
  tr.zero_points.resize(params.size());
  tr.min_step.resize(params.size());
  const float tiny = l.f32 ? std::numeric_limits<float>::min() : 0x1p-24f;
  for (size_t g = 0; g < params.size(); ++g) {
    tr.step[g] = params[g].scale > 0 ? params[g].scale : tiny;
    tr.zero_points[g] = params[g].zero_point;
    tr.min_step[g] = std::max(tr.step[g] * 0.01f, tiny);
  }
  // A zero-scale group decodes to 0: its codes are 0 (it stays 0 whatever its step).
  tr.codes.resize(start.size());
  for (int64_t r = 0; r < tr.rows; ++r) {
    for (int64_t c = 0; c < tr.cols; ++c) {
      const size_t i = static_cast<size_t>(r * tr.cols + c);
      const QuantParams& p = params[static_cast<size_t>(l.group_of(r, c, tr.cols))];
      tr.codes[i] = p.scale > 0 ? std::nearbyint(start[i] / p.scale) : 0.0f;
    }
  }
}

namespace {

// Steps kept at or above min_step (> 0) after an update.
void clamp_steps(Trainable& tr) {
  for (size_t g = 0; g < tr.step.size(); ++g) tr.step[g] = std::max(tr.step[g], tr.min_step[g]);
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

}  // namespace

Trainer::Trainer(std::vector<Trainable>& trs, const Options& o) : trs_(trs), o_(o) {
  for (Trainable& tr : trs) {
    if (o.train_weights)
      groups_.push_back({.name = tr.name, .param = tr.w, .grad = tr.grad_w, .lr_scale = o.lr_weights, .decay = false});
    if (tr.is_int) {
      groups_.push_back({.name = tr.name + " step sizes", .param = tr.step, .grad = tr.grad_step,
                         .lr_scale = o.lr_quant, .decay = false});
      if (!tr.grad_zero.empty())
        groups_.push_back({.name = tr.name + " zero points", .param = tr.zero, .grad = tr.grad_zero,
                           .lr_scale = o.lr_quant, .decay = false});
    }
  }
  std::vector<size_t> sizes;
  for (const auto& g : groups_) sizes.push_back(g.param.size());
  adam_.emplace(grad::AdamWOptions{.lr = 1.0, .weight_decay = 0}, sizes);
  const auto warmup = std::min(static_cast<int64_t>(std::floor(o.warmup * static_cast<double>(o.total_steps))),
                               o.total_steps - 1);
  schedule_.emplace(grad::CosineScheduleOptions{.lr = 1.0, .warmup_steps = warmup, .total_steps = o.total_steps});
  t0_ = std::chrono::steady_clock::now();
}

void Trainer::step(int64_t step, double loss, std::vector<double>& curve) {
  if (!std::isfinite(loss))
    fail(ErrorKind::kInvalidArgument, "step {}: the loss is {}; {}", step + 1, loss, first_non_finite(trs_));
  adam_->step(groups_, schedule_->lr(step));
  for (Trainable& tr : trs_) clamp_steps(tr);
  curve.push_back(loss);
  if (o_.progress != nullptr && *o_.progress) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    (*o_.progress)({.step = o_.method, .layer = o_.layer, .done = step + 1, .total = o_.total_steps, .loss = loss,
                    .seconds = seconds,
                    .eta_seconds = seconds / static_cast<double>(step + 1) * static_cast<double>(o_.total_steps - step - 1)});
  }
}

// Seeded Fisher–Yates on raw 64-bit outputs (std::shuffle's use of the engine is not specified).
void shuffle(std::vector<int64_t>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

}  // namespace calq::quant::detail
