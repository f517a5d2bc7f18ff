#include "quant/zeroqat.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numbers>
#include <random>
#include <span>
#include <string>

#include "core/error.h"
#include "grad/fake_quant_int.h"
#include "grad/loss.h"
#include "model/forward.h"
#include "quant/qat_trainable.h"

namespace calq::quant {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Step sizes are kept within [1 %, 100 ×] of their start (qat-e2e keeps them >= 1 %): a noisy
// estimate cannot drive one to zero or past the scale type's range.
const float kMinTheta = static_cast<float>(std::log(0.01));
const float kMaxTheta = static_cast<float>(std::log(100.0));

// One trained linear: its start, and what it trains.
struct Linear {
  int64_t layer = 0;
  model::TensorRole role{};
  const Format* format = nullptr;
  std::string name;
  int64_t rows = 0, cols = 0;
  grad::IntLayout layout;
  std::vector<QuantParams> start;  // s0 and z per group
  std::vector<uint8_t> codes;      // codes frozen: q − qmin per element (k = q − z)
  std::vector<float> latent;       // train_weights: latent weights (absolute)
  int64_t theta0 = 0;              // first index of its multipliers in θ and in the direction's values
  int64_t per_row = 1;             // groups per row (the multiplier of group g: theta0 + share(g))
  int64_t latent0 = 0;             // first index of its weights in the direction's values
};

// A perturbation: θ + sign·eps·u (and latent + sign·eps_w·s0·u), u of direction (step, dir).
struct Perturbation {
  double sign = 0;  // 0: none (the written model)
  int64_t step = 0, dir = 0;
};

class Trainer {
 public:
  Trainer(const ModelReconstructionTarget& t, const ZeroQatOptions& o, ThreadPool& pool) : t_(t), o_(o), pool_(pool) {
    for (const ModelReconstructionLinear& lin : t.linears) {
      if (lin.format == nullptr || !grad::is_int_format(*lin.format)) continue;
      const model::LinearWeight& q = t.quantized->layers[static_cast<size_t>(lin.layer)].linear(lin.role);
      if (!q.is_quantized() || q.quantized().format != lin.format)
        fail(ErrorKind::kInvalidArgument, "tensor {}: the weight quantizer did not leave it in {}", lin.name,
             lin.format->name());
      Linear l{.layer = lin.layer, .role = lin.role, .format = lin.format, .name = std::string(lin.name),
               .rows = q.rows(), .cols = q.cols(), .layout = grad::int_layout(*lin.format)};
      l.start = grad::read_int_params(*lin.format, q.quantized().bytes, l.rows, l.cols, l.name);
      const Tensor start = q.to_dense(pool);
      const float* w0 = start.f32();
      if (o.train_weights) {
        const Tensor orig = t.teacher->layers[static_cast<size_t>(lin.layer)].linear(lin.role).to_dense(pool);
        l.latent = detail::start_latent(l.layout, l.rows, l.cols, orig.f32(),
                                        std::vector<float>(w0, w0 + start.numel()), l.start, detail::kDefaultStartReach);
      } else {
        const int qmin = l.layout.grid.qmin;
        l.codes.resize(static_cast<size_t>(l.rows * l.cols));
        for (int64_t r = 0; r < l.rows; ++r) {
          for (int64_t c = 0; c < l.cols; ++c) {
            const QuantParams& p = l.start[static_cast<size_t>(l.layout.group_of(r, c, l.cols))];
            const float k = p.scale > 0 ? std::nearbyint(w0[r * l.cols + c] / p.scale) : 0.0f;
            l.codes[static_cast<size_t>(r * l.cols + c)] = static_cast<uint8_t>(static_cast<int>(k) + p.zero_point - qmin);
          }
        }
      }
      l.theta0 = groups_;
      l.per_row = l.layout.granularity == grad::IntGranularity::kTensor ? 0 : l.layout.groups_per_row(l.cols);
      groups_ += o.granularity == 0 ? static_cast<int64_t>(l.start.size()) : o.granularity == 1 ? l.rows : 1;
      linears_.push_back(std::move(l));
    }
    theta_.assign(static_cast<size_t>(groups_), 0.0f);
    int64_t next = groups_;
    for (Linear& l : linears_) {
      if (l.latent.empty()) continue;
      l.latent0 = next;
      next += l.rows * l.cols;
    }
    values_ = next;
  }

  bool empty() const { return linears_.empty(); }
  int64_t values() const { return values_; }

  // The quantized model with every trained linear encoded under `p`.
  model::Model student(const Perturbation& p) const {
    model::Model m = *t_.quantized;
    std::vector<QuantizedTensor> out(linears_.size());
    pool_.parallel_for(0, linears_.size(), Grain{.min_items = 1}, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) out[i] = encode(linears_[i], p);
    });
    for (size_t i = 0; i < linears_.size(); ++i)
      m.layers[static_cast<size_t>(linears_[i].layer)].linear(linears_[i].role) = std::move(out[i]);
    return m;
  }

  // θ −= lr · (d / ε) · u and latent −= lr_w · (d / ε_w) · s0 · u, u of (step, dir); d = (L₊ − L₋)/2 / q.
  void update(int64_t step, int64_t dir, double d) {
    const double gt = o_.lr * d / o_.eps;
    for (int64_t g = 0; g < groups_; ++g) {
      float& th = theta_[static_cast<size_t>(g)];
      th -= static_cast<float>(gt * zeroqat_normal(o_.seed, step, dir, static_cast<uint64_t>(g)));
      th = std::clamp(th, kMinTheta, kMaxTheta);
    }
    if (!o_.train_weights) return;
    const double gw = o_.lr_weights * d / o_.eps_weights;
    pool_.parallel_for(0, linears_.size(), Grain{.min_items = 1}, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) {
        Linear& l = linears_[i];
        for (int64_t r = 0; r < l.rows; ++r) {
          for (int64_t c = 0; c < l.cols; ++c) {
            const int64_t e = r * l.cols + c;
            const float s0 = l.start[static_cast<size_t>(l.layout.group_of(r, c, l.cols))].scale;
            const double u = zeroqat_normal(o_.seed, step, dir, static_cast<uint64_t>(l.latent0 + e));
            l.latent[static_cast<size_t>(e)] -= static_cast<float>(gw * s0 * u);
          }
        }
      }
    });
  }

  // The first θ that is not finite (for the error of a diverged run), or "".
  std::string non_finite() const {
    for (const Linear& l : linears_) {
      for (size_t g = 0; g < l.start.size(); ++g)
        if (!std::isfinite(theta_[static_cast<size_t>(l.theta0 + share(l, static_cast<int64_t>(g)))]))
          return fmt::format("tensor {} group {} step multiplier", l.name, g);
      for (size_t e = 0; e < l.latent.size(); ++e)
        if (!std::isfinite(l.latent[e])) return fmt::format("tensor {} latent weight {}", l.name, e);
    }
    return "";
  }

  // The trained linears of `m`, a student(...) of this trainer.
  std::vector<ModelReconstruction::Weight> trained_weights(const model::Model& m) const {
    std::vector<ModelReconstruction::Weight> w;
    for (const Linear& l : linears_)
      w.push_back({.layer = l.layer, .role = l.role,
                   .tensor = m.layers[static_cast<size_t>(l.layer)].linear(l.role).quantized()});
    return w;
  }

 private:
  // The multiplier a group shares (options.granularity: its own, its row's, its tensor's).
  int64_t share(const Linear& l, int64_t g) const {
    if (o_.granularity == 0) return g;
    if (o_.granularity == 2 || l.per_row == 0) return 0;
    return g / l.per_row;
  }

  QuantizedTensor encode(const Linear& l, const Perturbation& p) const {
    std::vector<QuantParams> params(l.start.size());
    for (size_t g = 0; g < params.size(); ++g) {
      const int64_t ti = l.theta0 + share(l, static_cast<int64_t>(g));
      double th = theta_[static_cast<size_t>(ti)];
      if (p.sign != 0) th += p.sign * o_.eps * zeroqat_normal(o_.seed, p.step, p.dir, static_cast<uint64_t>(ti));
      const float s0 = l.start[g].scale;
      const float s = s0 > 0 ? l.layout.store_scale(static_cast<float>(s0 * std::exp(th))) : 0.0f;
      if (!std::isfinite(s))
        fail(ErrorKind::kInvalidArgument, "tensor {} group {}: step size {} × {} cannot be stored", l.name, g, s0,
             std::exp(th));
      params[g] = {.scale = s, .zero_point = l.start[g].zero_point};
    }
    std::vector<float> w(static_cast<size_t>(l.rows * l.cols));
    for (int64_t r = 0; r < l.rows; ++r) {
      for (int64_t c = 0; c < l.cols; ++c) {
        const int64_t e = r * l.cols + c;
        const auto g = static_cast<size_t>(l.layout.group_of(r, c, l.cols));
        if (l.latent.empty()) {
          // Ŵ = s·k: encoding divides by s and rounds back to k (the codes stay the start's).
          const int k = static_cast<int>(l.codes[static_cast<size_t>(e)]) + l.layout.grid.qmin - params[g].zero_point;
          w[static_cast<size_t>(e)] = params[g].scale * static_cast<float>(k);
        } else {
          double v = l.latent[static_cast<size_t>(e)];
          if (p.sign != 0)
            v += p.sign * o_.eps_weights * l.start[g].scale *
                 zeroqat_normal(o_.seed, p.step, p.dir, static_cast<uint64_t>(l.latent0 + e));
          w[static_cast<size_t>(e)] = static_cast<float>(v);
        }
      }
    }
    auto bytes = std::make_shared<std::vector<std::byte>>(grad::encode_with_params(*l.format, w.data(), l.rows, l.cols,
                                                                                   params, l.name));
    const std::span<const std::byte> view(*bytes);
    return QuantizedTensor::view(*l.format, l.rows, l.cols, view, std::move(bytes));
  }

  const ModelReconstructionTarget& t_;
  const ZeroQatOptions& o_;
  ThreadPool& pool_;
  std::vector<Linear> linears_;
  std::vector<float> theta_;
  int64_t groups_ = 0, values_ = 0;
};

// Losses of the students on one sample (the teacher's logits computed once for all of them).
void add_sample_losses(const ModelReconstructionTarget& t, const ZeroQatOptions& o, std::span<const model::Model> students,
                       const std::vector<int32_t>& ids, std::span<double> sums, ThreadPool& pool) {
  const int64_t vocab = t.quantized->config.vocab_size;
  const auto rows = static_cast<int64_t>(ids.size());
  Tensor teacher;
  std::vector<int32_t> targets;
  if (o.cross_entropy) {
    targets = grad::next_token_targets(ids, rows);
  } else {
    teacher = model::forward(*t.teacher, ids, pool);
  }
  for (size_t k = 0; k < students.size(); ++k) {
    const Tensor logits = model::forward(students[k], ids, pool);
    sums[k] += o.cross_entropy ? grad::cross_entropy<float>(pool, logits.f32(), rows, vocab, targets, nullptr)
                               : grad::kl_divergence<float>(pool, logits.f32(), teacher.f32(), rows, vocab, nullptr);
  }
}

double full_loss(const ModelReconstructionTarget& t, const ZeroQatOptions& o, const model::Model& m, ThreadPool& pool) {
  double sum = 0;
  for (const auto& s : t.samples) add_sample_losses(t, o, std::span(&m, 1), s, std::span(&sum, 1), pool);
  return sum / static_cast<double>(t.samples.size());
}

ZeroQatResult run(const ModelReconstructionTarget& t, const ZeroQatOptions& o, ThreadPool& pool) {
  if (t.samples.empty()) fail(ErrorKind::kInvalidArgument, "it needs calibration samples (token sequences)");
  for (size_t s = 0; s < t.samples.size(); ++s)
    if (t.samples[s].size() != t.samples[0].size() || t.samples[s].empty())
      fail(ErrorKind::kInvalidArgument, "calibration sample {} has {} tokens, sample 0 {}: they must be of one "
           "length (> 0)", s, t.samples[s].size(), t.samples[0].size());
  const auto samples = static_cast<int64_t>(t.samples.size());
  const int64_t batch = std::min(o.batch, samples);

  ZeroQatResult r;
  Trainer tr(t, o, pool);
  r.loss_start = full_loss(t, o, *t.quantized, pool);
  if (!std::isfinite(r.loss_start))
    fail(ErrorKind::kInvalidArgument, "the loss of the start over the calibration samples is not finite ({}): a "
         "non-finite value in the {} model's weights or logits", r.loss_start, o.cross_entropy ? "quantized" : "float or quantized");
  r.loss_trained = r.loss_start;
  if (tr.empty()) return r;
  r.trained = true;
  r.trained_values = tr.values();

  std::vector<int64_t> order(static_cast<size_t>(samples));
  for (int64_t i = 0; i < samples; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(o.seed);
  detail::shuffle(order, rng);
  int64_t cursor = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<model::Model> students;
  std::vector<double> sums(static_cast<size_t>(2 * o.directions));
  for (int64_t step = 0; step < o.steps; ++step) {
    students.clear();
    for (int64_t j = 0; j < o.directions; ++j) {
      students.push_back(tr.student({.sign = 1, .step = step, .dir = j}));
      students.push_back(tr.student({.sign = -1, .step = step, .dir = j}));
    }
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int64_t k = 0; k < batch; ++k) {
      if (cursor == samples) {
        detail::shuffle(order, rng);
        cursor = 0;
      }
      add_sample_losses(t, o, students, t.samples[static_cast<size_t>(order[static_cast<size_t>(cursor++)])], sums,
                        pool);
    }
    for (double& s : sums) s /= static_cast<double>(batch);
    for (const double s : sums)
      if (!std::isfinite(s)) {
        const std::string bad = tr.non_finite();
        fail(ErrorKind::kInvalidArgument, "the loss at step {} is not finite ({}){}", step, s,
             bad.empty() ? std::string() : fmt::format("; first non-finite parameter: {}", bad));
      }
    students.clear();  // their bytes, before the update
    for (int64_t j = 0; j < o.directions; ++j) {
      const double d = (sums[static_cast<size_t>(2 * j)] - sums[static_cast<size_t>(2 * j + 1)]) / 2.0 /
                       static_cast<double>(o.directions);
      tr.update(step, j, d);
    }
    r.curve.push_back((sums[0] + sums[1]) / 2.0);
    if (t.progress != nullptr && *t.progress) {
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      (*t.progress)({.step = "zeroqat", .layer = -1, .done = step + 1, .total = o.steps, .loss = r.curve.back(),
                     .seconds = sec, .eta_seconds = sec / static_cast<double>(step + 1) *
                                                    static_cast<double>(o.steps - step - 1)});
    }
  }
  r.steps = o.steps;
  if (const std::string bad = tr.non_finite(); !bad.empty())
    fail(ErrorKind::kInvalidArgument, "training diverged by step {}: {} is not finite", o.steps, bad);

  const model::Model as_written = tr.student({});
  r.loss_trained = full_loss(t, o, as_written, pool);
  if (r.loss_trained < r.loss_start) {
    r.trained_kept = true;
    r.weights = tr.trained_weights(as_written);
  }
  return r;
}

}  // namespace

float zeroqat_normal(uint64_t seed, int64_t step, int64_t direction, uint64_t index) {
  // A key per (seed, step, direction), then two uniforms in (0, 1] per index for Box–Muller.
  const uint64_t key = splitmix64(splitmix64(seed ^ 0x5a45524f514154ULL) ^ splitmix64(static_cast<uint64_t>(step)) ^
                                  (static_cast<uint64_t>(direction) * 0xd1b54a32d192ed03ULL));
  const uint64_t a = splitmix64(key + 2 * index);
  const uint64_t b = splitmix64(key + 2 * index + 1);
  const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1p-53;  // (0, 1]
  const double u2 = static_cast<double>(b >> 11) * 0x1p-53;          // [0, 1)
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
}

ZeroQatResult zeroqat(const ModelReconstructionTarget& t, const ZeroQatOptions& o, ThreadPool& pool) {
  try {
    return run(t, o, pool);
  } catch (const Error& e) {
    fail(e.kind(), "zeroqat: {}", e.what());
  }
}

}  // namespace calq::quant
