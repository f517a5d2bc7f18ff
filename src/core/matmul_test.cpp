#include "core/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace calq {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Matmul, MatchesScalarReference) {
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {3, 70, 5}, {17, 130, 64}, {64, 200, 33}}) {
    const auto x = random_vec(static_cast<size_t>(m * k), 1);
    const auto w = random_vec(static_cast<size_t>(n * k), 2);
    std::vector<float> y(static_cast<size_t>(m * n), 0.5f), ref(y);
    ThreadPool pool(2);
    MatmulArgs a{.x = x.data(), .ldx = k, .w = w.data(), .ldw = k, .y = y.data(), .ldy = n, .m = m, .n = n, .k = k};
    matmul_nt(pool, a);
    a.y = ref.data();
    matmul_nt_reference(a);
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-4 * std::sqrt(k)) << m << "x" << n << "x" << k;
  }
}

TEST(Matmul, AccumulateAddsToOutput) {
  const int64_t m = 5, n = 9, k = 7;
  const auto x = random_vec(m * k, 3);
  const auto w = random_vec(n * k, 4);
  std::vector<float> y(m * n, 2.0f), ref(m * n, 2.0f);
  ThreadPool pool(2);
  MatmulArgs a{.x = x.data(), .ldx = k, .w = w.data(), .ldw = k, .y = y.data(), .ldy = n, .m = m, .n = n, .k = k,
               .accumulate = true};
  matmul_nt(pool, a);
  a.y = ref.data();
  matmul_nt_reference(a);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-4);
}

TEST(Matmul, ThreadCountDoesNotChangeBits) {
  const int64_t m = 37, n = 1000, k = 96;
  const auto x = random_vec(m * k, 5);
  const auto w = random_vec(n * k, 6);
  std::vector<float> y1(m * n), y3(m * n);
  ThreadPool one(1), three(3);
  MatmulArgs a{.x = x.data(), .ldx = k, .w = w.data(), .ldw = k, .y = y1.data(), .ldy = n, .m = m, .n = n, .k = k};
  matmul_nt(one, a);
  a.y = y3.data();
  matmul_nt(three, a);
  EXPECT_EQ(std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)), 0);
}

TEST(Matmul, NnMatchesNaive) {
  const int64_t m = 6, n = 5, k = 11;
  const auto x = random_vec(m * k, 7);
  const auto v = random_vec(k * n, 8);
  std::vector<float> y(m * n);
  matmul_nn_single(x.data(), k, v.data(), n, y.data(), n, m, n, k);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += double(x[i * k + p]) * v[p * n + j];
      EXPECT_NEAR(y[i * n + j], acc, 1e-4);
    }
  }
}

// The backward products (dx = dy·W, dW = dyᵀ·x): pooled tiles against the scalar twins, with
// strides, accumulation and shapes that cross the 256-wide tiles in both directions.
TEST(Matmul, NnAndTnMatchScalarReference) {
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {3, 70, 5}, {300, 270, 17}, {17, 513, 64}}) {
    for (const bool acc : {false, true}) {
      ThreadPool pool(2);
      // nn: x [m, k] with ldx = k + 3, w [k, n] with ldw = n + 1.
      const auto x = random_vec(static_cast<size_t>(m * (k + 3)), 11);
      const auto w = random_vec(static_cast<size_t>(k * (n + 1)), 12);
      std::vector<float> y(static_cast<size_t>(m * (n + 2)), 0.25f), ref(y);
      MatmulArgs a{.x = x.data(), .ldx = k + 3, .w = w.data(), .ldw = n + 1, .y = y.data(), .ldy = n + 2,
                   .m = m, .n = n, .k = k, .accumulate = acc};
      matmul_nn(pool, a);
      a.y = ref.data();
      matmul_nn_reference(a);
      for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-4 * std::sqrt(k)) << m << "x" << n << "x" << k;
      // tn: x [k, m] with ldx = m + 2, w [k, n] with ldw = n.
      const auto xt = random_vec(static_cast<size_t>(k * (m + 2)), 13);
      const auto wt = random_vec(static_cast<size_t>(k * n), 14);
      std::vector<float> yt(static_cast<size_t>(m * n), -0.5f), reft(yt);
      MatmulArgs b{.x = xt.data(), .ldx = m + 2, .w = wt.data(), .ldw = n, .y = yt.data(), .ldy = n,
                   .m = m, .n = n, .k = k, .accumulate = acc};
      matmul_tn(pool, b);
      b.y = reft.data();
      matmul_tn_reference(b);
      for (size_t i = 0; i < yt.size(); ++i) ASSERT_NEAR(yt[i], reft[i], 1e-4 * std::sqrt(k)) << m << "x" << n << "x" << k;
    }
  }
}

TEST(Matmul, NnAndTnThreadCountDoesNotChangeBits) {
  const int64_t m = 300, n = 600, k = 70;
  const auto x = random_vec(static_cast<size_t>(m * k), 15);
  const auto w = random_vec(static_cast<size_t>(k * n), 16);
  const auto xt = random_vec(static_cast<size_t>(k * m), 17);
  ThreadPool one(1), three(3);
  for (auto fn : {&matmul_nn, &matmul_tn}) {
    std::vector<float> y1(static_cast<size_t>(m * n)), y3(y1.size());
    const float* xs = fn == &matmul_nn ? x.data() : xt.data();
    const int64_t ldx = fn == &matmul_nn ? k : m;
    MatmulArgs a{.x = xs, .ldx = ldx, .w = w.data(), .ldw = n, .y = y1.data(), .ldy = n, .m = m, .n = n, .k = k};
    fn(one, a);
    a.y = y3.data();
    fn(three, a);
    EXPECT_EQ(std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace calq
