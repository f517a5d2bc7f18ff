#include "core/vec_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace calq {
namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(VecMath, ExpPolyIsAccurate) {
  for (float x = -87.0f; x < 88.0f; x += 0.01371f) {
    const double ref = std::exp(static_cast<double>(x));
    EXPECT_NEAR(exp_poly(x) / ref, 1.0, 3e-7) << x;
  }
  EXPECT_EQ(exp_poly(-100.0f), 0.0f);
  EXPECT_EQ(exp_poly(0.0f), 1.0f);
}

TEST(VecMath, ExpSubSumFastEqualsReference) {
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 6.0f);
  for (int64_t n : {1, 7, 8, 9, 100, 16384 + 3}) {
    std::vector<float> a(static_cast<size_t>(n));
    for (auto& x : a) x = d(rng);
    a[0] = -200.0f;  // exercises the flush-to-zero branch
    std::vector<float> b = a;
    const double sa = exp_sub_sum(a.data(), n, 3.0f);
    const double sb = exp_sub_sum_reference(b.data(), n, 3.0f);
    EXPECT_EQ(sa, sb) << n;
    for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(same_bits(a[i], b[i])) << "n=" << n << " i=" << i;
    double direct = 0;
    for (float v : b) direct += v;
    EXPECT_NEAR(sa, direct, 1e-9 * std::abs(direct) + 1e-30);
  }
}

TEST(VecMath, SiluMulFastEqualsReferenceAndMath) {
  std::mt19937 rng(12);
  std::normal_distribution<float> d(0.0f, 4.0f);
  const int64_t n = 1003;
  std::vector<float> g(n), u(n);
  for (auto& x : g) x = d(rng);
  for (auto& x : u) x = d(rng);
  std::vector<float> fast = g, ref = g;
  silu_mul(fast.data(), u.data(), n);
  silu_mul_reference(ref.data(), u.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(same_bits(fast[i], ref[i])) << i;
    const double exact = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
    EXPECT_NEAR(fast[i], exact, 1e-5 * (1.0 + std::abs(exact)));
  }
}

TEST(VecMath, MaxValue) {
  std::vector<float> v = {1, -3, 7.5f, 2, 0, 7.25f, -1, 3, 9.5f, 4};
  EXPECT_EQ(max_value(v.data(), 10), 9.5f);
  EXPECT_EQ(max_value(v.data(), 3), 7.5f);
}

}  // namespace
}  // namespace calq
