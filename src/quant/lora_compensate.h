// Low-rank compensation of one linear's quantization error, with no training (EoRA, arXiv
// 2410.21271; LQ-LoRA, arXiv 2311.12023): the rank-r adapter B·A that minimises the expected
// output error E_x ‖(W − Ŵ − B·A)·x‖² over the calibration inputs x.
//
// With H = XᵀX / n the inputs' second moment (plus damp × its mean diagonal on the diagonal) and
// H = L·Lᵀ (Cholesky), E_x ‖D·x‖² = ‖D·L‖_F² for any D, so the optimum of rank r is the truncated
// SVD of the weighted error (Eckart–Young): E·L = U Σ Vᵀ, B·A = U_r Σ_r V_rᵀ L⁻¹, and the error
// left is Σ_{i>r} σ_i². Any square root of H gives the same objective and the same optimum; EoRA
// writes it with the eigendecomposition (Q Λ^½), calq uses the Cholesky factor (a third of the
// work, and the damping that keeps it positive definite also bounds L⁻¹ on inputs that are
// almost never active). The singular values are split evenly: B = U_r Σ_r^½, A = Σ_r^½ V_rᵀ L⁻¹,
// so neither factor holds the whole scale (as LQ-LoRA / PiSSA initialise theirs).
//
// Weightings: kHessian — H as above; kDiagonal — H's diagonal only (E[x_j²], with the same
// damping); kNone — H = I (the plain truncated SVD of W − Ŵ).
//
// Everything is in double on the calling thread (LAPACK dpotrf / dgesdd and BLAS on one thread),
// so the result does not depend on any pool or thread count.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "quant/method.h"

namespace calq::quant {

enum class ErrorWeighting : uint8_t { kHessian, kDiagonal, kNone };

// The weighting's factor L (row-major [cols × cols], lower triangular, H = L·Lᵀ) from `stats`
// (kHessian reads stats.hessian, kDiagonal stats.mean_sq; a missing one is Error(kInvalidArgument)
// naming `context`). When the damped H is not positive definite the damping is multiplied by 10
// (up to 4 times) before giving up with Error(kInvalidArgument). `damp_used`: the damping that worked.
std::vector<double> weighting_factor(const InputStats& stats, int64_t cols, ErrorWeighting weighting, double damp,
                                     std::string_view context, double* damp_used = nullptr);

struct ErrorCompensation {
  std::vector<float> a;  // [rank, cols], row-major
  std::vector<float> b;  // [rows, rank], row-major
  // Expected squared output error (‖D·L‖_F²) of D = W − Ŵ, and of D = W − Ŵ − B·A with the
  // factors as stored (float32); the second is Σ_{i>r} σ_i² up to float rounding.
  double error_before = 0, error_after = 0;
  std::vector<double> singular_values;  // of E·L, descending (min(rows, cols) of them)
};

// `original` W and `dequantized` Ŵ are [rows, cols] float32, `factor` as weighting_factor returns
// it. rank ≤ min(rows, cols) (asserted: the caller checks and names the tensor); `context` names
// the tensor in an Error.
ErrorCompensation compensate_error(const float* original, const float* dequantized, int64_t rows, int64_t cols,
                                   std::span<const double> factor, int64_t rank, std::string_view context);

}  // namespace calq::quant
