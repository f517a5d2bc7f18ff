// Hadamard transforms for rotating a model's activations (QuaRot / SpinQuant-style computational
// invariance, model/rotate.h).
//
// Contract:
//  * Supported sizes: n = 2^k·m with m = 1 (Sylvester matrix, fast in-place Walsh–Hadamard
//    transform) or m a Paley order — m = p + 1 for a prime p ≡ 3 (mod 4) (Paley I: 4, 12, 20, 24,
//    44, 48, 60, ...) or m = 2(p + 1) for a prime p ≡ 1 (mod 4) (Paley II: 12, 20, 28, 36, 60, 76,
//    ...) — with H_n = H_m ⊗ H_{2^k}. The smallest such m dividing n is used (1536 = 12·128,
//    2560 = 20·128, 3584 = 28·128). Other sizes are ErrorKind::kUnsupported naming n and the rule.
//    H_n has ±1 entries and H_n·H_nᵀ = n·I.
//  * The randomized Hadamard rotation is Q = H_n·diag(s)/√n with signs s ∈ {±1}^n drawn from
//    std::mt19937_64(seed): sign i is bit (i mod 64) of draw ⌊i/64⌋ (1 = −1). The standard fixes
//    mt19937_64's output, so Q is the same on every platform. Q is orthogonal: Q·Qᵀ = I.
//  * Rows are row vectors: apply_rows gives x ← x·Q, apply_transpose_rows x ← x·Qᵀ (its inverse),
//    each row in place, in float, with one fixed order of operations per row: identical for any
//    thread count. Cost O(n·(log n + m)) per row.
//  * The reference twin (reference_apply_rows) forms Q explicitly and multiplies in double — for
//    tests only (O(n²) per row).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"

namespace calq {

// The Hadamard base order m for size n (1 for a power of two), or 0 when n is not supported.
int64_t hadamard_base_order(int64_t n);
bool hadamard_supported(int64_t n);
// A sentence describing the supported sizes (used in error messages).
std::string hadamard_supported_sizes();

// The unnormalised ±1 matrix H_n = H_m ⊗ H_{2^k} (row-major n × n). Error if n is unsupported.
std::vector<float> hadamard_matrix(int64_t n);
// The m × m Paley matrix (m = p + 1 or 2(p + 1) as above). Error if m is not a Paley order.
std::vector<float> paley_matrix(int64_t m);

// The signs s of Q for (n, seed), as ±1.
std::vector<float> hadamard_signs(int64_t n, uint64_t seed);

class RandomizedHadamard {
 public:
  // Error (kUnsupported) if n is not a supported size.
  RandomizedHadamard(int64_t n, uint64_t seed);

  int64_t size() const { return n_; }
  uint64_t seed() const { return seed_; }
  int64_t base_order() const { return m_; }
  const std::vector<float>& signs() const { return signs_; }

  // x[rows, n] (row stride n): each row x ← x·Q, resp. x ← x·Qᵀ.
  void apply_rows(float* x, int64_t rows, ThreadPool& pool) const;
  void apply_transpose_rows(float* x, int64_t rows, ThreadPool& pool) const;
  // The same on rows [0, rows) without the pool (for callers already inside a parallel loop).
  void apply_rows_serial(float* x, int64_t rows) const;
  void apply_transpose_rows_serial(float* x, int64_t rows) const;

  // Q as an explicit row-major n × n matrix in double (tests).
  std::vector<double> matrix() const;

 private:
  // x ← x·H_n (transpose = false) or x·H_nᵀ, unnormalised; `tmp` holds m floats.
  void hadamard_row(float* x, bool transpose, float* tmp) const;
  void rows_impl(float* x, int64_t r0, int64_t r1, bool transpose) const;

  int64_t n_;
  uint64_t seed_;
  int64_t m_;      // base order
  int64_t pow2_;   // n / m
  float scale_;    // 1/√n
  std::vector<float> base_;   // H_m, m × m (empty for m = 1)
  std::vector<float> signs_;  // s
};

// Reference twin: each row x ← x·Q (or x·Qᵀ) by the explicit matrix product in double.
void reference_apply_rows(const RandomizedHadamard& q, float* x, int64_t rows, bool transpose);

}  // namespace calq
