// Generic building blocks for block quantizers whose scales are stored as fp16 (the GGUF block
// formats): fp16 scale rounding, level sets, and weighted best-scale searches.
//
// Every search minimises the actual objective Σ w_i·(x_i − y_i)², where y_i is the value the
// decoder will produce from the stored bytes, and every candidate scale is evaluated after it has
// been rounded to the fp16 value that will be stored (codes are re-assigned under that scale).
// The searches try a fixed sequence of candidates, so they are deterministic; candidate errors
// are summed by the kernels of quant_search_kernels.h (scalar, or AVX2 with ScaleSearch::fast),
// which give identical results, so the fast and reference encoders write the same bytes.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>

namespace calq::quant {

inline constexpr float kMaxF16 = 65504.0f;  // largest finite binary16 value

// Bits of the binary16 nearest to x after clamping |x| to kMaxF16, so a stored scale is never
// infinite (x must not be NaN).
uint16_t to_f16_bits(float x);
// The float value of to_f16_bits(x).
float round_to_f16(float x);

// Integer levels lo..hi (lo < hi), indexed 0..hi−lo.
struct UniformLevels {
  int lo = 0, hi = 0;
  int count() const { return hi - lo + 1; }
  float value(int i) const { return static_cast<float>(lo + i); }
  float min_value() const { return static_cast<float>(lo); }
  float max_value() const { return static_cast<float>(hi); }
  // Index of the level nearest to v (ties either way).
  int nearest(float v) const {
    const float r = std::clamp(std::nearbyint(v), static_cast<float>(lo), static_cast<float>(hi));
    return static_cast<int>(r) - lo;
  }
};

// Exactly 16 sorted, distinct levels (the IQ4 non-linear grid), indexed 0..15.
struct TableLevels16 {
  std::array<float, 16> values{};
  std::array<float, 16> mids{};  // mids[k] = (values[k] + values[k + 1]) / 2; mids[15] unused
  explicit TableLevels16(std::span<const int8_t, 16> table);
  int count() const { return 16; }
  float value(int i) const { return values[static_cast<size_t>(i)]; }
  float min_value() const { return values[0]; }
  float max_value() const { return values[15]; }
  int nearest(float v) const {  // branch-free binary search over the 15 midpoints
    int i = v > mids[7] ? 8 : 0;
    i += v > mids[static_cast<size_t>(i + 3)] ? 4 : 0;
    i += v > mids[static_cast<size_t>(i + 1)] ? 2 : 0;
    i += v > mids[static_cast<size_t>(i)] ? 1 : 0;
    return i;
  }
};

// Candidate grid of a scale search. The base scale s0 maps the largest-magnitude element onto an
// extreme level; candidates are s0·f for `steps + 1` factors f evenly spaced in [lo, hi] (f < 1
// clips that element), each followed by one least-squares step, then up to `refine` more
// least-squares steps from the best, then the fp16 neighbours of the best.
struct ScaleSearch {
  int steps = 10;
  float lo = 0.75f;
  float hi = 1.05f;
  int refine = 3;
  bool fp16 = true;  // the scale is stored as fp16: round every candidate before evaluating it
  // Symmetric search only, when > 0: also the scales that put one of the `dominant_elements`
  // elements with the largest w·x² exactly on a level, for scales in [dominant_lo, hi]·s0 (at
  // most about `dominant_candidates` per element). Worth it when the weights are uneven (an
  // importance).
  float dominant_lo = 0;
  int dominant_elements = 1;
  int dominant_candidates = 16;
  // Symmetric fp16 search only, when > 1: also every fp16 scale in [1, sweep_hi]·s0 (s0 for the
  // larger extreme). With many levels (8 bits) the error is ragged in the scale and a slightly
  // larger step that happens to fit the block's values can win.
  float sweep_hi = 0;
  // Evaluate candidates with the AVX2 kernels (the fast path); the results are identical.
  bool fast = false;
};

struct SymmetricFit {
  float scale = 0;   // the (fp16-rounded when searched so) scale; 0 for an all-zero block
  double error = 0;  // Σ w·(x − scale·L[q])², summed in float (about 1e-6 relative)
};

// Σ w_i·(x_i − s·L[q_i])² with q_i the level nearest to x_i/s, written to q (may be null). When
// sxl/sll are given, also Σ w·x·L[q] and Σ w·L[q]² (the least-squares scale is sxl/sll).
// s == 0 assigns the level nearest to 0 everywhere. Sums are accumulated in float in a fixed
// order (quant_search_kernels.h); `fast` picks the AVX2 kernel, which gives the same results.
template <class Levels>
double assign_symmetric(const float* x, const float* w, int n, const Levels& levels, float s, uint8_t* q,
                        double* sxl = nullptr, double* sll = nullptr, bool fast = false);

// Minimises Σ w_i·(x_i − s·L[q_i])² over the scale s (either sign) and codes q_i; writes the
// codes (level indices) to q. n <= 256; w must not be all zero.
template <class Levels>
SymmetricFit fit_symmetric(const float* x, const float* w, int n, const Levels& levels, const ScaleSearch& search,
                           uint8_t* q);

struct AffineFit {
  float scale = 0, offset = 0;  // fp16 values
  double error = 0;
};

// y = q·s + m with q in 0..qmax, exactly as the decoder computes it (fused: one rounding, fma).
inline float affine_value(int q, float s, float m, bool fused) {
  return fused ? std::fma(static_cast<float>(q), s, m) : static_cast<float>(q) * s + m;
}

// Minimises Σ w_i·(x_i − affine_value(q_i, s, m))² over fp16 s, fp16 m and codes q_i in
// 0..qmax; writes the codes to q. n <= 256; w must not be all zero.
AffineFit fit_affine(const float* x, const float* w, int n, int qmax, bool fused, const ScaleSearch& search,
                     uint8_t* q);

// Σ w_i·(x_i − affine_value(q_i, s, m))² with q_i nearest, written to q (may be null).
double assign_affine(const float* x, const float* w, int n, int qmax, bool fused, float s, float m, uint8_t* q,
                     bool fast = false);

// Values beyond any fp16-scaled grid are clamped to ±kTameLimit before a search, so that the
// float error sums cannot overflow; the decoded values cannot get near it anyway. Returns x, or
// buf (n floats) holding the clamped copy.
inline constexpr float kTameLimit = 1e12f;
const float* tame_block(const float* x, int n, float* buf);

// Per-block weights for the search: the importance (when given) of the block's columns divided by
// their maximum (the argmin does not change; tiny weights cannot underflow), or ones when there is
// none or it is all zero there (any encoding is then optimal; plain MSE breaks the tie).
void block_weights(const float* importance, int n, float* w);

}  // namespace calq::quant
