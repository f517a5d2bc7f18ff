// GridCodec — a format's rounding with frozen parameters, for error-compensating quantizers
// (GPTQ): choose a block's parameters once, then round single columns to the values the format can
// represent under those parameters, then write the format's bytes.
//
// Contract:
//  * A [rows, cols] matrix is split along the row into parameter blocks of param_cols(cols)
//    columns (an int format's group, or the whole row when per-channel; a GGUF block of 32; a
//    k-quant super-block of 256). choose() sets the parameters of one block for rows [r0, r1) from
//    the block's values as they are now — the same parameters the format's own encoder would
//    choose from those values with the same importance and range chooser (QuantizeOptions).
//  * round_column() rounds column `col` of rows [r0, r1) to the nearest value representable
//    under the chosen parameters of col's block (which must have been chosen), writes the
//    dequantized values, and remembers the codes. Columns may be rounded in any order (act-order).
//  * pack() writes the tensor's bytes (Format::tensor_bytes) once every column has been rounded;
//    Format::dequantize_rows of those bytes equals the values round_column returned, bit for bit.
//  * Calls for disjoint row ranges may run concurrently (GPTQ splits rows over the pool); results
//    do not depend on how rows are split.
//  * Errors from outside (non-finite values, a shape the format cannot store) throw calq::Error
//    naming options.tensor_name, as Format::quantize does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "formats/format.h"

namespace calq {

class GridState {
 public:
  virtual ~GridState() = default;
};

class GridCodec {
 public:
  virtual ~GridCodec() = default;
  virtual const Format& format() const = 0;
  virtual int64_t param_cols(int64_t cols) const = 0;
  // The number of codes a value can take under one block's parameters (q3_k: 8, int4: 16). On the
  // uniform grids every codec but iq4's has, the spacing of representable values is
  // (highest − lowest) / (levels − 1).
  virtual int levels() const = 0;
  // State for one [rows, cols] tensor. Checks the shape (Error naming options.tensor_name).
  // `options` (importance, range chooser) must outlive the state.
  virtual std::unique_ptr<GridState> start(int64_t rows, int64_t cols, const QuantizeOptions& options) const = 0;
  // x: the block's current values, x[(r − r0)·ld + j] for rows [r0, r1), j < param_cols.
  virtual void choose(GridState& state, int64_t block, int64_t r0, int64_t r1, const float* x, int64_t ld) const = 0;
  // in[(r − r0)·stride] → out[(r − r0)·stride] for rows [r0, r1).
  virtual void round_column(GridState& state, int64_t col, int64_t r0, int64_t r1, const float* in, int64_t stride,
                            float* out) const = 0;
  virtual void pack(const GridState& state, std::span<std::byte> dst) const = 0;
};

}  // namespace calq
