#include "model/kron_transform.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/error_of.h"
#include "support/random_data.h"

namespace calq::model {
namespace {

using testing::error_of;

// float32 unit roundoff.
constexpr double kU = 0x1p-24;

Tensor matrix(int64_t rows, int64_t cols, const std::vector<float>& v) {
  Tensor t = Tensor::zeros(DType::kF32, {rows, cols});
  std::copy(v.begin(), v.end(), t.mutable_f32());
  return t;
}

// A random well-conditioned factor: I + N(0, sigma²/n) entries (its condition stays small).
Tensor near_identity(int64_t n, uint32_t seed, float sigma = 0.3f) {
  std::vector<float> v = testing::gaussian(static_cast<size_t>(n * n), seed, sigma / std::sqrt(static_cast<float>(n)));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i * n + i)] += 1.0f;
  return matrix(n, n, v);
}

Tensor gaussian_matrix(int64_t n, uint32_t seed) {
  return matrix(n, n, testing::gaussian(static_cast<size_t>(n * n), seed));
}

Tensor abs_of(const Tensor& t) {
  Tensor out = Tensor::zeros(DType::kF32, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) out.mutable_f32()[i] = std::fabs(t.f32()[i]);
  return out;
}

// |Aᵀ|·|X|·|B| per element (the reference on absolute values): what the rounding errors of the two
// products scale with.
std::vector<float> abs_bound(const KronTransform& t, const std::vector<float>& x, int64_t m) {
  const KronTransform abs_t = KronTransform::make(abs_of(t.a()), abs_of(t.b()), "abs");
  std::vector<float> out(x.size());
  std::transform(x.begin(), x.end(), out.begin(), [](float v) { return std::fabs(v); });
  abs_t.apply_rows_reference(out.data(), m);
  return out;
}

struct Shape2 {
  int64_t n1, n2;
};

// The sgemm path against the scalar twin. The fast path rounds inside two float32 products of
// n2 and n1 terms; the twin accumulates in double and rounds once. Standard bounds give, per
// element, |fast − exact| ≤ (n1 + n2 + 2)·u·(|Aᵀ|·|X|·|B|) and the twin is within u·|exact|.
TEST(KronTransform, FastPathMatchesScalarTwin) {
  ThreadPool pool(2);
  const std::vector<Shape2> shapes = {{16, 32}, {32, 48}, {6, 10}, {1, 7}, {7, 1}, {5, 5}};
  uint32_t seed = 1;
  for (const Shape2& s : shapes) {
    for (const int64_t m : {1, 5, 16, 17, 37}) {
      SCOPED_TRACE(std::to_string(s.n1) + "x" + std::to_string(s.n2) + " m=" + std::to_string(m));
      const KronTransform t =
          KronTransform::make(gaussian_matrix(s.n1, seed), gaussian_matrix(s.n2, seed + 1), "test");
      seed += 2;
      const int64_t w = t.width();
      const std::vector<float> x = testing::gaussian(static_cast<size_t>(m * w), seed++);
      std::vector<float> fast = x, ref = x;
      t.apply_rows(fast.data(), m, pool);
      t.apply_rows_reference(ref.data(), m);
      const std::vector<float> bound = abs_bound(t, x, m);
      const double gamma = static_cast<double>(s.n1 + s.n2 + 2) * kU;
      for (size_t i = 0; i < x.size(); ++i) {
        const double tol = gamma * bound[i] + kU * std::fabs(ref[i]);
        ASSERT_LE(std::fabs(static_cast<double>(fast[i]) - ref[i]), tol) << "element " << i;
      }
      // The transform did something (not the identity on these inputs).
      EXPECT_NE(fast, x);
    }
  }
}

TEST(KronTransform, SameBitsForAnyThreadCount) {
  ThreadPool one(1), two(2), three(3);
  for (const Shape2 s : {Shape2{16, 32}, Shape2{32, 48}, Shape2{6, 10}}) {
    const KronTransform t = KronTransform::make(gaussian_matrix(s.n1, 7), gaussian_matrix(s.n2, 8), "test");
    const int64_t m = 53;  // several chunks of rows, of uneven sizes
    const std::vector<float> x = testing::gaussian(static_cast<size_t>(m * t.width()), 9);
    std::vector<float> a = x, b = x, c = x;
    t.apply_rows(a.data(), m, one);
    t.apply_rows(b.data(), m, two);
    t.apply_rows(c.data(), m, three);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(a.data(), c.data(), a.size() * sizeof(float)));
  }
}

TEST(KronTransform, IdentityLeavesRowsAlone) {
  ThreadPool pool(2);
  const KronTransform t = KronTransform::identity({.n1 = 6, .n2 = 10});
  const std::vector<float> x = testing::gaussian(60 * 3, 4);
  std::vector<float> y = x;
  t.apply_rows(y.data(), 3, pool);
  EXPECT_EQ(y, x);
}

// x̃·W̃ᵀ = x·T·T^{-1}·Wᵀ = x·Wᵀ. Both sides are summed in double here, so what differs is the
// rounding of x̃ (bounded per element by (n1 + n2 + 2)·u·(|Aᵀ|·|X|·|B|), as above) and of W̃ (one
// rounding of the double result: u·|W̃|). Hence per output j:
//   |x̃·W̃_jᵀ − x·W_jᵀ| ≤ Σ_c (n1 + n2 + 2)·u·M_c·|W̃_jc| + u·|x̃_c|·|W̃_jc|   (plus double-rounding noise).
TEST(KronTransform, FoldPreservesProducts) {
  ThreadPool pool(2);
  for (const Shape2 s : {Shape2{16, 32}, Shape2{32, 48}, Shape2{6, 10}}) {
    SCOPED_TRACE(std::to_string(s.n1) + "x" + std::to_string(s.n2));
    const KronTransform t = KronTransform::make(near_identity(s.n1, 11), near_identity(s.n2, 12), "test");
    const int64_t w = t.width(), m = 7, out = 24;
    const Tensor weight = matrix(out, w, testing::gaussian(static_cast<size_t>(out * w), 13, 0.05f));
    const KronFold fold(t, "test");
    EXPECT_GE(fold.condition_a(), 1.0);
    EXPECT_LT(fold.condition_a(), 100.0);
    const Tensor folded = fold.apply(weight, pool);
    ASSERT_EQ(folded.shape(), weight.shape());
    EXPECT_NE(0, std::memcmp(folded.f32(), weight.f32(), weight.nbytes()));
    const std::vector<float> x = testing::gaussian(static_cast<size_t>(m * w), 14);
    std::vector<float> xt = x;
    t.apply_rows(xt.data(), m, pool);
    const std::vector<float> mx = abs_bound(t, x, m);
    const double gamma = static_cast<double>(s.n1 + s.n2 + 2) * kU;
    double worst = 0.0;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < out; ++j) {
        double want = 0.0, got = 0.0, tol = 0.0;
        for (int64_t c = 0; c < w; ++c) {
          const auto i = static_cast<size_t>(r * w + c);
          const double wt = folded.f32()[j * w + c];
          want += static_cast<double>(x[i]) * weight.f32()[j * w + c];
          got += static_cast<double>(xt[i]) * wt;
          tol += gamma * mx[i] * std::fabs(wt) + kU * std::fabs(static_cast<double>(xt[i]) * wt);
        }
        ASSERT_LE(std::fabs(got - want), tol) << "row " << r << " output " << j;
        worst = std::max(worst, std::fabs(got - want) / tol);
      }
    }
    std::printf("%lldx%lld: worst |Δ| / bound = %.3f\n", static_cast<long long>(s.n1), static_cast<long long>(s.n2),
                worst);
  }
}

TEST(KronTransform, FoldSameBitsForAnyThreadCount) {
  ThreadPool one(1), three(3);
  const KronTransform t = KronTransform::make(near_identity(6, 1), near_identity(10, 2), "test");
  const Tensor weight = matrix(41, 60, testing::gaussian(41 * 60, 3));
  const KronFold fold(t, "test");
  const Tensor a = fold.apply(weight, one), b = fold.apply(weight, three);
  EXPECT_EQ(0, std::memcmp(a.f32(), b.f32(), a.nbytes()));
}

TEST(KronTransform, SingularFactorIsAnError) {
  // Row 1 = 2 × row 0: elimination leaves an exact zero pivot.
  const Tensor a = matrix(3, 3, {1, 2, 3, 2, 4, 6, 1, 0, 1});
  const KronTransform t = KronTransform::make(a, near_identity(4, 1), "x");
  ErrorKind kind{};
  const std::string msg = error_of([&] { KronFold(t, "layer 3 site attn_in"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(msg.rfind("layer 3 site attn_in: transform factor A is singular", 0), 0u) << msg;
  // A zero matrix B.
  const KronTransform z = KronTransform::make(near_identity(3, 1), Tensor::zeros(DType::kF32, {4, 4}), "x");
  EXPECT_EQ(error_of([&] { KronFold(z, "layer 0 site mlp_down"); }).rfind(
                "layer 0 site mlp_down: transform factor B is singular", 0),
            0u);
}

TEST(KronTransform, IllConditionedFactorIsAnError) {
  // diag(1, 1/3.1e8): ‖B‖₁·‖B^{-1}‖₁ = 3.1e8.
  const Tensor b = matrix(2, 2, {1.0f, 0.0f, 0.0f, 1.0f / 3.1e8f});
  const KronTransform t = KronTransform::make(near_identity(3, 1), b, "x");
  ErrorKind kind{};
  const std::string msg = error_of([&] { KronFold(t, "layer 3 site attn_in"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(msg, "layer 3 site attn_in: transform factor B is ill-conditioned (condition ≈ 3.1e+08 > 1e+06)");
  // The limit is an option: condition 1e4 passes by default, not under 1e3.
  const KronTransform mid = KronTransform::make(matrix(2, 2, {1.0f, 0.0f, 0.0f, 1e-4f}), near_identity(2, 1), "x");
  const KronFold ok(mid, "x");
  EXPECT_NEAR(ok.condition_a(), 1e4, 1.0);
  EXPECT_NE(error_of([&] { KronFold(mid, "x", {.max_condition = 1e3}); }).find("condition ≈ 1.0e+04 > 1000"),
            std::string::npos);
}

TEST(KronTransform, BadFactorsAreErrors) {
  const Tensor good = near_identity(3, 1);
  Tensor nan = near_identity(3, 2);
  nan.mutable_f32()[5] = std::nanf("");
  ErrorKind kind{};
  std::string msg = error_of([&] { KronTransform::make(nan, good, "layer 1 site mlp_in"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(msg.rfind("layer 1 site mlp_in: transform factor A holds a non-finite value", 0), 0u) << msg;
  EXPECT_NE(msg.find("at (1, 2)"), std::string::npos) << msg;
  Tensor inf = near_identity(3, 3);
  inf.mutable_f32()[0] = INFINITY;
  EXPECT_NE(error_of([&] { KronTransform::make(good, inf, "c"); }).find("factor B holds a non-finite"),
            std::string::npos);
  msg = error_of([&] { KronTransform::make(matrix(2, 3, {1, 0, 0, 0, 1, 0}), good, "c"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(msg.find("must be a square float32 matrix"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { KronTransform::make(good, Tensor::zeros(DType::kF16, {3, 3}), "c"); }).find("F16 [3, 3]"),
            std::string::npos);
}

TEST(KronTransform, Factors) {
  EXPECT_EQ(kron_factors(512), (KronShape{16, 32}));
  EXPECT_EQ(kron_factors(1536), (KronShape{32, 48}));
  EXPECT_EQ(kron_factors(4096), (KronShape{64, 64}));
  EXPECT_EQ(kron_factors(11008), (KronShape{86, 128}));
  EXPECT_EQ(kron_factors(60), (KronShape{6, 10}));
  EXPECT_EQ(kron_factors(7), (KronShape{1, 7}));
  EXPECT_EQ(kron_factors(1), (KronShape{1, 1}));
  EXPECT_EQ(kron_factors(1536, 48), (KronShape{48, 32}));
  EXPECT_EQ(kron_factors(1536, 1536), (KronShape{1536, 1}));
  ErrorKind kind{};
  EXPECT_EQ(error_of([] { kron_factors(1536, 7); }, &kind), "width 1536 does not factor as n1 = 7 × n2");
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(error_of([] { kron_factors(0); }).find("width 0"), std::string::npos);
  EXPECT_NE(error_of([] { kron_factors(16, -2); }).find("n1 = -2"), std::string::npos);
}

}  // namespace
}  // namespace calq::model
