// Inner loops of quant_search.cpp: assign every element of a block to its nearest level under one
// candidate scale and accumulate the weighted error and the least-squares sums. Each kernel has
// a plain scalar version and an AVX2 version that give identical results: both accumulate in
// float into 8 lanes (element i into lane i mod 8) with the same operations (one fma per sum,
// the decoded value rounded as the decoder computes it), then add the lanes in order 0..7.
// Internal to the formats layer.
#pragma once

#include <cstdint>

#include "formats/quant_search.h"

namespace calq::quant::detail {

struct SymmetricSums {
  float err = 0, sxl = 0, sll = 0;  // Σ w·(x − l·s)², Σ w·l·x, Σ w·l·l
};
struct AffineSums {
  float err = 0, wq = 0, wqq = 0, wxq = 0;  // Σ w·(x − y)², Σ w·q, Σ w·q·q, Σ w·q·x
};

// s != 0 and inv = 1/s finite. q (may be null) receives level indices.
SymmetricSums assign_uniform(const float* x, const float* w, int n, int lo, int hi, float s, float inv, uint8_t* q,
                             bool avx2);
SymmetricSums assign_table(const float* x, const float* w, int n, const TableLevels16& levels, float s, float inv,
                           uint8_t* q, bool avx2);
// s > 0 and inv = 1/s finite; y = q·s + m (fused: fma).
AffineSums assign_affine(const float* x, const float* w, int n, int qmax, bool fused, float s, float m, float inv,
                         uint8_t* q, bool avx2);

}  // namespace calq::quant::detail
