#include "grad/optim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"

namespace calq::grad {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Two parameters, two steps, by hand from torch.optim.AdamW's update (lr 0.1, λ 0.01, β 0.9/0.999,
// eps 1e-8):
//  p = 1.0, g = 0.5 then −0.25:
//   step 1: p·(1 − 0.001) = 0.999; m = 0.05, v = 2.5e-4; m̂ = 0.5, v̂ = 0.25; p = 0.999 − 0.1·0.5/(0.5 + 1e-8)
//           = 0.899000002
//   step 2: p·0.999 = 0.898101002; m = 0.02, v = 3.1225e-4; m̂ = 0.02/0.19, v̂ = 3.1225e-4/0.001999;
//           p = 0.898101002 − 0.1·0.105263158/(0.395225381 + 1e-8) = 0.871467299
//  p = −2.0, g = −3.0 then 0 (group without decay):
//   step 1: m = −0.3, v = 0.009; m̂ = −3, v̂ = 9; p = −2 + 0.1·3/3 = −1.9 (no decay)
//   step 2: m = −0.27, v = 0.008991; m̂ = −0.27/0.19 = −1.421052632, v̂ = 0.008991/0.001999 = 4.497748874;
//           p = −1.9 + 0.1·1.421052632/2.120789681 = −1.832994...
TEST(AdamW, TwoStepsByHand) {
  std::vector<float> p1{1.0f}, p2{-2.0f}, g1{0.5f}, g2{-3.0f};
  std::vector<ParamGroup> groups{{.name = "a", .param = p1, .grad = g1},
                                 {.name = "b", .param = p2, .grad = g2, .decay = false}};
  const std::vector<size_t> sizes{1, 1};
  AdamW opt({.lr = 0.1, .weight_decay = 0.01}, sizes);
  opt.step(groups);
  EXPECT_NEAR(p1[0], 0.899000002, 1e-7);
  EXPECT_NEAR(p2[0], -1.9, 1e-7);
  g1[0] = -0.25f;
  g2[0] = 0.0f;
  opt.step(groups);
  EXPECT_NEAR(p1[0], 0.871467299, 1e-7);
  const double m_hat = -0.27 / 0.19, v_hat = 0.008991 / 0.001999;
  EXPECT_NEAR(p2[0], -1.9 - 0.1 * m_hat / (std::sqrt(v_hat) + 1e-8), 1e-7);
  EXPECT_NEAR(p2[0], -1.832994175, 1e-7);
  EXPECT_NEAR(opt.first_moment(0)[0], 0.02, 1e-8);
  EXPECT_NEAR(opt.second_moment(0)[0], 3.1225e-4, 1e-10);
  EXPECT_EQ(opt.steps_taken(), 2);
}

// f(x) = Σ a_i (x_i − c_i)², a convex quadratic with condition number 100.
double quadratic(const std::vector<float>& x, std::vector<float>& grad) {
  double f = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double a = 0.01 + static_cast<double>(i), c = std::sin(static_cast<double>(i) + 1.0);
    f += a * (x[i] - c) * (x[i] - c);
    grad[i] = static_cast<float>(2 * a * (x[i] - c));
  }
  return f;
}

TEST(AdamW, ConvergesOnAConvexProblemWithCosineSchedule) {
  std::vector<float> x(8, 0.0f), g(8);
  std::vector<ParamGroup> groups{{.name = "x", .param = x, .grad = g}};
  const std::vector<size_t> sizes{x.size()};
  AdamW opt({.lr = 0.05, .weight_decay = 0}, sizes);
  const CosineSchedule sched({.lr = 0.05, .warmup_steps = 20, .total_steps = 2000});
  const double f0 = quadratic(x, g);
  for (int64_t s = 0; s < 2000; ++s) {
    quadratic(x, g);
    opt.step(groups, sched.lr(s));
  }
  EXPECT_LT(quadratic(x, g), 1e-6 * f0);
}

TEST(SignSgd, StepIsLrTimesSignAndConverges) {
  std::vector<float> x{1.0f, -1.0f, 0.5f}, g{2.0f, -0.001f, 0.0f};
  std::vector<ParamGroup> groups{{.name = "x", .param = x, .grad = g, .lr_scale = 2.0}};
  SignSgd opt({.lr = 0.01});
  opt.step(groups);
  EXPECT_FLOAT_EQ(x[0], 1.0f - 0.02f);
  EXPECT_FLOAT_EQ(x[1], -1.0f + 0.02f);
  EXPECT_FLOAT_EQ(x[2], 0.5f);  // sign(0) = 0

  std::vector<float> y(8, 0.0f), gy(8);
  std::vector<ParamGroup> gs{{.name = "y", .param = y, .grad = gy}};
  SignSgd opt2({.lr = 0.01});
  const CosineSchedule sched({.lr = 0.01, .total_steps = 1000});
  const double f0 = quadratic(y, gy);
  for (int64_t s = 0; s < 1000; ++s) {
    quadratic(y, gy);
    opt2.step(gs, sched.lr(s));
  }
  EXPECT_LT(quadratic(y, gy), 1e-4 * f0);
}

TEST(Optim, NonFiniteGradientNamesGroupAndStepAndUpdatesNothing) {
  std::vector<float> a{1.0f, 2.0f}, ga{0.1f, 0.1f}, b{3.0f}, gb{0.2f};
  std::vector<ParamGroup> groups{{.name = "layers.0.q_proj.weight", .param = a, .grad = ga},
                                 {.name = "layers.0.q_proj.step", .param = b, .grad = gb}};
  const std::vector<size_t> sizes{2, 1};
  AdamW opt({}, sizes);
  opt.step(groups);
  opt.step(groups);
  const std::vector<float> a_before = a, b_before = b;
  gb[0] = std::numeric_limits<float>::quiet_NaN();
  const std::string msg = error_of([&] { opt.step(groups); });
  EXPECT_NE(msg.find("'layers.0.q_proj.step'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step 3"), std::string::npos) << msg;
  EXPECT_EQ(a, a_before);
  EXPECT_EQ(b, b_before);
  EXPECT_EQ(opt.steps_taken(), 2);

  SignSgd sgd({});
  ga[1] = std::numeric_limits<float>::infinity();
  gb[0] = 0.0f;
  const std::string msg2 = error_of([&] { sgd.step(groups); });
  EXPECT_NE(msg2.find("'layers.0.q_proj.weight' (element 1) at step 1"), std::string::npos) << msg2;
  const std::string msg3 = error_of([&] { clip_grad_norm(groups, 1.0, 7); });
  EXPECT_NE(msg3.find("at step 7"), std::string::npos) << msg3;
}

TEST(Optim, InvalidOptionsNameTheOption) {
  const std::vector<size_t> sizes{1};
  auto adamw = [&](const AdamWOptions& o) { return error_of([&] { AdamW(o, sizes); }); };
  EXPECT_NE(adamw({.lr = 0}).find("'lr'"), std::string::npos);
  EXPECT_NE(adamw({.lr = -1e-3}).find("'lr'"), std::string::npos);
  EXPECT_NE(adamw({.beta1 = 1.0}).find("'beta1'"), std::string::npos);
  EXPECT_NE(adamw({.beta2 = -0.1}).find("'beta2'"), std::string::npos);
  EXPECT_NE(adamw({.eps = 0}).find("'eps'"), std::string::npos);
  EXPECT_NE(adamw({.weight_decay = -0.1}).find("'weight_decay'"), std::string::npos);
  EXPECT_EQ(adamw({}), "");
  EXPECT_NE(error_of([] { SignSgd({.lr = 0}); }).find("'lr'"), std::string::npos);
  EXPECT_NE(error_of([] { SignSgd({.weight_decay = -1}); }).find("'weight_decay'"), std::string::npos);
  EXPECT_NE(error_of([] { CosineSchedule({.total_steps = 0}); }).find("'total_steps'"), std::string::npos);
  EXPECT_NE(error_of([] { CosineSchedule({.warmup_steps = 5, .total_steps = 5}); }).find("'warmup_steps'"),
            std::string::npos);
  EXPECT_NE(error_of([] { CosineSchedule({.lr = 1, .min_lr = 2}); }).find("'min_lr'"), std::string::npos);
  EXPECT_NE(error_of([] { CosineSchedule({.lr = 0}); }).find("'lr'"), std::string::npos);
  std::vector<float> p{1}, g{1};
  std::vector<ParamGroup> groups{{.name = "p", .param = p, .grad = g}};
  AdamW opt({}, sizes);
  EXPECT_NE(error_of([&] { opt.step(groups, 0.0); }).find("'lr'"), std::string::npos);
  EXPECT_NE(error_of([&] { clip_grad_norm(groups, 0.0, 1); }).find("'max_norm'"), std::string::npos);
}

TEST(CosineSchedule, WarmupPeakAndDecay) {
  const CosineSchedule s({.lr = 1.0, .warmup_steps = 4, .total_steps = 14, .min_lr = 0.1});
  EXPECT_DOUBLE_EQ(s.lr(0), 0.25);
  EXPECT_DOUBLE_EQ(s.lr(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(4), 1.0);
  EXPECT_NEAR(s.lr(9), 0.1 + 0.9 * 0.5, 1e-15);  // halfway through the decay: cos(π/2) = 0
  for (int64_t t = 5; t < 14; ++t) EXPECT_LT(s.lr(t), s.lr(t - 1));
  EXPECT_GT(s.lr(13), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(100), s.lr(13));
  const CosineSchedule flat({.lr = 0.5, .total_steps = 1});
  EXPECT_DOUBLE_EQ(flat.lr(0), 0.5);
}

TEST(ClipGradNorm, ScalesToMaxNormInAFixedOrder) {
  std::vector<float> p1(3), p2(2), g1{3.0f, 0.0f, 0.0f}, g2{0.0f, 4.0f};
  std::vector<ParamGroup> groups{{.name = "a", .param = p1, .grad = g1}, {.name = "b", .param = p2, .grad = g2}};
  EXPECT_DOUBLE_EQ(clip_grad_norm(groups, 10.0, 1), 5.0);
  EXPECT_EQ(g1[0], 3.0f);  // below max_norm: untouched
  EXPECT_DOUBLE_EQ(clip_grad_norm(groups, 1.0, 1), 5.0);
  EXPECT_NEAR(g1[0], 0.6, 1e-6);
  EXPECT_NEAR(g2[1], 0.8, 1e-6);
  double n2 = 0;
  for (float x : g1) n2 += x * x;
  for (float x : g2) n2 += x * x;
  EXPECT_NEAR(std::sqrt(n2), 1.0, 1e-6);
}

}  // namespace
}  // namespace calq::grad
