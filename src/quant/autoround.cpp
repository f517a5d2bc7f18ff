#include "quant/autoround.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
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

using detail::linear_of;
using model::TensorRole;

// One linear's learned rounding.
struct Rounded {
  TensorRole role{};
  std::string name;
  const Format* format = nullptr;
  int64_t rows = 0, cols = 0;
  bool is_int = false;
  grad::IntLayout layout;  // int family
  grad::RoundRange range;  // int family
  std::vector<float> base, v, gamma, beta;
  std::vector<float> grad_v, grad_gamma, grad_beta;
  std::unique_ptr<grad::FakeQuantizer> fq;  // codecs
  std::vector<float> unit, latent;          // codecs: grid spacing, base + v·unit
  std::vector<uint8_t> mask;                // codecs: the STE mask of the last forward

  void make_latent() {
    for (size_t i = 0; i < base.size(); ++i) latent[i] = base[i] + v[i] * unit[i];
  }
  void forward(ThreadPool& pool, float* w_hat) {
    if (is_int) {
      grad::round_forward<float>(pool, layout, rows, cols, base.data(), v, range, gamma, beta, w_hat, name);
      return;
    }
    make_latent();
    fq->forward(pool, latent.data(), w_hat, mask.data());
  }
  void backward(ThreadPool& pool, const float* grad_w_hat) {
    if (is_int) {
      grad::round_backward<float>(pool, layout, rows, cols, base.data(), v, range, gamma, beta, grad_w_hat,
                                  grad_v.data(), grad_gamma, grad_beta);
      return;
    }
    for (size_t i = 0; i < base.size(); ++i) grad_v[i] = mask[i] != 0 ? grad_w_hat[i] * unit[i] : 0.0f;
  }
  QuantizedTensor encode(ThreadPool& pool) {
    std::vector<std::byte> bytes;
    if (is_int) {
      std::vector<float> w(base.size());
      grad::round_latent<float>(pool, layout, rows, cols, base.data(), v, range, gamma, beta, w.data());
      bytes = grad::encode_with_params(*format, w.data(), rows, cols,
                                       grad::round_quant_params(layout, range, gamma, beta), name);
    } else {
      make_latent();
      bytes = fq->encode(pool, latent.data());
    }
    return QuantizedTensor::copy_of(*format, rows, cols, bytes);
  }
  // After an update: AutoRound's bounds.
  void clamp() {
    for (float& x : v) x = std::clamp(x, -0.5f, 0.5f);
    for (float& x : gamma) x = std::clamp(x, kAutoRoundMinFactor, 1.0f);
    for (float& x : beta) x = std::clamp(x, kAutoRoundMinFactor, 1.0f);
  }
};

Rounded make_rounded(const LayerReconstructionTarget& t, const ReconstructionLinear& lin, const AutoRoundOptions& o,
                     const std::vector<float>& start, ThreadPool& pool) {
  const model::LinearWeight& q = t.quantized->linear(lin.role);
  if (!q.is_quantized() || q.quantized().format != lin.format)
    fail(ErrorKind::kInvalidArgument, "tensor {}: the weight quantizer did not leave it in {}", lin.name,
         lin.format->name());
  Rounded rd{.role = lin.role, .name = std::string(lin.name), .format = lin.format, .rows = q.rows(),
             .cols = q.cols(), .is_int = grad::is_int_format(*lin.format)};
  const Tensor orig = t.original->linear(lin.role).to_dense(pool);
  const size_t n = start.size();
  if (rd.is_int) {
    rd.layout = grad::int_layout(*lin.format);
    const auto params = grad::read_int_params(*lin.format, q.quantized().bytes, rd.rows, rd.cols, rd.name);
    rd.range = grad::round_range(rd.layout, params);
    rd.base = detail::start_latent(rd.layout, rd.rows, rd.cols, orig.f32(), start, params, o.start_reach);
    // Factors 1: the quantizer's range (left there when minmax is off: not in the optimizer's groups).
    rd.gamma.assign(params.size(), 1.0f);
    rd.beta.assign(rd.layout.symmetric ? 0 : params.size(), 1.0f);
    rd.grad_gamma.resize(rd.gamma.size());
    rd.grad_beta.resize(rd.beta.size());
  } else {
    if (lin.format->grid_codec() == nullptr)
      fail(ErrorKind::kUnsupported, "tensor {}: format {} has no frozen grid to learn the rounding on", lin.name,
           lin.format->name());
    rd.fq = std::make_unique<grad::FakeQuantizer>(pool, *lin.format, start.data(), rd.rows, rd.cols,
                                                  QuantizeOptions{.tensor_name = lin.name});
    rd.unit = rd.fq->spacing(pool);
    rd.base.resize(n);
    // start is on the grid; move toward the original weight by at most start_reach of a spacing.
    for (size_t i = 0; i < n; ++i) {
      const double u = rd.unit[i];
      rd.base[i] = u > 0 ? static_cast<float>(start[i] + u * std::clamp((orig.f32()[i] - start[i]) / u,
                                                                          -o.start_reach, o.start_reach))
                         : start[i];
    }
    rd.latent.resize(n);
    rd.mask.resize(n);
  }
  rd.v.assign(n, 0.0f);
  rd.grad_v.resize(n);
  return rd;
}

// The first trained value or gradient that is not finite, for the error of a non-finite loss.
std::string first_non_finite(const std::vector<Rounded>& rs) {
  const auto bad = [](std::span<const float> x) {
    return std::any_of(x.begin(), x.end(), [](float y) { return !std::isfinite(y); });
  };
  for (const Rounded& r : rs) {
    if (bad(r.v)) return fmt::format("parameter {} (rounding offsets) is not finite", r.name);
    if (bad(r.gamma) || bad(r.beta)) return fmt::format("parameter {} (range factors) is not finite", r.name);
  }
  for (const Rounded& r : rs) {
    if (bad(r.grad_v)) return fmt::format("the gradient of {} (rounding offsets) is not finite", r.name);
    if (bad(r.grad_gamma) || bad(r.grad_beta))
      return fmt::format("the gradient of {} (range factors) is not finite", r.name);
  }
  return "every parameter and gradient is finite (a non-finite input or target, or an overflow inside the layer)";
}

struct Snapshot {
  std::vector<std::vector<float>> v, gamma, beta;
  void take(const std::vector<Rounded>& rs) {
    v.resize(rs.size()), gamma.resize(rs.size()), beta.resize(rs.size());
    for (size_t k = 0; k < rs.size(); ++k) v[k] = rs[k].v, gamma[k] = rs[k].gamma, beta[k] = rs[k].beta;
  }
  void restore(std::vector<Rounded>& rs) const {
    for (size_t k = 0; k < rs.size(); ++k) rs[k].v = v[k], rs[k].gamma = gamma[k], rs[k].beta = beta[k];
  }
};

AutoRoundResult run(const LayerReconstructionTarget& t, const AutoRoundOptions& o, ThreadPool& pool) {
  const model::ModelConfig& config = *t.config;
  const int64_t stride = t.seq_len * config.hidden_size;
  assert(t.samples >= 1 && t.seq_len >= 1 && o.iters >= 1);
  assert(static_cast<int64_t>(t.inputs.size()) == t.samples * stride && t.targets.size() == t.inputs.size());
  const int64_t batch = std::min(o.batch, t.samples);
  const double lr = o.lr > 0 ? o.lr : 1.0 / static_cast<double>(o.iters);
  const double lr_minmax = o.lr_minmax > 0 ? o.lr_minmax : lr;

  AutoRoundResult r;
  const grad::LayerParams<float> start = grad::LayerParams<float>::from_weights(config, *t.quantized, pool);
  std::optional<grad::LayerWorkspace<float>> ws;
  const std::vector<double> start_losses = detail::sample_losses(pool, t, start, batch, ws);
  for (double l : start_losses) r.loss_start += l;
  r.loss_start /= static_cast<double>(t.samples);
  r.loss_trained = r.loss_start;
  r.fake_quantized = start;

  std::vector<Rounded> rs;
  for (const ReconstructionLinear& lin : t.linears) {
    if (lin.format == nullptr) continue;
    rs.push_back(make_rounded(t, lin, o, linear_of(r.fake_quantized, lin.role), pool));
  }
  if (rs.empty()) return r;
  r.trained = true;

  std::vector<grad::ParamGroup> groups;
  for (Rounded& rd : rs) {
    groups.push_back({.name = rd.name + " rounding offsets", .param = rd.v, .grad = rd.grad_v, .lr_scale = lr,
                      .decay = false});
    if (rd.is_int && o.minmax) {
      groups.push_back({.name = rd.name + " range top factors", .param = rd.gamma, .grad = rd.grad_gamma,
                        .lr_scale = lr_minmax, .decay = false});
      if (!rd.beta.empty())
        groups.push_back({.name = rd.name + " range bottom factors", .param = rd.beta, .grad = rd.grad_beta,
                          .lr_scale = lr_minmax, .decay = false});
    }
  }
  grad::SignSgd sgd({.lr = 1.0, .weight_decay = 0});

  grad::LayerParams<float> p = start;
  grad::LayerGrads<float> grads = grad::LayerParams<float>::zeros(config);
  std::vector<float> x, y, out, d_out, d_in;
  std::vector<int64_t> order(static_cast<size_t>(t.samples));
  for (int64_t i = 0; i < t.samples; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(o.seed);
  detail::shuffle(order, rng);
  int64_t pos = 0;
  Snapshot best;
  best.take(rs);
  double best_ratio = std::numeric_limits<double>::infinity();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < o.iters; ++step) {
    if (pos + batch > t.samples) {
      detail::shuffle(order, rng);
      pos = 0;
    }
    const auto n = static_cast<size_t>(batch * stride);
    x.resize(n);
    y.resize(n);
    double batch_start = 0;
    for (int64_t k = 0; k < batch; ++k) {
      const int64_t s = order[static_cast<size_t>(pos + k)];
      std::memcpy(&x[static_cast<size_t>(k * stride)], t.inputs.data() + s * stride, sizeof(float) * stride);
      std::memcpy(&y[static_cast<size_t>(k * stride)], t.targets.data() + s * stride, sizeof(float) * stride);
      batch_start += start_losses[static_cast<size_t>(s)];
    }
    batch_start /= static_cast<double>(batch);
    pos += batch;

    for (Rounded& rd : rs) rd.forward(pool, linear_of(p, rd.role).data());
    if (!ws || ws->batch() != batch) ws.emplace(config, t.seq_len, batch);
    out = x;
    grad::layer_forward(pool, config, t.layer, p, out.data(), *ws);
    d_out.resize(n);
    d_in.resize(n);
    const double loss = grad::mse<float>(pool, out.data(), y.data(), static_cast<int64_t>(n), d_out.data());
    for (auto& [role, g] : grads.tensors()) std::fill(g->begin(), g->end(), 0.0f);
    grad::layer_backward(pool, config, t.layer, p, x.data(), d_out.data(), d_in.data(), grads, *ws);
    for (Rounded& rd : rs) rd.backward(pool, linear_of(grads, rd.role).data());
    if (!std::isfinite(loss))
      fail(ErrorKind::kInvalidArgument, "step {}: the loss is {}; {}", step + 1, loss, first_non_finite(rs));
    // This step's parameters produced `loss`: keep them if they are the best so far.
    const double ratio = batch_start > 0 ? loss / batch_start : (loss > 0 ? 2.0 : 1.0);
    if (ratio < best_ratio) {
      best_ratio = ratio;
      r.best_step = step;
      best.take(rs);
    }
    sgd.step(groups, 1.0 - static_cast<double>(step) / static_cast<double>(o.iters));
    for (Rounded& rd : rs) rd.clamp();
    r.curve.push_back(loss);
    if (t.progress != nullptr && *t.progress) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      (*t.progress)({.step = "autoround", .layer = t.layer, .done = step + 1, .total = o.iters, .loss = loss,
                     .seconds = seconds,
                     .eta_seconds = seconds / static_cast<double>(step + 1) * static_cast<double>(o.iters - step - 1)});
    }
  }
  r.steps = o.iters;
  best.restore(rs);

  // What is written, and the guard.
  model::LayerWeights written = *t.quantized;
  std::vector<std::pair<TensorRole, QuantizedTensor>> weights;
  for (Rounded& rd : rs) {
    rd.forward(pool, linear_of(p, rd.role).data());
    weights.emplace_back(rd.role, rd.encode(pool));
    written.linear(rd.role) = weights.back().second;
  }
  const grad::LayerParams<float> as_written = grad::LayerParams<float>::from_weights(config, written, pool);
  const std::vector<double> trained = detail::sample_losses(pool, t, as_written, batch, ws);
  r.loss_trained = 0;
  for (double l : trained) r.loss_trained += l;
  r.loss_trained /= static_cast<double>(t.samples);
  if (r.loss_trained < r.loss_start) {
    r.trained_kept = true;
    r.weights = std::move(weights);
    r.fake_quantized = std::move(p);
  }
  return r;
}

}  // namespace

AutoRoundResult autoround(const LayerReconstructionTarget& t, const AutoRoundOptions& o, ThreadPool& pool) {
  try {
    return run(t, o, pool);
  } catch (const Error& e) {
    fail(e.kind(), "autoround layer {}: {}", t.layer, e.what());
  }
}

}  // namespace calq::quant
