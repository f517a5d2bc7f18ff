#include "grad/optim.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace calq::grad {
namespace {

void check_lr(std::string_view who, double lr) {
  if (!(lr > 0) || !std::isfinite(lr)) {
    fail(ErrorKind::kInvalidArgument, "{} option 'lr' must be a finite number > 0, got {}", who, lr);
  }
}

void check_decay(std::string_view who, double decay) {
  if (!(decay >= 0) || !std::isfinite(decay)) {
    fail(ErrorKind::kInvalidArgument, "{} option 'weight_decay' must be a finite number >= 0, got {}", who, decay);
  }
}

}  // namespace

void check_gradients(std::span<const ParamGroup> groups, int64_t step) {
  for (const ParamGroup& g : groups) {
    if (g.param.size() != g.grad.size()) {
      fail(ErrorKind::kInvalidArgument, "parameter group '{}' has {} parameters but {} gradients", g.name,
           g.param.size(), g.grad.size());
    }
    for (size_t i = 0; i < g.grad.size(); ++i) {
      if (!std::isfinite(g.grad[i])) {
        fail(ErrorKind::kInvalidArgument, "non-finite gradient {} in parameter group '{}' (element {}) at step {}",
             g.grad[i], g.name, i, step);
      }
    }
  }
}

AdamW::AdamW(const AdamWOptions& o, std::span<const size_t> sizes) : options_(o) {
  check_lr("adamw", o.lr);
  check_decay("adamw", o.weight_decay);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) fail(ErrorKind::kInvalidArgument, "adamw option 'beta1' must be in [0, 1), got {}", o.beta1);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) fail(ErrorKind::kInvalidArgument, "adamw option 'beta2' must be in [0, 1), got {}", o.beta2);
  if (!(o.eps > 0) || !std::isfinite(o.eps)) fail(ErrorKind::kInvalidArgument, "adamw option 'eps' must be a finite number > 0, got {}", o.eps);
  for (size_t n : sizes) {
    m_.emplace_back(n, 0.0f);
    v_.emplace_back(n, 0.0f);
  }
}

void AdamW::step(std::span<ParamGroup> groups, double lr) {
  check_lr("adamw", lr);
  if (groups.size() != m_.size()) {
    fail(ErrorKind::kInvalidArgument, "adamw was made for {} parameter groups, step() got {}", m_.size(), groups.size());
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].param.size() != m_[g].size()) {
      fail(ErrorKind::kInvalidArgument, "adamw parameter group '{}' has {} parameters, the optimizer was made for {}",
           groups[g].name, groups[g].param.size(), m_[g].size());
    }
  }
  check_gradients(groups, t_ + 1);
  ++t_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(t_));
  const double bias2 = 1.0 - std::pow(b2, static_cast<double>(t_));
  const double sqrt_bias2 = std::sqrt(bias2);
  for (size_t g = 0; g < groups.size(); ++g) {
    ParamGroup& group = groups[g];
    const double glr = lr * group.lr_scale;
    const double keep = group.decay ? 1.0 - glr * options_.weight_decay : 1.0;
    const double step_size = glr / bias1;
    float* m = m_[g].data();
    float* v = v_[g].data();
    for (size_t i = 0; i < group.param.size(); ++i) {
      const double grad = group.grad[i];
      const double mi = b1 * m[i] + (1.0 - b1) * grad;
      const double vi = b2 * v[i] + (1.0 - b2) * grad * grad;
      m[i] = static_cast<float>(mi);
      v[i] = static_cast<float>(vi);
      const double p = static_cast<double>(group.param[i]) * keep;
      group.param[i] = static_cast<float>(p - step_size * mi / (std::sqrt(vi) / sqrt_bias2 + options_.eps));
    }
  }
}

SignSgd::SignSgd(const SignSgdOptions& o) : options_(o) {
  check_lr("signsgd", o.lr);
  check_decay("signsgd", o.weight_decay);
}

void SignSgd::step(std::span<ParamGroup> groups, double lr) {
  check_lr("signsgd", lr);
  check_gradients(groups, t_ + 1);
  ++t_;
  for (ParamGroup& group : groups) {
    const double glr = lr * group.lr_scale;
    const double keep = group.decay ? 1.0 - glr * options_.weight_decay : 1.0;
    for (size_t i = 0; i < group.param.size(); ++i) {
      const float gr = group.grad[i];
      const double sign = gr > 0 ? 1.0 : gr < 0 ? -1.0 : 0.0;
      group.param[i] = static_cast<float>(static_cast<double>(group.param[i]) * keep - glr * sign);
    }
  }
}

CosineSchedule::CosineSchedule(const CosineScheduleOptions& o) : options_(o) {
  check_lr("cosine schedule", o.lr);
  if (o.total_steps < 1) {
    fail(ErrorKind::kInvalidArgument, "cosine schedule option 'total_steps' must be at least 1, got {}", o.total_steps);
  }
  if (o.warmup_steps < 0 || o.warmup_steps >= o.total_steps) {
    fail(ErrorKind::kInvalidArgument, "cosine schedule option 'warmup_steps' must be in [0, total_steps = {}), got {}",
         o.total_steps, o.warmup_steps);
  }
  if (!(o.min_lr >= 0 && o.min_lr <= o.lr)) {
    fail(ErrorKind::kInvalidArgument, "cosine schedule option 'min_lr' must be in [0, lr = {}], got {}", o.lr, o.min_lr);
  }
}

double CosineSchedule::lr(int64_t step) const {
  const CosineScheduleOptions& o = options_;
  step = std::clamp<int64_t>(step, 0, o.total_steps - 1);
  if (step < o.warmup_steps) {
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  const double progress =
      static_cast<double>(step - o.warmup_steps) / static_cast<double>(o.total_steps - o.warmup_steps);
  return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

double clip_grad_norm(std::span<ParamGroup> groups, double max_norm, int64_t step) {
  if (!(max_norm > 0) || !std::isfinite(max_norm)) {
    fail(ErrorKind::kInvalidArgument, "gradient clipping option 'max_norm' must be a finite number > 0, got {}",
         max_norm);
  }
  check_gradients(groups, step);
  double sum = 0;
  for (const ParamGroup& g : groups) {
    for (float x : g.grad) sum += static_cast<double>(x) * x;
  }
  const double norm = std::sqrt(sum);
  if (norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (ParamGroup& g : groups) {
      for (float& x : g.grad) x = static_cast<float>(x * scale);
    }
  }
  return norm;
}

}  // namespace calq::grad
