// The int family (formats/int_format.cpp: int<b>-<pt|pc|gN>-<sym|asym>[-f32]) for training: its
// layout, its per-group parameters, fake quantization under given parameters, and the format's
// bytes written from given parameters ("what is written is what was trained", issue 17).
//
// Contract:
//  * Groups are numbered as the format stores their scale/zero point: gN — row-major over
//    (row, group along the row), rows · cols/N groups; pc — one per row; pt — one for the tensor.
//  * A group's parameters are a QuantParams (formats/range.h): the scale as the format stores it
//    (fp16 or fp32 value, finite, >= 0) and an integer zero point in [qmin, qmax] (0 for sym).
//  * int_fake_quant(params) gives Ŵ = dequantize(encode_with_params(params)) bit for bit, and with
//    the parameters choose_int_params picks (the format's own chooser call) Ŵ = dequantize(quantize(W)).
//  * The STE mask of element w of a group (scale s, zero z, inv = 1/s as the format computes it) is
//    1 where qmin <= w·inv + z <= qmax (the clipping range [s(qmin − z), s(qmax − z)], ends included),
//    else 0. A zero-scale group (all its values 0 when chosen) decodes to 0 and has mask 1.
//  * Deterministic; parallel over fixed row ranges, same bytes for any thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "formats/format.h"
#include "formats/range.h"

namespace calq::grad {

enum class IntGranularity { kTensor, kChannel, kGroup };

struct IntLayout {
  int bits = 4;
  IntGranularity granularity = IntGranularity::kGroup;
  int64_t group = 128;  // columns per group (kGroup only)
  bool symmetric = false;
  bool f32 = false;     // fp32 scales (else fp16)
  QuantGrid grid;       // qmin/qmax and the scale storage, as the format's

  // Columns one group spans within a row (cols for pc and pt).
  int64_t group_cols(int64_t cols) const { return granularity == IntGranularity::kGroup ? group : cols; }
  int64_t groups_per_row(int64_t cols) const { return cols / group_cols(cols); }
  int64_t num_groups(int64_t rows, int64_t cols) const;
  // Group of element (r, c).
  int64_t group_of(int64_t r, int64_t c, int64_t cols) const;
  // The scale as the format stores it (fp16 rounding, or as is for -f32).
  float store_scale(float s) const { return grid.store_scale != nullptr ? grid.store_scale(s) : s; }
};

// The layout of an int-family format; calq::Error(kInvalidArgument) naming it otherwise.
IntLayout int_layout(const Format& format);
bool is_int_format(const Format& format);

// Per-group parameters as format.quantize would choose them (options.range or min-max, with the
// importance of the group's columns). Validates like Format::quantize (shape, finite values,
// fp16 range): calq::Error naming options.tensor_name.
std::vector<QuantParams> choose_int_params(const Format& format, const float* w, int64_t rows, int64_t cols,
                                           const QuantizeOptions& options = {});

// The per-group parameters stored in an int-family tensor's bytes (as written by the format's
// quantize or by encode_with_params): what a trainer starts from to continue another quantizer's
// result. calq::Error naming tensor_name when the shape or the byte count does not fit the format.
std::vector<QuantParams> read_int_params(const Format& format, std::span<const std::byte> bytes, int64_t rows,
                                         int64_t cols, std::string_view tensor_name = "<tensor>");

// Ŵ [rows, cols] and, when mask != nullptr, the STE mask under `params` (num_groups entries).
// A non-finite weight is calq::Error naming tensor_name, the row and the column.
void int_fake_quant(ThreadPool& pool, const IntLayout& layout, std::span<const QuantParams> params, const float* w,
                    int64_t rows, int64_t cols, float* w_hat, uint8_t* mask, std::string_view tensor_name = "<tensor>");

// The format's bytes (tensor_bytes(rows, cols)) of w under `params`. calq::Error naming tensor_name
// and the group when a parameter cannot be stored (a scale that is negative, non-finite or not a
// value of the format's scale type; a zero point outside the grid) or w has a non-finite value.
std::vector<std::byte> encode_with_params(const Format& format, const float* w, int64_t rows, int64_t cols,
                                          std::span<const QuantParams> params, std::string_view tensor_name = "<tensor>");

// Fixed row chunks for the grad layer's parallel loops (independent of the thread count).
void for_row_chunks(ThreadPool& pool, int64_t rows, int64_t cols, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace calq::grad
