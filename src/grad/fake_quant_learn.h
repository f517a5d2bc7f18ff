// Learnable quantization parameters of the int family (fake_quant_int.h), trained through the
// straight-through estimator:
//  * LSQ (Esser et al. 2019, "Learned Step Size Quantization"): a learnable step s per group and,
//    for asym formats, a learnable zero point z (LSQ+), in the format's group order.
//  * LWC (OmniQuant, arXiv 2308.13137, learnable weight clipping): per group logits a (and b for
//    asym); γ = σ(a), β = σ(b), M = max(W_g, 0), m = min(W_g, 0) (the format's min-max range):
//      asym: h = (γ·M − β·m) / (qmax − qmin), z = −round(β·m / h) clamped to [qmin, qmax]
//      sym:  h = γ·max|W_g| / qmax, z = 0
//    with a = b = +∞ (σ = 1 exactly, e.g. a = b = 30 in float) h and z are the format's min-max choice.
//
// Forward (both): the group's effective parameters are the scale as the format stores it
// (store_scale(s) — fp16 rounding unless -f32; the double instantiation, for gradient checks, does
// not round) and the zero point round(z) clamped to the grid; then
//   Ŵ = s·(clamp(round(w·(1/s)) + z, qmin, qmax) − z),
// the int formats' own arithmetic, so in float lsq_forward == int_fake_quant(lsq_quant_params) ==
// dequantize(encode_with_params(lsq_quant_params)) bit for bit (likewise for LWC).
//
// Backward: the exact gradient of the surrogate in which each round(u) is replaced by u + c with the
// rounding residual c = round(u₀) − u₀ held at the current point (clamps kept; STE through the
// storage rounding and through z's rounding). With v = w/s + z (the inside test of the int STE mask):
//   inside (qmin <= v <= qmax): ∂Ŵ/∂w = 1, ∂Ŵ/∂s = round(w/s) − w/s, ∂Ŵ/∂z = 0
//   outside (bound q_b):        ∂Ŵ/∂w = 0, ∂Ŵ/∂s = q_b − z,           ∂Ŵ/∂z = −s
// (LSQ's gradient; LSQ's gradient scale 1/√(N·qmax) is left to ParamGroup::lr_scale). A zero point
// whose rounding falls outside the grid is clamped and gets no gradient. LWC chains these through
// h(γ, β, M, m) and z(β, m, h) to a, b and — through M and m — to the group's largest / smallest
// weight (the first one on ties).
//
// Group sums are accumulated in double per row in column order, rows combined in row order
// (per-tensor groups): the same bytes for any thread count. Gradients are overwritten, not added.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "formats/range.h"
#include "grad/fake_quant_int.h"

namespace calq::grad {

// ---- LSQ ----

// step[g] = params[g].scale, zero[g] = params[g].zero_point (e.g. from choose_int_params).
void lsq_init(std::span<const QuantParams> params, std::span<float> step, std::span<float> zero);

// The effective per-group parameters of learned step / zero (what encode_with_params writes).
// calq::Error naming tensor_name and the group when a step is not a finite number > 0.
std::vector<QuantParams> lsq_quant_params(const IntLayout& layout, std::span<const float> step,
                                          std::span<const float> zero, std::string_view tensor_name = "<tensor>");

// zero may be empty for sym layouts. Errors as lsq_quant_params, and for non-finite weights.
template <typename T>
void lsq_forward(ThreadPool& pool, const IntLayout& layout, int64_t rows, int64_t cols, const T* w,
                 std::span<const T> step, std::span<const T> zero, T* w_hat, std::string_view tensor_name = "<tensor>");

// grad_w [rows·cols] (may be nullptr), grad_step [groups], grad_zero [groups] (empty for sym).
template <typename T>
void lsq_backward(ThreadPool& pool, const IntLayout& layout, int64_t rows, int64_t cols, const T* w,
                  std::span<const T> step, std::span<const T> zero, const T* grad_w_hat, T* grad_w,
                  std::span<T> grad_step, std::span<T> grad_zero);

// ---- LWC ----

// OmniQuant's initial logit (σ(4) ≈ 0.982).
inline constexpr float kLwcInit = 4.0f;

// Effective per-group parameters of w under logits a, b (b may be empty for sym).
std::vector<QuantParams> lwc_quant_params(const IntLayout& layout, int64_t rows, int64_t cols, const float* w,
                                          std::span<const float> a, std::span<const float> b);

template <typename T>
void lwc_forward(ThreadPool& pool, const IntLayout& layout, int64_t rows, int64_t cols, const T* w,
                 std::span<const T> a, std::span<const T> b, T* w_hat, std::string_view tensor_name = "<tensor>");

// grad_w [rows·cols] (STE plus the paths through max / min), grad_a, grad_b [groups] (b: empty for sym).
template <typename T>
void lwc_backward(ThreadPool& pool, const IntLayout& layout, int64_t rows, int64_t cols, const T* w,
                  std::span<const T> a, std::span<const T> b, const T* grad_w_hat, T* grad_w, std::span<T> grad_a,
                  std::span<T> grad_b);

// ---- Learned rounding (AutoRound, arXiv 2309.05516) ----
// Per element a rounding offset v in steps (the trainer keeps it in [−0.5, 0.5]); per group factors
// γ of the top and β of the bottom (asym only) of a fixed range [lo, hi] (hi >= 0 >= lo; sym: hi the
// largest magnitude, lo unused), AutoRound's max / min scale:
//   asym: s = store((γ·hi − β·lo) / (qmax − qmin)), z = clamp(qmin − round(β·lo / s), qmin, qmax)
//   sym:  s = store(γ·hi / qmax), z = 0
//   latent w' = base + v·s,  Ŵ = s·(clamp(round(w'/s) + z, qmin, qmax) − z)
// — round(base/s + v) up to the float rounding of w'. The scale is formed in double, so at γ = β = 1
// over round_range(params) s and z are exactly those params (v = 0 then reproduces their quantizer's
// result when base rounds to its codes). A group with hi = lo = 0 has scale 0 and decodes to 0.
// What is written: encode_with_params(round_latent, round_quant_params) — bit for bit the forward.
// Backward: the surrogate of LSQ's above with w' in place of w: inside, ∂Ŵ/∂v = s and ∂Ŵ/∂s =
// round(w'/s) − w'/s + v (the latent's own dependence on s); outside, ∂Ŵ/∂v = 0, ∂Ŵ/∂s = q_b − z,
// ∂Ŵ/∂z = −s; chained through s(γ, β) and z(β, s) as LWC's, hi and lo fixed. Same thread-count
// independence as LSQ / LWC.

struct RoundRange {
  std::vector<double> hi, lo;  // per group
};

// The range of each group's grid under `params`: hi = s·(qmax − z), lo = s·(qmin − z) (sym: s·qmax).
RoundRange round_range(const IntLayout& layout, std::span<const QuantParams> params);

// The per-group parameters at factors gamma, beta (beta empty for sym).
std::vector<QuantParams> round_quant_params(const IntLayout& layout, const RoundRange& range,
                                            std::span<const float> gamma, std::span<const float> beta);

// w_latent = base + v·s per element.
template <typename T>
void round_latent(ThreadPool& pool, const IntLayout& layout, int64_t rows, int64_t cols, const T* base,
                  std::span<const T> v, const RoundRange& range, std::span<const T> gamma, std::span<const T> beta,
                  T* w_latent);

// A non-finite latent weight is calq::Error naming tensor_name, the row and the column.
template <typename T>
void round_forward(ThreadPool& pool, const IntLayout& layout, int64_t rows, int64_t cols, const T* base,
                   std::span<const T> v, const RoundRange& range, std::span<const T> gamma, std::span<const T> beta,
                   T* w_hat, std::string_view tensor_name = "<tensor>");

// grad_v [rows·cols], grad_gamma [groups], grad_beta [groups] (empty for sym).
template <typename T>
void round_backward(ThreadPool& pool, const IntLayout& layout, int64_t rows, int64_t cols, const T* base,
                    std::span<const T> v, const RoundRange& range, std::span<const T> gamma, std::span<const T> beta,
                    const T* grad_w_hat, T* grad_v, std::span<T> grad_gamma, std::span<T> grad_beta);

}  // namespace calq::grad
