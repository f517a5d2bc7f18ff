// Internals of the integer matmul (int_dot.h): weight rows packed for one kernel level, and the
// level's micro-kernels over them.
#pragma once

#include <cstdint>
#include <vector>

#include "core/cpu_features.h"
#include "formats/int_dot.h"

namespace calq::intdot {

// n rows of a weight in panels of `lanes` rows (16 for AVX-512, 8 for AVX2 and AVX-VNNI, 1 for scalar), the
// last padded with zero codes, scales and offsets. For panel p, block b, step s (4 columns):
//   codes[((p·nb + b)·steps + s)·lanes·4 + lane·4 + e] = u[row p·lanes + lane, b·block + 4s + e]
//   scale[(p·nb + b)·lanes + lane], offset[(p·nb + b)·lanes + lane]
struct PackedRows {
  int64_t n = 0, k = 0, nb = 0;
  int block = 32, lanes = 1, max_code = 255;
  std::vector<uint8_t> codes;
  std::vector<float> scale, offset;
  std::vector<uint8_t> row_u;  // decode scratch: one row
  std::vector<float> row_scale, row_offset;
  int64_t panels() const { return (n + lanes - 1) / lanes; }
};

int lanes_for(KernelLevel level);
// Rows [r0, r0 + n) of w, decoded with the codec and packed for `level`.
void pack_rows(const QuantizedTensor& w, const IntRowCodec& codec, int64_t r0, int64_t n, KernelLevel level,
               PackedRows& out);
// y[i, 0..n) (+)= the int_dot.h chain for every token i of qa and packed row.
void run_packed(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate,
                KernelLevel level);

// The levels' kernels (int_dot_kernels.cpp; the AVX-VNNI and AVX-512 ones compiled for their targets).
void run_scalar(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate);
void run_avx2(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate);
void run_avx_vnni(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate);
void run_avx512_vnni(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate);

}  // namespace calq::intdot
