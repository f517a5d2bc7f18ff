// KronTransform — an invertible transform T = A ⊗ B of one activation width (FlatQuant,
// arXiv 2410.09426): A is n1×n1, B is n2×n2, width = n1·n2. A row x of `width` values, viewed
// row-major as the n1×n2 matrix X, becomes x̃ = x·T, i.e. X̃ = Aᵀ·X·B — an online cost of
// width·(n1 + n2) multiply-adds per row instead of width². A linear layer W [out, width] that reads
// x̃ instead of x holds W̃ = W·T^{-T} (each row W_r viewed as n1×n2 becomes A^{-1}·W_r·B^{-T}), so
// that x̃·W̃ᵀ = x·T·T^{-1}·Wᵀ = x·Wᵀ: the function is unchanged in exact arithmetic.
//
// Contract:
//  * make() checks the factors (float32, square, finite; kInvalidArgument naming the caller's
//    context) and keeps them (the Tensors are shared, not copied).
//  * apply_rows: x[m, width] ← x·T in place, row-parallel on the pool: per row two small products
//    (Y = X·B, then Aᵀ·Y) in AVX2 FMA kernels, each element one float32 FMA chain in a fixed order,
//    so a row's result does not depend on the thread count or on the other rows (the decode path
//    gets the bits the full-sequence path gets). apply_rows_reference is its naive scalar twin
//    (double accumulation, one rounding per element) that tests compare against.
//  * KronFold: A^{-1} and B^{-1} by LU with partial pivoting in double; a factor with a zero or
//    non-finite pivot (singular) or a 1-norm condition number ‖F‖₁·‖F^{-1}‖₁ above
//    options.max_condition is an Error(kInvalidArgument) naming the context ("layer 3 site
//    attn_in: transform factor A is singular"). apply() gives W·T^{-T} for a float32 [out, width]
//    W, computed in double per row and rounded once.
//  * kron_factors(width, n1): n1 = 0 picks n1 ≤ n2 with n1·n2 = width and n1 as close to
//    √width as possible (512 → 16×32, 1536 → 32×48); an explicit n1 must divide width (else
//    kInvalidArgument naming both).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"

namespace calq::model {

struct KronShape {
  int64_t n1 = 0;
  int64_t n2 = 0;
  friend bool operator==(const KronShape&, const KronShape&) = default;
};

// The factor sizes of a transform of `width` (n1 = 0: automatic; see the contract).
KronShape kron_factors(int64_t width, int64_t n1 = 0);

class KronTransform {
 public:
  KronTransform() = default;
  // a [n1, n1] and b [n2, n2] float32, every value finite; else Error(kInvalidArgument) whose
  // message starts with `context` ("layer 3 site attn_in").
  static KronTransform make(Tensor a, Tensor b, std::string_view context);
  // A ⊗ B = identity of shape.n1 × shape.n2.
  static KronTransform identity(KronShape shape);

  int64_t n1() const { return n1_; }
  int64_t n2() const { return n2_; }
  int64_t width() const { return n1_ * n2_; }
  const Tensor& a() const { return a_; }
  const Tensor& b() const { return b_; }
  // Whether both factors hold the same bits as other's.
  bool same_values(const KronTransform& other) const;

  // x[m, width] ← x·T (rows contiguous).
  void apply_rows(float* x, int64_t m, ThreadPool& pool) const;
  void apply_rows_reference(float* x, int64_t m) const;

 private:
  int64_t n1_ = 0, n2_ = 0;
  Tensor a_, b_;
};

struct KronFoldOptions {
  // Largest accepted 1-norm condition number of either factor: beyond it the folded weights
  // would lose more than about log10(max_condition) of float32's ~7 significant digits.
  double max_condition = 1e6;
};

// The inverse factors of a transform, checked, ready to fold into the weights that read x̃.
class KronFold {
 public:
  // Errors (kInvalidArgument, message starting with `context`): a factor that is singular,
  // ill-conditioned (condition > options.max_condition), or not finite.
  KronFold(const KronTransform& t, std::string_view context, const KronFoldOptions& options = {});

  double condition_a() const { return cond_a_; }  // ‖A‖₁·‖A^{-1}‖₁
  double condition_b() const { return cond_b_; }

  // A new float32 tensor W·T^{-T} for a float32 w [out, width] (asserts the shape); row-parallel,
  // the same bits for any thread count.
  Tensor apply(const Tensor& w, ThreadPool& pool) const;

 private:
  int64_t n1_ = 0, n2_ = 0;
  std::vector<double> a_inv_, b_inv_;  // row-major A^{-1} [n1, n1], B^{-1} [n2, n2]
  double cond_a_ = 0, cond_b_ = 0;
};

}  // namespace calq::model
