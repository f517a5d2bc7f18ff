// Learnable activation clipping: the float forward is model::fake_quantize_activations bit for bit
// (int4-token and int8-token at several clips), the double backward is the exact gradient of the
// straight-through surrogate (round(u) → u + frozen residual, clamps and the row maxima held),
// the clamp's gradients on a small worked example, and the same bytes for 1 and 3 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "grad/flat_ops.h"
#include "grad/grad_check_testutil.h"
#include "model/linear_weight.h"

namespace calq::grad {
namespace {

using testutil::random_values;

template <typename T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// x[rows, cols]: Gaussian with a few large values (so clipping bites) and row 2 all zero.
std::vector<double> activations(int64_t rows, int64_t cols, uint32_t seed) {
  auto x = random_values(static_cast<size_t>(rows * cols), seed);
  for (size_t i = 7; i < x.size(); i += 37) x[i] *= 12.0;
  std::fill_n(x.begin() + 2 * cols, cols, 0.0);
  return x;
}

TEST(Lac, FloatForwardIsTheModelsActivationQuantization) {
  ThreadPool pool(2);
  const int64_t rows = 13, cols = 96;
  const auto xd = activations(rows, cols, 3);
  const std::vector<float> x(xd.begin(), xd.end());
  using Kind = model::ActivationQuant::Kind;
  for (const auto& [bits, kind] : {std::pair{4, Kind::kInt4PerToken}, std::pair{8, Kind::kInt8PerToken}}) {
    for (const float gamma : {-3.0f, -0.5f, 0.0f, 1.0f, 2.5f, 4.0f, 30.0f}) {
      SCOPED_TRACE(std::to_string(bits) + " bits, gamma " + std::to_string(gamma));
      const float clip = lac_clip(gamma);
      const model::ActivationQuant spec{.kind = kind, .clip = clip};
      ASSERT_TRUE(spec.valid());
      std::vector<float> want(x.size()), got(x.size());
      int64_t saturated = 0;
      model::fake_quantize_activations(pool, spec, x.data(), cols, rows, cols, want.data(), &saturated);
      lac_forward(pool, x.data(), rows, cols, bits, gamma, got.data());
      EXPECT_TRUE(same_bytes(got, want));
      // A row's largest value saturates once u = qmax / c rounds past qmax.
      const float qmax = static_cast<float>(spec.qmax());
      EXPECT_EQ(saturated > 0, clip < qmax / (qmax + 0.5f)) << saturated;
      for (int64_t j = 0; j < cols; ++j) EXPECT_EQ(got[2 * cols + j], 0.0f);
    }
  }
  EXPECT_EQ(lac_clip(30.0f), 1.0f);
  EXPECT_EQ(lac_clip(0.0), 0.5);
}

// The surrogate written out in double: per element, inside (|round(x/s)| <= qmax at the base point)
// ŷ = x + s·res with res = round(u₀) − u₀ frozen, else ŷ = ±qmax·s; s = sigmoid(γ)·m/qmax with the
// row maxima m of the base point; rows with s = 0 pass x through.
struct Surrogate {
  int64_t rows, cols;
  double qmax;
  std::vector<double> m, res;
  std::vector<int> side;  // 0 inside, ±1 clamped at ±qmax

  Surrogate(const std::vector<double>& x0, int64_t r, int64_t c, int bits, double gamma0)
      : rows(r), cols(c), qmax(std::pow(2.0, bits - 1) - 1), m(static_cast<size_t>(r), 0.0), res(x0.size(), 0.0),
        side(x0.size(), 0) {
    const double c0 = 1.0 / (1.0 + std::exp(-gamma0));
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) m[i] = std::max(m[i], std::fabs(x0[i * cols + j]));
      const double s = c0 * m[i] / qmax;
      for (int64_t j = 0; j < cols && s > 0; ++j) {
        const double u = x0[i * cols + j] / s, q = std::nearbyint(u);
        res[i * cols + j] = q - u;
        side[i * cols + j] = std::fabs(q) <= qmax ? 0 : (q > 0 ? 1 : -1);
      }
    }
  }
  double loss(const std::vector<double>& x, double gamma, const std::vector<double>& w) const {
    const double c = 1.0 / (1.0 + std::exp(-gamma));
    double sum = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const double s = c * m[i] / qmax;
      for (int64_t j = 0; j < cols; ++j) {
        const size_t k = static_cast<size_t>(i * cols + j);
        const double y = s == 0 ? x[k] : side[k] == 0 ? x[k] + s * res[k] : side[k] * qmax * s;
        sum += w[k] * y;
      }
    }
    return sum;
  }
};

TEST(Lac, GradientsAreTheSurrogatesExactGradient) {
  ThreadPool pool(2);
  const int64_t rows = 5, cols = 24;
  for (const int bits : {3, 4, 8}) {
    for (const double gamma : {-1.0, 0.7, 3.0}) {
      SCOPED_TRACE(std::to_string(bits) + " bits, gamma " + std::to_string(gamma));
      auto x = activations(rows, cols, 11 + static_cast<uint32_t>(bits));
      const auto w = random_values(x.size(), 12);
      const Surrogate sur(x, rows, cols, bits, gamma);
      std::vector<double> y(x.size());
      lac_forward(pool, x.data(), rows, cols, bits, gamma, y.data());
      double direct = 0;
      for (size_t k = 0; k < y.size(); ++k) direct += w[k] * y[k];
      EXPECT_NEAR(sur.loss(x, gamma, w), direct, 1e-12);  // anchored at the forward

      std::vector<double> dx(x.size(), 9.0);
      double dgamma_added = 0.125;
      lac_backward(pool, x.data(), rows, cols, bits, gamma, w.data(), dx.data(), &dgamma_added);
      double dgamma = 0;
      lac_backward<double>(pool, x.data(), rows, cols, bits, gamma, w.data(), nullptr, &dgamma);
      EXPECT_EQ(dgamma_added, 0.125 + dgamma);  // added; dx null is skipped
      const double h = 1e-6;
      const double fd_gamma = (sur.loss(x, gamma + h, w) - sur.loss(x, gamma - h, w)) / (2 * h);
      EXPECT_NEAR(dgamma, fd_gamma, 1e-7 * std::max(1.0, std::fabs(fd_gamma)));
      EXPECT_GT(std::fabs(fd_gamma), 1e-3);
      size_t clamped = 0;
      for (size_t k = 0; k < x.size(); ++k) {
        const double saved = x[k];
        x[k] = saved + h;
        const double up = sur.loss(x, gamma, w);
        x[k] = saved - h;
        const double down = sur.loss(x, gamma, w);
        x[k] = saved;
        EXPECT_NEAR(dx[k], (up - down) / (2 * h), 1e-7) << k;
        clamped += sur.side[k] != 0;
      }
      const double c = lac_clip(gamma);
      EXPECT_EQ(clamped > 0, c < sur.qmax / (sur.qmax + 0.5)) << clamped;  // as in the forward test
      std::vector<double> dx2(x.size());
      lac_backward<double>(pool, x.data(), rows, cols, bits, gamma, w.data(), dx2.data(), nullptr);
      EXPECT_TRUE(same_bytes(dx, dx2));
    }
  }
}

TEST(Lac, ClampedValuesPassNoGradientToXAndPullTheScale) {
  // One row, 4 bits, γ = 0 (c = 1/2): m = 4, s = 2/7; x/s = −14 (clamped to −7), 3.85 → 4,
  // 7 (inside at the edge), 1.05 → 1.
  ThreadPool pool(1);
  const std::vector<double> x = {-4.0, 1.1, 2.0, 0.3}, dy = {1.0, 1.0, 1.0, 1.0};
  std::vector<double> y(4), dx(4);
  lac_forward(pool, x.data(), 1, 4, 4, 0.0, y.data());
  const double s = 0.5 * 4.0 / 7.0;
  EXPECT_DOUBLE_EQ(y[0], -7 * s);
  EXPECT_DOUBLE_EQ(y[1], 4 * s);
  EXPECT_DOUBLE_EQ(y[2], 7 * s);
  EXPECT_DOUBLE_EQ(y[3], 1 * s);
  double dgamma = 0;
  lac_backward(pool, x.data(), 1, 4, 4, 0.0, dy.data(), dx.data(), &dgamma);
  EXPECT_EQ(dx, (std::vector<double>{0.0, 1.0, 1.0, 1.0}));
  // ∂ŷ/∂s: −qmax, 4 − 3.85, ≈ 0, 1 − 1.05; ds/dγ = c(1 − c)·m/qmax = 1/7.
  EXPECT_NEAR(dgamma, (-7.0 + 0.15 + 0.0 - 0.05) / 7.0, 1e-12);
  // A zero row passes through with the identity gradient and nothing to γ.
  const std::vector<double> z = {0.0, -0.0, 0.0};
  std::vector<double> yz(3, 5.0), dz(3);
  lac_forward(pool, z.data(), 1, 3, 4, 1.0, yz.data());
  EXPECT_TRUE(same_bytes(yz, z));
  double dg0 = 0;
  lac_backward(pool, z.data(), 1, 3, 4, 1.0, dy.data(), dz.data(), &dg0);
  EXPECT_EQ(dz, (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_EQ(dg0, 0.0);
}

template <typename T>
void expect_lac_thread_identity() {
  const int64_t rows = 300, cols = 128;  // several row chunks
  const auto xd = activations(rows, cols, 21), gd = random_values(static_cast<size_t>(rows * cols), 22);
  const std::vector<T> x(xd.begin(), xd.end()), dy(gd.begin(), gd.end());
  auto run = [&](size_t threads, std::vector<T>& y, std::vector<T>& dx, T& dgamma) {
    ThreadPool pool(threads);
    y.assign(x.size(), T(0));
    dx.assign(x.size(), T(0));
    dgamma = T(0);
    lac_forward(pool, x.data(), rows, cols, 4, T(-0.3), y.data());
    lac_backward(pool, x.data(), rows, cols, 4, T(-0.3), dy.data(), dx.data(), &dgamma);
  };
  std::vector<T> y1, dx1, y3, dx3;
  T g1, g3;
  run(1, y1, dx1, g1);
  run(3, y3, dx3, g3);
  EXPECT_TRUE(same_bytes(y1, y3));
  EXPECT_TRUE(same_bytes(dx1, dx3));
  EXPECT_EQ(std::memcmp(&g1, &g3, sizeof(T)), 0);
  EXPECT_NE(g1, T(0));
}

TEST(Lac, SameBytesForOneAndThreeThreads) {
  expect_lac_thread_identity<float>();
  expect_lac_thread_identity<double>();
}

}  // namespace
}  // namespace calq::grad
