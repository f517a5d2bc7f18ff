// The differentiable ops FlatQuant (Sun et al., arXiv 2410.09426) trains through, for
// T ∈ {float, double} (float for training, double for finite-difference checks):
//  * the Cayley map X ↦ Q, an orthogonal matrix by construction;
//  * the Kronecker product of two small factors applied to the rows of a tensor, y = x·(A ⊗ B);
//  * the SVD parameterisation of each Kronecker factor, P = U·diag(σ)·Vᵀ with U, V orthogonal
//    (Cayley maps of trained parameters times fixed random rotations), and its inverse-transpose
//    P⁻ᵀ = U·diag(1/σ)·Vᵀ (what the weight side is multiplied by) without any inversion;
//  * per-token symmetric activation fake quantization with a learnable clip (FlatQuant's LAC).
//
// Conventions as ops_basic.h: contiguous row-major arrays; a backward writes input gradients and
// ADDS parameter gradients into the caller's buffers (zero them first); nullable outputs are
// skipped; reductions over rows run in row order, so results are the same bits for any thread
// count. Shapes are the caller's responsibility (programming errors); values that come from
// training (a parameter that went non-finite, a factor that became singular or ill-conditioned)
// are calq::Error of kind kInvalidArgument naming the caller's context.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"

namespace calq::grad {

// ---- Cayley map ----
// For an n×n parameter X: Ω = X − Xᵀ (skew-symmetric), Q = (I + Ω/2)·(I − Ω/2)⁻¹ — orthogonal for
// every X, Q = I at X = 0 (Q never has the eigenvalue −1). Computed in double (LU with partial
// pivoting; meant for n up to a few hundred: O(n³) on the calling thread) and rounded to T once.
// (I − Ω/2) is invertible for every finite X (its eigenvalues are 1 − iλ/2); a non-finite entry of
// X, or a result that is not finite, is calq::Error naming `context`.
template <typename T>
void cayley_forward(int64_t n, const T* x, T* q, std::string_view context = "Cayley map");

// dX += ∂⟨dQ, Q(X)⟩/∂X: with M = (I − Ω/2)⁻¹, dQ = ½ (I + Q)·dΩ·M, so
// G_Ω = ½ (I + Q)ᵀ·G_Q·Mᵀ and G_X = G_Ω − G_Ωᵀ (in double, added to dx in T).
template <typename T>
void cayley_backward(int64_t n, const T* x, const T* dq, T* dx, std::string_view context = "Cayley map");

// ---- Kronecker product on rows ----
// For each of `rows` rows x (n1·n2 values, viewed row-major as the n1×n2 matrix X):
// Y = Aᵀ·X·B, i.e. y = x·(A ⊗ B), with A n1×n1 and B n2×n2. The weight side of a linear layer
// (W̃ = W·(A⁻ᵀ ⊗ B⁻ᵀ), W [out, n1·n2]) is the same op on W's rows with the inverse-transposed
// factors. Rows are independent (spread over the pool); each is two small products.
template <typename T>
void kron_rows_forward(ThreadPool& pool, const T* x, int64_t rows, int64_t n1, int64_t n2, const T* a, const T* b,
                       T* y);

// Given dy: dX = A·dY·Bᵀ (written into dx), dA += Σ_rows (X·B)·dYᵀ, dB += Σ_rows Xᵀ·A·dY. Each
// row's dA / dB term is one product in T; the terms are summed in double in row order (fixed
// waves of rows; the same bits for any thread count) and added to dA / dB once. dx, da, db may
// each be null (skipped).
template <typename T>
void kron_rows_backward(ThreadPool& pool, const T* x, int64_t rows, int64_t n1, int64_t n2, const T* a, const T* b,
                        const T* dy, T* dx, T* da, T* db);

// ---- SVD-parameterised factor ----

// A deterministic n×n orthogonal matrix (row-major, double): the Q of the Householder QR of a
// Gaussian matrix drawn from a std::mt19937_64 seeded with `seed` (Box–Muller on 53-bit uniforms),
// columns signed so that R's diagonal is positive (Haar-distributed). The same seed gives the same
// bytes on any machine with the same libm.
std::vector<double> random_orthogonal(int64_t n, uint64_t seed);

// The default bound on a factor's condition number (max|σ| / min|σ|) for SvdFactor::check.
inline constexpr double kMaxFactorCondition = 1e6;

// P = U·diag(σ)·Vᵀ, U = U0·cayley(Xu), V = V0·cayley(Xv): U0, V0 fixed orthogonal matrices (not
// trained, double), Xu, Xv (n×n) and σ (n) trained in T. U and V are orthogonal by construction
// (up to rounding), so cond(P) = max|σ| / min|σ| and P⁻ᵀ = U·diag(1/σ)·Vᵀ exactly. Everything is
// computed in double and rounded to T once.
template <typename T>
struct SvdFactor {
  int64_t n = 0;
  std::vector<double> u0, v0;  // n×n, fixed
  std::vector<T> xu, xv;       // n×n, trained
  std::vector<T> sigma;        // n, trained

  // U0 = V0 = random_orthogonal(n, seed), Xu = Xv = 0, σ = 1: P = P⁻ᵀ = I up to rounding (the
  // identity transform FlatQuant starts from, with a generic base point for the Cayley maps).
  static SvdFactor identity(int64_t n, uint64_t seed);

  // P and P⁻ᵀ (n×n each; either may be null). Errors of the Cayley maps (non-finite Xu, Xv) name
  // `context`; σ is not checked here (a zero σ gives an infinite P⁻ᵀ: call check first).
  void compose(T* p, T* p_inv_t, std::string_view context = "transform factor") const;

  // Given dP and dP⁻ᵀ (either may be null: zero), adds into dxu, dxv (n×n) and dsigma (n):
  //   G_U = dP·V·S + dP⁻ᵀ·V·S⁻¹,  G_V = dPᵀ·U·S + dP⁻ᵀᵀ·U·S⁻¹,
  //   G_σ_i = (Uᵀ·dP·V)_ii − (Uᵀ·dP⁻ᵀ·V)_ii / σ_i²,
  // then G_Ru = U0ᵀ·G_U through cayley_backward to dxu (likewise V). dxu, dxv, dsigma may be null.
  void backward(const T* dp, const T* dp_inv_t, T* dxu, T* dxv, T* dsigma,
                std::string_view context = "transform factor") const;

  // max|σ| / min|σ| (+∞ when some σ is 0, NaN when some σ is not finite).
  double condition() const;

  // calq::Error (kInvalidArgument) naming `context` when some σ is not finite or is 0 (singular),
  // or the condition exceeds max_condition, e.g. "layer 3 site attn_in: transform factor A is
  // ill-conditioned (condition 2.3e+07 > 1e+06)".
  void check(std::string_view context, double max_condition = kMaxFactorCondition) const;
};

// ---- Learnable activation clipping (per-token symmetric fake quantization) ----
// For each row of x[rows, cols]: m = max|row| (a constant of the op: no gradient flows through
// it), c = sigmoid(γ) with one scalar γ, s = c·m / qmax with qmax = 2^(bits−1) − 1 (7 for 4 bits),
//   ŷ = clamp(round(x / s), −qmax, qmax)·s   (round half to even, std::nearbyint),
// and a row whose s is not > 0 (all zeros, or c underflowed to 0) passes through unchanged. In
// float this is bit for bit model::fake_quantize_activations with ActivationQuant{kInt4PerToken
// (bits 4) or kInt8PerToken (bits 8), clip = lac_clip(γ)} (the same expressions: s = c·m / qmax,
// nearbyint(x / s), q·s); non-finite values propagate as they do there. bits in [2, 8].
template <typename T>
T lac_clip(T gamma);

template <typename T>
void lac_forward(ThreadPool& pool, const T* x, int64_t rows, int64_t cols, int bits, T gamma, T* y);

// Straight-through backward (FlatQuant's round_ste): with u = x / s and r = round(u),
//   inside (|r| <= qmax): ∂ŷ/∂x = 1, ∂ŷ/∂s = r − u;   clamped: ∂ŷ/∂x = 0, ∂ŷ/∂s = ±qmax (sign of r);
// chained to γ through ds/dγ = c·(1 − c)·m / qmax (pass-through rows: ∂ŷ/∂x = 1, nothing to γ).
// dx is written (may be null); *dgamma (may be null) gets Σ dy·∂ŷ/∂s·ds/dγ added: each row's sum in
// double in column order times its ds/dγ, the rows summed in double in row order (the same bits
// for any thread count).
template <typename T>
void lac_backward(ThreadPool& pool, const T* x, int64_t rows, int64_t cols, int bits, T gamma, const T* dy, T* dx,
                  T* dgamma);

}  // namespace calq::grad
