#include "core/hadamard.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"

namespace calq {
namespace {

std::vector<float> random_rows(int64_t rows, int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * n));
  for (auto& v : x) v = dist(gen);
  return x;
}

// H·Hᵀ = n·I, entries ±1, computed independently of the transform.
void expect_hadamard(const std::vector<float>& h, int64_t n) {
  ASSERT_EQ(h.size(), static_cast<size_t>(n * n));
  for (float v : h) ASSERT_TRUE(v == 1.0f || v == -1.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double dot = 0.0;
      for (int64_t k = 0; k < n; ++k) dot += static_cast<double>(h[i * n + k]) * h[j * n + k];
      ASSERT_EQ(dot, i == j ? static_cast<double>(n) : 0.0) << "n=" << n << " rows " << i << ", " << j;
    }
  }
}

TEST(Hadamard, BaseOrders) {
  EXPECT_EQ(hadamard_base_order(1), 1);
  EXPECT_EQ(hadamard_base_order(512), 1);
  EXPECT_EQ(hadamard_base_order(1536), 12);  // 12·128
  EXPECT_EQ(hadamard_base_order(2560), 20);  // 20·128
  EXPECT_EQ(hadamard_base_order(3584), 28);  // 28·128, Paley II (p = 13)
  EXPECT_EQ(hadamard_base_order(96), 12);
  EXPECT_EQ(hadamard_base_order(6), 0);      // 2·3: no Hadamard matrix of order 6
  EXPECT_EQ(hadamard_base_order(7 * 64), 28);
  EXPECT_EQ(hadamard_base_order(0), 0);
  EXPECT_EQ(hadamard_base_order(4864), 76);  // 76·64, Paley II (p = 37)
  EXPECT_FALSE(hadamard_supported(52));       // 52 = 4·13: 51 and 25 are not prime
  EXPECT_FALSE(hadamard_supported(100));      // 4·25: 99 and 49 are not prime
  EXPECT_EQ(hadamard_base_order(800), 200);   // 200·4 (p = 199)
}

TEST(Hadamard, PaleyMatricesAreHadamard) {
  for (int64_t m : {4, 12, 20, 24, 28, 36, 44, 60, 76}) {
    SCOPED_TRACE(m);
    expect_hadamard(paley_matrix(m), m);
  }
  EXPECT_THROW(paley_matrix(16), Error);
}

TEST(Hadamard, KroneckerMatricesAreHadamard) {
  for (int64_t n : {1, 2, 8, 64, 24, 48, 40, 96, 112}) {
    SCOPED_TRACE(n);
    expect_hadamard(hadamard_matrix(n), n);
  }
}

TEST(Hadamard, UnsupportedSizeIsAnErrorNamingTheRule) {
  try {
    RandomizedHadamard q(6 * 7, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("42"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Paley"), std::string::npos) << e.what();
  }
}

// The fast transform against the explicit matrix product, both directions, for power-of-two and
// Kronecker sizes.
TEST(Hadamard, FastEqualsExplicitMatrix) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 16, 128, 512, 24, 96, 160, 224, 1536}) {
    SCOPED_TRACE(n);
    const RandomizedHadamard q(n, 42);
    const int64_t rows = n >= 1024 ? 3 : 7;
    for (bool transpose : {false, true}) {
      std::vector<float> fast = random_rows(rows, n, 5);
      std::vector<float> ref = fast;
      if (transpose) {
        q.apply_transpose_rows(fast.data(), rows, pool);
      } else {
        q.apply_rows(fast.data(), rows, pool);
      }
      reference_apply_rows(q, ref.data(), rows, transpose);
      double max_err = 0.0;
      for (size_t i = 0; i < fast.size(); ++i) max_err = std::max(max_err, std::fabs(double(fast[i]) - ref[i]));
      // Inputs are N(0, 1), outputs too (Q is orthogonal); float rounding over log2(n) + m adds.
      EXPECT_LT(max_err, 2e-5) << "transpose=" << transpose;
    }
  }
}

TEST(Hadamard, OrthogonalAndInverse) {
  ThreadPool pool(2);
  for (int64_t n : {64, 96, 1536}) {
    SCOPED_TRACE(n);
    const RandomizedHadamard q(n, 7);
    // Q·Qᵀ = I from the explicit matrix.
    const std::vector<double> m = q.matrix();
    double max_dev = 0.0;
    for (int64_t i = 0; i < n; i += (n > 256 ? 37 : 1)) {
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0.0;
        for (int64_t k = 0; k < n; ++k) dot += m[i * n + k] * m[j * n + k];
        max_dev = std::max(max_dev, std::fabs(dot - (i == j ? 1.0 : 0.0)));
      }
    }
    EXPECT_LT(max_dev, 1e-12);
    // Fast x·Q·Qᵀ = x and the norm is kept.
    const std::vector<float> x = random_rows(4, n, 9);
    std::vector<float> y = x;
    q.apply_rows(y.data(), 4, pool);
    double nx = 0.0, ny = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      nx += double(x[i]) * x[i];
      ny += double(y[i]) * y[i];
    }
    EXPECT_NEAR(ny / nx, 1.0, 1e-6);
    q.apply_transpose_rows(y.data(), 4, pool);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(y[i], x[i], 1e-5) << i;
  }
}

TEST(Hadamard, SignsAreDeterministicAndSeedDependent) {
  const std::vector<float> a = hadamard_signs(1000, 123);
  EXPECT_EQ(a, hadamard_signs(1000, 123));
  EXPECT_NE(a, hadamard_signs(1000, 124));
  // The documented extraction: sign i is bit i mod 64 of mt19937_64 draw i / 64.
  std::mt19937_64 gen(123);
  for (int64_t w = 0; w * 64 < 1000; ++w) {
    const uint64_t word = gen();
    for (int64_t b = 0; b < 64 && w * 64 + b < 1000; ++b) {
      ASSERT_EQ(a[static_cast<size_t>(w * 64 + b)], ((word >> b) & 1u) ? -1.0f : 1.0f);
    }
  }
  // Roughly balanced.
  int neg = 0;
  for (float s : a) neg += s < 0;
  EXPECT_GT(neg, 400);
  EXPECT_LT(neg, 600);
  // mt19937_64's 10000th output is fixed by the C++ standard; the signs therefore are too.
  std::mt19937_64 std_gen;
  std_gen.discard(9999);
  EXPECT_EQ(std_gen(), 9981545732273789042ull);
}

TEST(Hadamard, ThreadCountDoesNotChangeBits) {
  const RandomizedHadamard q(1536, 3);
  std::vector<float> a = random_rows(37, 1536, 4);
  std::vector<float> b = a;
  ThreadPool one(1), four(4);
  q.apply_rows(a.data(), 37, one);
  q.apply_rows(b.data(), 37, four);
  EXPECT_EQ(a, b);
  std::vector<float> c = a;
  q.apply_rows_serial(c.data(), 0);
  EXPECT_EQ(c, a);
}

}  // namespace
}  // namespace calq
