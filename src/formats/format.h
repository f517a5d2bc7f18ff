// Format — one number format a weight matrix can be stored in (INT, NF4, FP8, MX, GGUF blocks...),
// and the registry of all of them.
//
// Contract (every registered format; tests/formats_contract_test.cpp loops over the registry):
//  * A tensor is a row-major [rows, cols] float matrix; rows are output channels, cols the input
//    dimension. Its encoding is `rows × row_bytes(cols)` bytes of row data (blocks of block_size
//    elements along the row, block_bytes each), followed by `trailer_bytes(rows, cols)` bytes of
//    tensor-level state (per-tensor scales, double-quantization constants); GGUF-native formats
//    have no trailer, so their bytes are exactly what llama.cpp stores.
//  * quantize() is deterministic: the same input and options give the same bytes whatever the
//    pool's thread count, and equal quantize_reference() (the plain scalar twin) byte for byte.
//    dequantize_rows() equals dequantize_rows_reference() bit for bit.
//  * Bad input from outside (non-finite values, a shape the format cannot store, bad importance
//    weights) throws calq::Error naming the tensor (QuantizeOptions::tensor_name); nothing is written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"

namespace calq {

class RangeChooser;  // formats/range.h
class GridCodec;     // formats/grid.h
class IntRowCodec;   // formats/int_dot.h
class LutRowCodec;   // formats/float_gemm.h

struct FormatTraits {
  std::string name;         // registry key, lower case: "q4_k", "int4-g128-asym", "nf4-dq", "fp8-e4m3"
  std::string family;       // "gguf", "int", "nf4", "fp8", "mx", "float"
  std::string description;  // one line for --help / docs
  int64_t block_size = 1;   // elements per block along a row; cols must be a multiple of it
  size_t block_bytes = 0;   // bytes per block in the row data
  std::optional<uint32_t> ggml_type;  // llama.cpp's ggml_type id (ABI) when the layout is GGUF-native
  double bits_per_weight = 0;         // all overhead included (scales, zero points, trailers), large tensor
  // Contract-test bound: relative RMS error ‖x − deq(q(x))‖ / ‖x‖ on rows of N(0, 1) data (cols 4096).
  double max_relative_rmse = 0;
};

struct QuantizeOptions {
  std::string_view tensor_name = "<tensor>";  // for error messages
  // Per-input-column importance (llama.cpp's imatrix: mean of x² per column), length cols, all finite
  // and >= 0; nullptr for none. Encoders that use it minimise Σ importance[j]·(x_j − q_j)².
  const float* importance = nullptr;
  // How formats with a free clipping range (int*) choose it; nullptr = the format's default
  // (min-max / absmax). Formats whose scale is fixed by their definition (fp8, mx, nf4) ignore it.
  const RangeChooser* range = nullptr;
};

class Format {
 public:
  virtual ~Format() = default;
  virtual const FormatTraits& traits() const = 0;
  const std::string& name() const { return traits().name; }
  // The format's rounding with frozen parameters (formats/grid.h) for error-compensating
  // quantizers (GPTQ), owned by the format; nullptr when it has none (GPTQ refuses the format).
  virtual const GridCodec* grid_codec() const { return nullptr; }
  // The format's rows as unsigned 8-bit codes with per-block scales and offsets, for the integer
  // matmul (formats/int_dot.h), owned by the format; nullptr when it has none (the float path runs).
  virtual const IntRowCodec* int_row_codec() const { return nullptr; }
  // The format's rows as 4-bit codes into a 16-level float table times per-block scales, for the
  // float kernel (formats/float_gemm.h), owned by the format; nullptr when it has none.
  virtual const LutRowCodec* lut_row_codec() const { return nullptr; }

  // Throws Error(kInvalidArgument) naming `tensor_name` when this format cannot store [rows, cols].
  void check_shape(int64_t rows, int64_t cols, std::string_view tensor_name = "<tensor>") const;
  // Whether check_shape(rows, cols) would pass, without throwing.
  bool can_store(int64_t rows, int64_t cols) const;
  size_t row_bytes(int64_t cols) const;  // cols / block_size × block_bytes
  virtual size_t trailer_bytes(int64_t rows, int64_t cols) const;  // default 0
  size_t tensor_bytes(int64_t rows, int64_t cols) const { return rows * row_bytes(cols) + trailer_bytes(rows, cols); }

  // Quantizes src [rows, cols] into dst (tensor_bytes(rows, cols) bytes), in parallel over rows.
  // Validates shape, finiteness and importance first (throws calq::Error, dst untouched).
  void quantize(ThreadPool& pool, const float* src, int64_t rows, int64_t cols, std::span<std::byte> dst,
                const QuantizeOptions& options = {}) const;
  // Scalar single-threaded twin; same validation, same bytes.
  void quantize_reference(const float* src, int64_t rows, int64_t cols, std::span<std::byte> dst,
                          const QuantizeOptions& options = {}) const;

  // Dequantizes rows [r0, r1) of the [rows, cols] tensor whose bytes (all of them, trailer
  // included) are `data`, into out[(r1 − r0) × cols]. Thread-safe; no validation beyond asserts
  // (the bytes came from quantize() or from a file whose size the reader checked).
  virtual void dequantize_rows(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                               float* out) const = 0;
  virtual void dequantize_rows_reference(const std::byte* data, int64_t rows, int64_t cols, int64_t r0,
                                         int64_t r1, float* out) const = 0;
  // Whole tensor, in parallel over rows.
  void dequantize(ThreadPool& pool, const std::byte* data, int64_t rows, int64_t cols, float* out) const;

 protected:
  // Calls fn(r0, r1) over row ranges covering [0, rows): once with [0, rows) on the calling thread
  // when pool == nullptr, else over the pool in chunks of at least ~16384 elements' worth of rows.
  static void for_each_row_range(ThreadPool* pool, int64_t rows, int64_t cols,
                                 const std::function<void(int64_t, int64_t)>& fn);

  // Called after validation. pool == nullptr: the scalar reference path on the calling thread;
  // otherwise the fast path over the pool (may use SIMD; must give the same bytes).
  virtual void do_quantize(ThreadPool* pool, const float* src, int64_t rows, int64_t cols, std::byte* dst,
                           const QuantizeOptions& options) const = 0;
};

// A format whose rows are independent (no trailer). Subclasses give per-row kernels; the fast
// kernels default to the scalar ones (override them with SIMD where it pays).
class RowFormat : public Format {
 public:
  void dequantize_rows(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                       float* out) const override;
  void dequantize_rows_reference(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                 float* out) const override;

 protected:
  // x: one row (cols elements); importance: nullptr or cols weights; out: row_bytes(cols) bytes.
  virtual void quantize_row(const float* x, int64_t cols, const float* importance, std::byte* out) const = 0;
  virtual void quantize_row_fast(const float* x, int64_t cols, const float* importance, std::byte* out) const {
    quantize_row(x, cols, importance, out);
  }
  virtual void dequantize_row(const std::byte* in, int64_t cols, float* out) const = 0;
  virtual void dequantize_row_fast(const std::byte* in, int64_t cols, float* out) const {
    dequantize_row(in, cols, out);
  }
  void do_quantize(ThreadPool* pool, const float* src, int64_t rows, int64_t cols, std::byte* dst,
                   const QuantizeOptions& options) const override;
};

// ---- Registry ----
// All formats, in registration order (families in the order of registry.cpp, then as each family
// registers them). Names and ggml type ids are unique.
const std::vector<const Format*>& all_formats();
const Format* find_format(std::string_view name);  // nullptr when unknown
// Throws Error(kInvalidArgument) listing close/known names when unknown.
const Format& format_by_name(std::string_view name);
const Format* format_by_ggml_type(uint32_t ggml_type);  // nullptr when none registered

// Each family file defines one of these; registry.cpp calls them in order.
using FormatList = std::vector<std::unique_ptr<Format>>;

}  // namespace calq
