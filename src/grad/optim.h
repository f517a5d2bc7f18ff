// Optimizers, learning-rate schedule and gradient clipping for calq's training methods (issue 17).
//
// Contract:
//  * Parameters and their gradients are flat float arrays (ParamGroup: spans of equal length, one
//    group per parameter tensor / kind). Updates are plain loops in group then element order, each
//    element's arithmetic in double from the float parameter and state: the same inputs give the same
//    bytes on every run and machine (no threads, no reductions whose order could change).
//  * Every step first checks every gradient of every group: a NaN or Inf is calq::Error naming the
//    group, the element and the step (1-based, the step being taken), and nothing is updated.
//  * Options are validated when the optimizer / schedule is made (and the learning rate of each step
//    when it is taken): calq::Error(kInvalidArgument) naming the option.
//  * AdamW follows torch.optim.AdamW (defaults lr 1e-3, betas 0.9 / 0.999, eps 1e-8, weight decay
//    1e-2; decoupled decay p ← p·(1 − lr·λ) before the Adam step; bias-corrected moments; eps added
//    to the corrected √v̂). SignSGD is AutoRound's update p ← p − lr·sign(g) (sign(0) = 0), with
//    optional decoupled weight decay.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace calq::grad {

// One parameter tensor and its gradient (same length). lr_scale multiplies the step's learning rate
// (per-kind learning rates: weights vs step sizes vs clipping factors); decay = false exempts the
// group from weight decay (norm weights, step sizes).
struct ParamGroup {
  std::string name;  // for error messages: "layers.3.mlp.down_proj.weight", "layers.3.down_proj.step"
  std::span<float> param;
  std::span<float> grad;
  double lr_scale = 1.0;
  bool decay = true;
};

// Throws calq::Error naming the group, element and `step` when a gradient is NaN or Inf, or when a
// group's param and grad lengths differ.
void check_gradients(std::span<const ParamGroup> groups, int64_t step);

struct AdamWOptions {
  double lr = 1e-3;            // peak learning rate (> 0); a schedule may pass another per step
  double beta1 = 0.9;          // in [0, 1)
  double beta2 = 0.999;        // in [0, 1)
  double eps = 1e-8;           // > 0
  double weight_decay = 1e-2;  // >= 0, decoupled
};

class AdamW {
 public:
  // `sizes` are the lengths of the groups step() will be given, in order (moments start at 0).
  AdamW(const AdamWOptions& options, std::span<const size_t> sizes);
  // One update with learning rate lr (> 0; options.lr when lr is omitted). Groups must match `sizes`.
  void step(std::span<ParamGroup> groups, double lr);
  void step(std::span<ParamGroup> groups) { step(groups, options_.lr); }
  int64_t steps_taken() const { return t_; }
  const AdamWOptions& options() const { return options_; }
  // First / second moment of group g (for tests and checkpoints).
  std::span<const float> first_moment(size_t g) const { return m_[g]; }
  std::span<const float> second_moment(size_t g) const { return v_[g]; }

 private:
  AdamWOptions options_;
  std::vector<std::vector<float>> m_, v_;
  int64_t t_ = 0;
};

struct SignSgdOptions {
  double lr = 5e-3;          // > 0 (AutoRound's default for 200 steps)
  double weight_decay = 0;   // >= 0, decoupled
};

class SignSgd {
 public:
  explicit SignSgd(const SignSgdOptions& options);
  void step(std::span<ParamGroup> groups, double lr);
  void step(std::span<ParamGroup> groups) { step(groups, options_.lr); }
  int64_t steps_taken() const { return t_; }

 private:
  SignSgdOptions options_;
  int64_t t_ = 0;
};

// Cosine decay with linear warmup over steps 0 .. total_steps − 1:
//   step < warmup:  lr · (step + 1) / warmup_steps
//   otherwise:      min_lr + (lr − min_lr) · (1 + cos(π · (step − warmup) / (total − warmup))) / 2
// so the first post-warmup step has lr and the rate decays towards (never reaching) min_lr.
struct CosineScheduleOptions {
  double lr = 1e-3;            // peak (> 0)
  int64_t warmup_steps = 0;    // >= 0, < total_steps
  int64_t total_steps = 1;     // >= 1
  double min_lr = 0;           // in [0, lr]
};

class CosineSchedule {
 public:
  explicit CosineSchedule(const CosineScheduleOptions& options);
  // The learning rate of 0-based `step`; steps past the end keep the last one's rate.
  double lr(int64_t step) const;

 private:
  CosineScheduleOptions options_;
};

// Global L2 norm of all gradients (squares summed in double, group then element order) and, when it
// exceeds max_norm (> 0), every gradient scaled by max_norm / (norm + 1e-6) as torch's
// clip_grad_norm_ does. Returns the norm before clipping. Checks the gradients first
// (check_gradients with `step`).
double clip_grad_norm(std::span<ParamGroup> groups, double max_norm, int64_t step);

}  // namespace calq::grad
