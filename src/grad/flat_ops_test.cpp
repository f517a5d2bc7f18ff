// The Cayley map, the Kronecker product on rows and the SVD-parameterised factor: forward values
// against their definitions, double gradients against central finite differences, byte identity
// for 1 and 3 threads, and the errors training meets (non-finite parameters, singular or
// ill-conditioned factors).
#include "grad/flat_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "grad/grad_check_testutil.h"

namespace calq::grad {
namespace {

using testutil::check_entries;
using testutil::numeric_grad;
using testutil::project;
using testutil::random_values;
using testutil::rel_error;

constexpr double kTol = 1e-6;

void expect_grad(std::vector<double>& x, const std::vector<double>& analytic, const std::function<double()>& loss,
                 const char* what) {
  const auto fd = numeric_grad(x, check_entries(x.size(), x.size()), loss);
  EXPECT_GT(testutil::norm(fd), 1e-3) << what << ": the gradient should not vanish";
  EXPECT_LT(rel_error(fd, analytic), kTol) << what;
}

template <typename T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// max |A·Aᵀ − I| over the entries (row-major n×n).
double orthogonality_error(int64_t n, const std::vector<double>& a) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += a[i * n + k] * a[j * n + k];
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  }
  return worst;
}

std::vector<double> matmul(int64_t n, const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> c(a.size(), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) {
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += a[i * n + k] * b[k * n + j];
    }
  }
  return c;
}

template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    return e.what();
  }
  ADD_FAILURE() << "no calq::Error";
  return {};
}

// ---- Cayley ----

TEST(Cayley, OrthogonalForAnyParameterAndIdentityAtZero) {
  for (const int64_t n : {1, 2, 7, 24}) {
    for (const double scale : {0.1, 1.0, 5.0}) {
      const auto x = random_values(static_cast<size_t>(n * n), 11 + static_cast<uint32_t>(n), scale);
      std::vector<double> q(x.size());
      cayley_forward(n, x.data(), q.data());
      EXPECT_LT(orthogonality_error(n, q), 1e-12) << n << " " << scale;
      if (n > 1) {
        EXPECT_GT(std::fabs(q[1]), 1e-3);  // not the identity
      }
    }
    std::vector<double> zero(static_cast<size_t>(n * n), 0.0), q(zero.size());
    cayley_forward(n, zero.data(), q.data());
    for (int64_t i = 0; i < n * n; ++i) EXPECT_EQ(q[static_cast<size_t>(i)], i % (n + 1) == 0 ? 1.0 : 0.0);
  }
  // Only the skew part matters: X and X + S (S symmetric) give the same Q.
  const int64_t n = 5;
  auto x = random_values(n * n, 3);
  std::vector<double> xs(x), q1(x.size()), q2(x.size());
  const auto s = random_values(n * n, 4);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) xs[i * n + j] += s[i * n + j] + s[j * n + i];
  }
  cayley_forward(n, x.data(), q1.data());
  cayley_forward(n, xs.data(), q2.data());
  EXPECT_LT(rel_error(q1, q2), 1e-14);
}

TEST(Cayley, GradientEqualsFiniteDifferencesAndIsAdded) {
  for (const int64_t n : {1, 3, 9}) {
    auto x = random_values(static_cast<size_t>(n * n), 21, 0.7);
    const auto r = random_values(x.size(), 22);
    auto loss = [&] {
      std::vector<double> q(x.size());
      cayley_forward(n, x.data(), q.data());
      return project(q, r);
    };
    std::vector<double> dx(x.size(), 0.25);
    cayley_backward(n, x.data(), r.data(), dx.data());
    for (double& v : dx) v -= 0.25;
    if (n == 1) {  // Ω = 0 for every 1×1 X: Q = 1, no gradient
      EXPECT_EQ(dx[0], 0.0);
      continue;
    }
    expect_grad(x, dx, loss, "dX");
  }
}

TEST(Cayley, FloatIsTheDoubleResultRoundedAndNonFiniteIsAnError) {
  const int64_t n = 6;
  const auto xd = random_values(n * n, 31);
  const auto xf = cast<float>(xd);
  std::vector<double> qd(xd.size());
  std::vector<float> qf(xd.size());
  const std::vector<double> xw(xf.begin(), xf.end());  // the float parameter, widened
  cayley_forward(n, xw.data(), qd.data());
  cayley_forward(n, xf.data(), qf.data());
  for (size_t i = 0; i < qd.size(); ++i) EXPECT_EQ(qf[i], static_cast<float>(qd[i])) << i;

  auto bad = xd;
  bad[1 * n + 2] = std::nan("");
  std::vector<double> q(bad.size());
  EXPECT_EQ(error_of([&] { cayley_forward(n, bad.data(), q.data(), "layer 0 rotation"); }),
            "layer 0 rotation: entry (1, 2) is not finite (nan)");
  bad[1 * n + 2] = HUGE_VAL;
  std::vector<double> dx(bad.size());
  EXPECT_NE(error_of([&] { cayley_backward(n, bad.data(), q.data(), dx.data()); }).find("Cayley map: entry (1, 2)"),
            std::string::npos);
}

// ---- Kronecker product on rows ----

// y = x·(A ⊗ B) with the (n1·n2)² Kronecker matrix written out: (A ⊗ B)[i·n2 + j, k·n2 + l] = A[i, k]·B[j, l].
std::vector<double> kron_reference(const std::vector<double>& x, int64_t rows, int64_t n1, int64_t n2,
                                   const std::vector<double>& a, const std::vector<double>& b) {
  const int64_t n = n1 * n2;
  std::vector<double> y(static_cast<size_t>(rows * n), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t o = 0; o < n; ++o) {
        y[r * n + o] += x[r * n + p] * a[(p / n2) * n1 + o / n2] * b[(p % n2) * n2 + o % n2];
      }
    }
  }
  return y;
}

TEST(KronRows, ForwardIsTheKroneckerProduct) {
  ThreadPool pool(2);
  const int64_t rows = 5, n1 = 3, n2 = 4;
  const auto x = random_values(rows * n1 * n2, 41), a = random_values(n1 * n1, 42), b = random_values(n2 * n2, 43);
  std::vector<double> y(x.size());
  kron_rows_forward(pool, x.data(), rows, n1, n2, a.data(), b.data(), y.data());
  EXPECT_LT(rel_error(y, kron_reference(x, rows, n1, n2, a, b)), 1e-14);
  // Float agrees to float rounding.
  std::vector<float> yf(x.size());
  const auto xf = cast<float>(x), af = cast<float>(a), bf = cast<float>(b);
  kron_rows_forward(pool, xf.data(), rows, n1, n2, af.data(), bf.data(), yf.data());
  EXPECT_LT(rel_error(std::vector<double>(yf.begin(), yf.end()), y), 1e-6);
}

TEST(KronRows, GradientsEqualFiniteDifferences) {
  ThreadPool pool(2);
  for (const auto& [rows, n1, n2] : {std::tuple<int64_t, int64_t, int64_t>{4, 3, 5}, {37, 2, 3}, {3, 1, 4}}) {
    const int64_t n = n1 * n2;
    auto x = random_values(rows * n, 51), a = random_values(n1 * n1, 52), b = random_values(n2 * n2, 53);
    const auto r = random_values(rows * n, 54);
    auto loss = [&] {
      std::vector<double> y(x.size());
      kron_rows_forward(pool, x.data(), rows, n1, n2, a.data(), b.data(), y.data());
      return project(y, r);
    };
    std::vector<double> dx(x.size(), 7.0), da(a.size(), 0.5), db(b.size(), -0.5);
    kron_rows_backward(pool, x.data(), rows, n1, n2, a.data(), b.data(), r.data(), dx.data(), da.data(), db.data());
    for (double& v : da) v -= 0.5;  // added, not written
    for (double& v : db) v += 0.5;
    expect_grad(x, dx, loss, "dX");
    expect_grad(a, da, loss, "dA");
    expect_grad(b, db, loss, "dB");
    // Null outputs are skipped; the others are the same values.
    std::vector<double> da2(a.size(), 0.0);
    kron_rows_backward<double>(pool, x.data(), rows, n1, n2, a.data(), b.data(), r.data(), nullptr, da2.data(),
                               nullptr);
    EXPECT_TRUE(same_bytes(da, da2));
  }
}

template <typename T>
void expect_kron_thread_identity() {
  const int64_t rows = 70, n1 = 16, n2 = 12, n = n1 * n2;  // several row chunks and three waves
  const auto x = cast<T>(random_values(rows * n, 61)), dy = cast<T>(random_values(rows * n, 62));
  const auto a = cast<T>(random_values(n1 * n1, 63)), b = cast<T>(random_values(n2 * n2, 64));
  struct Out {
    std::vector<T> y, dx, da, db;
  };
  auto run = [&](size_t threads) {
    ThreadPool pool(threads);
    Out o{.y = std::vector<T>(x.size()), .dx = std::vector<T>(x.size()), .da = std::vector<T>(a.size(), T(0)),
          .db = std::vector<T>(b.size(), T(0))};
    kron_rows_forward(pool, x.data(), rows, n1, n2, a.data(), b.data(), o.y.data());
    kron_rows_backward(pool, x.data(), rows, n1, n2, a.data(), b.data(), dy.data(), o.dx.data(), o.da.data(),
                       o.db.data());
    return o;
  };
  const Out one = run(1), three = run(3);
  EXPECT_TRUE(same_bytes(one.y, three.y));
  EXPECT_TRUE(same_bytes(one.dx, three.dx));
  EXPECT_TRUE(same_bytes(one.da, three.da));
  EXPECT_TRUE(same_bytes(one.db, three.db));
}

TEST(KronRows, SameBytesForOneAndThreeThreads) {
  expect_kron_thread_identity<float>();
  expect_kron_thread_identity<double>();
}

// ---- SVD-parameterised factor ----

TEST(RandomOrthogonal, DeterministicOrthogonalAndSeedDependent) {
  for (const int64_t n : {1, 4, 33}) {
    const auto q = random_orthogonal(n, 7);
    EXPECT_LT(orthogonality_error(n, q), 1e-13);
    EXPECT_TRUE(same_bytes(q, random_orthogonal(n, 7)));
    if (n > 1) {
      EXPECT_FALSE(same_bytes(q, random_orthogonal(n, 8)));
    }
  }
  // 1×1: the sign fix leaves +1.
  EXPECT_EQ(random_orthogonal(1, 3)[0], 1.0);
}

// A factor with trained-looking parameters.
SvdFactor<double> trained_factor(int64_t n, uint32_t seed) {
  auto f = SvdFactor<double>::identity(n, seed);
  f.v0 = random_orthogonal(n, seed + 100);
  f.xu = random_values(static_cast<size_t>(n * n), seed + 1, 0.4);
  f.xv = random_values(static_cast<size_t>(n * n), seed + 2, 0.4);
  f.sigma = random_values(static_cast<size_t>(n), seed + 3, 0.3);
  for (double& s : f.sigma) s += s >= 0 ? 0.8 : -0.8;  // |σ| in [0.8, ~2]: well conditioned, signs mixed
  return f;
}

TEST(SvdFactor, IdentityComposesToTheIdentity) {
  const int64_t n = 10;
  const auto f = SvdFactor<double>::identity(n, 5);
  std::vector<double> p(n * n), pit(n * n);
  f.compose(p.data(), pit.data());
  for (int64_t i = 0; i < n * n; ++i) {
    EXPECT_NEAR(p[i], i % (n + 1) == 0 ? 1.0 : 0.0, 1e-14);
    EXPECT_NEAR(pit[i], i % (n + 1) == 0 ? 1.0 : 0.0, 1e-14);
  }
  EXPECT_EQ(f.condition(), 1.0);
}

TEST(SvdFactor, InverseTransposeAndSingularValues) {
  const int64_t n = 8;
  const auto f = trained_factor(n, 70);
  std::vector<double> p(n * n), pit(n * n);
  f.compose(p.data(), pit.data());
  // P·(P⁻ᵀ)ᵀ = P·P⁻¹ = I.
  std::vector<double> pit_t(n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) pit_t[j * n + i] = pit[i * n + j];
  }
  const auto eye = matmul(n, p, pit_t);
  for (int64_t i = 0; i < n * n; ++i) EXPECT_NEAR(eye[i], i % (n + 1) == 0 ? 1.0 : 0.0, 1e-12);
  // P·V = U·S: column k of V goes to σ_k times column k of U.
  std::vector<double> ru(n * n), rv(n * n);
  cayley_forward(n, f.xu.data(), ru.data());
  cayley_forward(n, f.xv.data(), rv.data());
  const auto u = matmul(n, f.u0, ru), v = matmul(n, f.v0, rv), pv = matmul(n, p, v);
  double lo = 1e300, hi = 0;
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(pv[i * n + k], f.sigma[k] * u[i * n + k], 1e-12);
    lo = std::min(lo, std::fabs(f.sigma[k])), hi = std::max(hi, std::fabs(f.sigma[k]));
  }
  EXPECT_DOUBLE_EQ(f.condition(), hi / lo);
  EXPECT_GT(f.condition(), 1.5);
}

TEST(SvdFactor, GradientsOfBothProductsEqualFiniteDifferences) {
  const int64_t n = 5;
  auto f = trained_factor(n, 80);
  const auto r1 = random_values(n * n, 91), r2 = random_values(n * n, 92);
  for (const int which : {0, 1, 2}) {  // P and P⁻ᵀ, P only, P⁻ᵀ only
    SCOPED_TRACE(which);
    const bool use_p = which != 2, use_pit = which != 1;
    auto loss = [&] {
      std::vector<double> p(n * n), pit(n * n);
      f.compose(p.data(), pit.data());
      return (use_p ? project(p, r1) : 0.0) + (use_pit ? project(pit, r2) : 0.0);
    };
    std::vector<double> dxu(n * n, 1.0), dxv(n * n, 1.0), ds(n, 1.0);
    f.backward(use_p ? r1.data() : nullptr, use_pit ? r2.data() : nullptr, dxu.data(), dxv.data(), ds.data());
    for (auto* g : {&dxu, &dxv, &ds}) {
      for (double& v : *g) v -= 1.0;  // added
    }
    expect_grad(f.xu, dxu, loss, "dXu");
    expect_grad(f.xv, dxv, loss, "dXv");
    expect_grad(f.sigma, ds, loss, "dsigma");
  }
}

TEST(SvdFactor, FloatFactorMatchesDoubleAndIsDeterministic) {
  const int64_t n = 12;
  const auto d = trained_factor(n, 100);
  SvdFactor<float> f{.n = n, .u0 = d.u0, .v0 = d.v0, .xu = cast<float>(d.xu), .xv = cast<float>(d.xv),
                     .sigma = cast<float>(d.sigma)};
  std::vector<float> p(n * n), pit(n * n), p2(n * n);
  f.compose(p.data(), pit.data());
  f.compose(p2.data(), nullptr);
  EXPECT_TRUE(same_bytes(p, p2));
  std::vector<double> pd(n * n);
  d.compose(pd.data(), nullptr);
  EXPECT_LT(rel_error(std::vector<double>(p.begin(), p.end()), pd), 1e-6);
  std::vector<float> g(n * n, 0.5f), dxu(n * n, 0.0f), dxu2(n * n, 0.0f), ds(n, 0.0f);
  f.backward(g.data(), g.data(), dxu.data(), nullptr, ds.data());
  f.backward(g.data(), g.data(), dxu2.data(), nullptr, nullptr);
  EXPECT_TRUE(same_bytes(dxu, dxu2));
}

TEST(SvdFactor, SingularNonFiniteAndIllConditionedAreErrorsNamingTheContext) {
  const std::string ctx = "layer 3 site attn_in: transform factor A";
  auto f = SvdFactor<float>::identity(4, 1);
  f.check(ctx);  // well conditioned: no error
  f.sigma = {1.0f, 2.3f, 1e-7f, 1.0f};
  EXPECT_EQ(error_of([&] { f.check(ctx); }), ctx + " is ill-conditioned (condition 2.3e+07 > 1e+06)");
  f.check(ctx, 1e8);  // within a looser bound
  f.sigma = {1.0f, -2.0f, 0.5f, 1.0f};  // negative σ: |σ| counts
  EXPECT_DOUBLE_EQ(f.condition(), 4.0);
  EXPECT_EQ(error_of([&] { f.check(ctx, 3.5); }), ctx + " is ill-conditioned (condition 4 > 3.5)");
  f.sigma[2] = 0.0f;
  EXPECT_EQ(f.condition(), HUGE_VAL);
  EXPECT_EQ(error_of([&] { f.check(ctx); }), ctx + " is singular (sigma[2] = 0)");
  f.sigma[2] = -0.0f;
  EXPECT_EQ(error_of([&] { f.check(ctx); }), ctx + " is singular (sigma[2] = 0)");
  f.sigma[1] = std::nanf("");
  EXPECT_TRUE(std::isnan(f.condition()));
  EXPECT_EQ(error_of([&] { f.check(ctx); }), ctx + " has a non-finite singular value (sigma[1] = nan)");
  f.sigma = {1.0f, 1.0f, 1.0f, 1.0f};
  f.xv[5] = HUGE_VALF;
  std::vector<float> p(16);
  EXPECT_EQ(error_of([&] { f.compose(p.data(), nullptr, ctx); }), ctx + ", parameter Xv: entry (1, 1) is not finite (inf)");
}

}  // namespace
}  // namespace calq::grad
