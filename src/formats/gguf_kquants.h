// llama.cpp's k-quant super-block formats (GGUF types q2_K..q6_K), shared internals.
//
// Every type stores super-blocks of 256 weights split into sub-blocks (16 or 32 weights) that carry
// small integer scale codes under one or two fp16 super-block scales. Two shapes:
//  * affine (q2_K, q4_K, q5_K):  y = (d·sc_j)·q − (dmin·mn_j),  q ∈ [0, nmax], sc_j, mn_j ∈ [0, code_max];
//  * symmetric (q3_K, q6_K):     y = (d·c_j)·l,                 l ∈ [lmin, lmax], c_j ∈ [cmin, cmax].
// The encoders below search these codes to minimise Σ w·(x − y)² with y exactly as the decoder
// computes it (fp16 super-scales, integer codes); w = 1 (plain) or the column importance.
// Files: gguf_kquants.cpp (the registered formats), _search.cpp / _search_sym.cpp (encoders),
// _kernels.cpp (their inner loops, scalar + AVX2), _pack.cpp (bit layouts, scalar decoders),
// _simd.cpp (AVX2 decoders of q4_K and q6_K).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace calq::kquant {

inline constexpr int kSuper = 256;  // weights per super-block (QK_K)

// ---- Small helpers shared by the encoders ----
inline constexpr float kTiny = 1e-15f;       // sub-blocks below this range are treated as constant
inline constexpr float kHalfMax = 65504.0f;  // largest finite fp16

// Round to nearest (ties to even) after clamping to [lo, hi]; lo and hi are integers, so clamping
// first gives the same result as clamping the rounded value. The clamps are written as x86's
// MAXPS/MINPS compute them (a > b ? a : b), so the AVX2 twin agrees even on NaN (0·inf when a
// scale underflows), which clamps to lo.
inline float round_clamp(float v, float lo, float hi) {
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  return (v + 12582912.0f) - 12582912.0f;
}

// v as the nearest fp16 value (saturating at ±65504 so a huge block stays finite). F16C's
// conversion rounds to nearest even like f32_to_f16 and is exact back; it is only faster.
inline float half_round(float v) {
  v = std::min(std::max(v, -kHalfMax), kHalfMax);
#if defined(__F16C__)
  return _cvtsh_ss(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT));
#else
  return f16_to_f32(f32_to_f16(v));
#endif
}

// Σ a_j·(d·c_j − t_j)² (in double) with c_j = round_clamp(t_j·(1/d), cmin, cmax): how well codes under
// the super-block scale d (non-zero) meet the sub-block scale targets t_j of curvature a_j.
inline double scale_code_error(const float* t, const double* a, int count, float d, float cmin, float cmax) {
  const float id = 1.0f / d;
  double e = 0;
  for (int j = 0; j < count; ++j) {
    const float c = round_clamp(t[j] * id, cmin, cmax);
    const double diff = double(d * c) - t[j];
    e += a[j] * diff * diff;
  }
  return e;
}

// Eight partial sums, added in a fixed order: loops over them vectorise without reassociation.
struct Lanes {
  float v[8] = {};
  float sum() const { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
};

struct AffineSpec {
  int sub = 32;        // weights per sub-block
  int nmax = 15;       // quants are 0..nmax
  int code_max = 63;   // sub-block scale and min codes are 0..code_max
  // Candidate grid of the first per-sub-block search: iscale = (nmax + rmin + k·rdelta) / range.
  float rmin = -1.0f, rdelta = 0.1f;
  int nstep = 20;
};

struct AffineBlock {
  uint16_t d = 0, dmin = 0;  // fp16 bits
  uint8_t sc[16] = {}, mn[16] = {};
  uint8_t q[kSuper] = {};    // 0..nmax
};

struct SymmetricSpec {
  int sub = 16;
  int lmin = -32, lmax = 31;   // quant range
  int cmin = -128, cmax = 127; // scale code range
  float rmin = -1.0f, rdelta = 0.1f;
  int nstep = 20;
  int code_radius = 1;  // exact search tries codes round(s/D) ± this
};

struct SymmetricBlock {
  uint16_t d = 0;
  int8_t c[16] = {};
  int8_t l[kSuper] = {};  // lmin..lmax
};

// The inner loops of the encoders (n = 16 or 32 weights of one sub-block, a multiple of 8). The
// scalar set is the reference; the AVX2 set does the same float operations lane for lane (lane k
// of partial sum = elements i ≡ k mod 8, summed in Lanes::sum order), so results are identical.
struct Kernels {
  // Sums of w·q, w·q², w·q·x for q = round_clamp((x − offset)·iscale, 0, nmax).
  void (*affine_assign)(const float* x, const float* w, int n, float offset, float iscale, float nmax, float* sums3);
  // Σ w·((d·q − m) − x)², q = round_clamp((x + m)·(1/d), 0, nmax) (1/d := 0 when d = 0); q out if non-null.
  float (*affine_exact)(const float* x, const float* w, int n, float d, float m, float nmax, uint8_t* q);
  // Sums of w·l·x and w·l² for l = round_clamp(x·iscale, lmin, lmax).
  void (*sym_assign)(const float* x, const float* w, int n, float iscale, float lmin, float lmax, float* sums2);
  // Σ w·(d·l − x)², l = round_clamp(x·(1/d), lmin, lmax); l out if non-null.
  float (*sym_exact)(const float* x, const float* w, int n, float d, float lmin, float lmax, int8_t* l);
};
const Kernels& scalar_kernels();
const Kernels& fast_kernels();  // AVX2 when compiled for it, else the scalar set

// x: 256 values; w: 256 weights >= 0 (not all zero unless x doesn't matter). Deterministic.
void encode_affine(const AffineSpec& spec, const Kernels& k, const float* x, const float* w, AffineBlock& out);
void encode_symmetric(const SymmetricSpec& spec, const Kernels& k, const float* x, const float* w,
                      SymmetricBlock& out);

// Fills w[256] for one super-block: 1 (no importance) or importance + a tiny floor so a sub-block
// whose importance is all zero still gets a sane fit (its error costs nothing either way).
void block_weights(const float* importance, float* w);

// Per-type packing (byte layouts of llama.cpp's block_qN_K) and scalar decoding, bit-exact with
// ggml's dequantize_row_qN_K. `n` is the number of weights (a multiple of 256).
void pack_q2_k(const AffineBlock& b, std::byte* out);
void pack_q3_k(const SymmetricBlock& b, std::byte* out);
void pack_q4_k(const AffineBlock& b, std::byte* out);
void pack_q5_k(const AffineBlock& b, std::byte* out);
void pack_q6_k(const SymmetricBlock& b, std::byte* out);
void decode_q2_k(const std::byte* in, int64_t n, float* out);
void decode_q3_k(const std::byte* in, int64_t n, float* out);
void decode_q4_k(const std::byte* in, int64_t n, float* out);
void decode_q5_k(const std::byte* in, int64_t n, float* out);
void decode_q6_k(const std::byte* in, int64_t n, float* out);
// Integer forms for the integer matmul (int_dot.h): value = scale[sub]·u + offset[sub], one
// scale/offset per sub-block (16 for q2/q3/q6_K, 32 for q4/q5_K), u the unsigned code.
void decode_int_q2_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset);
void decode_int_q3_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset);
void decode_int_q4_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset);
void decode_int_q5_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset);
void decode_int_q6_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset);
// AVX2 decoders, bit-identical to the scalar ones (fall back to them without AVX2).
void decode_q4_k_fast(const std::byte* in, int64_t n, float* out);
void decode_q6_k_fast(const std::byte* in, int64_t n, float* out);

// The 12-byte packing of eight 6-bit scales and eight 6-bit mins used by q4_K and q5_K.
void pack_scales_k4(const uint8_t* sc, const uint8_t* mn, uint8_t* out12);
void unpack_scale_k4(const uint8_t* in12, int j, uint8_t& sc, uint8_t& mn);

}  // namespace calq::kquant
