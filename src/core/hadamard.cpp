#include "core/hadamard.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <random>

#include "core/error.h"

namespace calq {
namespace {

// Rows per parallel chunk: one row of a few thousand values is a few microseconds of work.
constexpr Grain kRowGrain{.min_items = 8};

bool is_prime(int64_t p) {
  if (p < 2) return false;
  for (int64_t d = 2; d * d <= p; ++d) {
    if (p % d == 0) return false;
  }
  return true;
}

bool is_paley1(int64_t m) { return m >= 4 && is_prime(m - 1) && (m - 1) % 4 == 3; }
bool is_paley2(int64_t m) { return m >= 4 && m % 2 == 0 && is_prime(m / 2 - 1) && (m / 2 - 1) % 4 == 1; }

// The quadratic character χ(a) of a mod p (p an odd prime): 0, 1 or −1.
std::vector<int> quadratic_character(int64_t p) {
  std::vector<int> chi(static_cast<size_t>(p), -1);
  chi[0] = 0;
  for (int64_t x = 1; x < p; ++x) chi[static_cast<size_t>(x * x % p)] = 1;
  return chi;
}

// S = [[0, 1ᵀ], [∓1, Q]] of order p + 1, Q the Jacobsthal matrix Q_ij = χ(j − i); `minus` puts −1
// in the first column (skew-symmetric S for p ≡ 3 mod 4), else +1 (symmetric for p ≡ 1 mod 4).
std::vector<int> paley_core(int64_t p, bool minus) {
  const std::vector<int> chi = quadratic_character(p);
  const int64_t n = p + 1;
  std::vector<int> s(static_cast<size_t>(n * n), 0);
  for (int64_t j = 1; j < n; ++j) {
    s[static_cast<size_t>(j)] = 1;
    s[static_cast<size_t>(j * n)] = minus ? -1 : 1;
  }
  for (int64_t i = 1; i < n; ++i) {
    for (int64_t j = 1; j < n; ++j) {
      s[static_cast<size_t>(i * n + j)] = chi[static_cast<size_t>(((j - i) % p + p) % p)];
    }
  }
  return s;
}

// In-place unnormalised Walsh–Hadamard transform of x[0, p) (p a power of two): x ← x·H_p with
// the Sylvester matrix H_p[j][b] = (−1)^popcount(j & b), which is symmetric.
void fwht(float* x, int64_t p) {
  for (int64_t h = 1; h < p; h *= 2) {
    for (int64_t i = 0; i < p; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j];
        const float b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

}  // namespace

int64_t hadamard_base_order(int64_t n) {
  if (n <= 0) return 0;
  if (std::has_single_bit(static_cast<uint64_t>(n))) return 1;
  int64_t odd = n;
  int64_t twos = 0;
  while (odd % 2 == 0) {
    odd /= 2;
    ++twos;
  }
  // Hadamard orders above 2 are multiples of 4: try m = odd·4, odd·8, ... while m divides n.
  for (int64_t j = 2; j <= twos; ++j) {
    const int64_t m = odd << j;
    if (is_paley1(m) || is_paley2(m)) return m;
  }
  return 0;
}

bool hadamard_supported(int64_t n) { return hadamard_base_order(n) != 0; }

std::string hadamard_supported_sizes() {
  return "n = 2^k·m with m = 1 or a Paley order (p + 1 for a prime p ≡ 3 mod 4, 2(p + 1) for a prime p ≡ 1 mod 4: "
         "12, 20, 24, 28, 36, 44, 48, 60, ...), e.g. 512, 1536 = 12·128, 2560 = 20·128, 3584 = 28·128";
}

std::vector<float> paley_matrix(int64_t m) {
  std::vector<float> h(static_cast<size_t>(m * m));
  if (is_paley1(m)) {
    // Paley I: H = I + S with S skew-symmetric, S·Sᵀ = p·I, so H·Hᵀ = I − S² = (p + 1)·I.
    const std::vector<int> s = paley_core(m - 1, /*minus=*/true);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < m; ++j) {
        h[static_cast<size_t>(i * m + j)] = static_cast<float>(s[static_cast<size_t>(i * m + j)] + (i == j ? 1 : 0));
      }
    }
    return h;
  }
  if (is_paley2(m)) {
    // Paley II: C symmetric with C² = p·I; each 0 of C becomes [[1, −1], [−1, −1]] and each ±1
    // becomes ±[[1, 1], [1, −1]].
    const int64_t c_n = m / 2;
    const std::vector<int> c = paley_core(c_n - 1, /*minus=*/false);
    for (int64_t i = 0; i < c_n; ++i) {
      for (int64_t j = 0; j < c_n; ++j) {
        const int v = c[static_cast<size_t>(i * c_n + j)];
        const int block[2][2] = {{v == 0 ? 1 : v, v == 0 ? -1 : v}, {v == 0 ? -1 : v, v == 0 ? -1 : -v}};
        for (int a = 0; a < 2; ++a) {
          for (int b = 0; b < 2; ++b) {
            h[static_cast<size_t>((2 * i + a) * m + 2 * j + b)] = static_cast<float>(block[a][b]);
          }
        }
      }
    }
    return h;
  }
  fail(ErrorKind::kUnsupported,
       "{} is not a Paley order (p + 1 for a prime p ≡ 3 mod 4, 2(p + 1) for a prime p ≡ 1 mod 4)", m);
}

std::vector<float> hadamard_matrix(int64_t n) {
  const int64_t m = hadamard_base_order(n);
  if (m == 0) {
    fail(ErrorKind::kUnsupported, "no Hadamard transform of size {}: supported are {}", n, hadamard_supported_sizes());
  }
  const int64_t p = n / m;
  const std::vector<float> a = m == 1 ? std::vector<float>{1.0f} : paley_matrix(m);
  std::vector<float> h(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < p; ++j) {
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t b = 0; b < p; ++b) {
          const float sylvester = (std::popcount(static_cast<uint64_t>(j & b)) % 2 == 0) ? 1.0f : -1.0f;
          h[static_cast<size_t>((i * p + j) * n + r * p + b)] = a[static_cast<size_t>(i * m + r)] * sylvester;
        }
      }
    }
  }
  return h;
}

std::vector<float> hadamard_signs(int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<float> s(static_cast<size_t>(n));
  uint64_t word = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 64 == 0) word = gen();
    s[static_cast<size_t>(i)] = ((word >> (i % 64)) & 1u) != 0 ? -1.0f : 1.0f;
  }
  return s;
}

RandomizedHadamard::RandomizedHadamard(int64_t n, uint64_t seed) : n_(n), seed_(seed), m_(hadamard_base_order(n)) {
  if (m_ == 0) {
    fail(ErrorKind::kUnsupported, "no Hadamard rotation of size {}: supported are {}", n, hadamard_supported_sizes());
  }
  pow2_ = n / m_;
  scale_ = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  if (m_ > 1) base_ = paley_matrix(m_);
  signs_ = hadamard_signs(n, seed);
}

void RandomizedHadamard::hadamard_row(float* x, bool transpose, float* tmp) const {
  // H = A ⊗ S (A = H_m, S = Sylvester H_p): with x viewed as X[m, p], x·H = Aᵀ·X·S and
  // x·Hᵀ = A·X·S (S is symmetric).
  for (int64_t i = 0; i < m_; ++i) fwht(x + i * pow2_, pow2_);
  if (m_ == 1) return;
  const float* a = base_.data();
  for (int64_t col = 0; col < pow2_; ++col) {
    for (int64_t i = 0; i < m_; ++i) tmp[i] = x[i * pow2_ + col];
    for (int64_t r = 0; r < m_; ++r) {
      float acc = 0.0f;
      if (transpose) {
        for (int64_t i = 0; i < m_; ++i) acc += a[r * m_ + i] * tmp[i];
      } else {
        for (int64_t i = 0; i < m_; ++i) acc += a[i * m_ + r] * tmp[i];
      }
      x[r * pow2_ + col] = acc;
    }
  }
}

void RandomizedHadamard::rows_impl(float* x, int64_t r0, int64_t r1, bool transpose) const {
  std::vector<float> tmp(static_cast<size_t>(m_));
  const float* s = signs_.data();
  for (int64_t r = r0; r < r1; ++r) {
    float* row = x + r * n_;
    if (transpose) {
      // x·Qᵀ = (x ∘ s)·Hᵀ / √n
      for (int64_t i = 0; i < n_; ++i) row[i] *= s[i];
      hadamard_row(row, /*transpose=*/true, tmp.data());
      for (int64_t i = 0; i < n_; ++i) row[i] *= scale_;
    } else {
      // x·Q = (x·H) ∘ s / √n
      hadamard_row(row, /*transpose=*/false, tmp.data());
      for (int64_t i = 0; i < n_; ++i) row[i] = row[i] * s[i] * scale_;
    }
  }
}

void RandomizedHadamard::apply_rows(float* x, int64_t rows, ThreadPool& pool) const {
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    rows_impl(x, static_cast<int64_t>(r0), static_cast<int64_t>(r1), /*transpose=*/false);
  });
}

void RandomizedHadamard::apply_transpose_rows(float* x, int64_t rows, ThreadPool& pool) const {
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    rows_impl(x, static_cast<int64_t>(r0), static_cast<int64_t>(r1), /*transpose=*/true);
  });
}

void RandomizedHadamard::apply_rows_serial(float* x, int64_t rows) const { rows_impl(x, 0, rows, false); }
void RandomizedHadamard::apply_transpose_rows_serial(float* x, int64_t rows) const { rows_impl(x, 0, rows, true); }

std::vector<double> RandomizedHadamard::matrix() const {
  const std::vector<float> h = hadamard_matrix(n_);
  const double scale = 1.0 / std::sqrt(static_cast<double>(n_));
  std::vector<double> q(static_cast<size_t>(n_ * n_));
  for (int64_t i = 0; i < n_; ++i) {
    for (int64_t j = 0; j < n_; ++j) {
      const auto k = static_cast<size_t>(i * n_ + j);
      q[k] = static_cast<double>(h[k]) * static_cast<double>(signs_[static_cast<size_t>(j)]) * scale;
    }
  }
  return q;
}

void reference_apply_rows(const RandomizedHadamard& rot, float* x, int64_t rows, bool transpose) {
  const int64_t n = rot.size();
  const std::vector<double> q = rot.matrix();
  std::vector<double> y(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * n;
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      // (x·Q)_j = Σ_i x_i Q_ij;  (x·Qᵀ)_j = Σ_i x_i Q_ji
      for (int64_t i = 0; i < n; ++i) {
        const auto k = static_cast<size_t>(transpose ? j * n + i : i * n + j);
        acc += static_cast<double>(row[i]) * q[k];
      }
      y[static_cast<size_t>(j)] = acc;
    }
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<float>(y[static_cast<size_t>(j)]);
  }
}

}  // namespace calq
