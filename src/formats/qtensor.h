// QuantizedTensor — a [rows, cols] weight matrix held in one registered number Format (format.h):
// its encoded bytes, viewed (e.g. in a memory-mapped GGUF file) or owned, plus whatever keeps them
// alive — and the product y = x·Wᵀ computed from those bytes without a float copy of W.
//
// Contract:
//  * `bytes` is exactly format->tensor_bytes(rows, cols) long (asserted by the factories); a
//    QuantizedTensor is cheap to copy and shares its bytes.
//  * matmul_nt_quantized dequantizes W in the fixed blocks of kMatmulColumnBlock output rows that
//    matmul_nt (core/matmul.h) uses, one block at a time into a per-thread float tile, and calls
//    the same single-threaded sgemm on each: its result is bit-identical to dequantizing the whole
//    of W first (Format::dequantize) and calling matmul_nt, and independent of the thread count.
//    matmul_nt_quantized_reference is the scalar twin (dequantize_rows_reference, then
//    matmul_nt_reference); it agrees within float rounding, not bit for bit.
//  * gather_rows reorders whole rows of bytes; it needs a format without a tensor trailer (every
//    GGUF-native format: their rows are independent), which it asserts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "formats/format.h"

namespace calq {

struct QuantizedTensor {
  const Format* format = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  std::span<const std::byte> bytes;        // tensor_bytes(rows, cols)
  std::shared_ptr<const void> keep_alive;  // owner of `bytes` (a mapped file, or an owned buffer)

  // A view of bytes someone else owns (asserts the size).
  static QuantizedTensor view(const Format& format, int64_t rows, int64_t cols, std::span<const std::byte> bytes,
                              std::shared_ptr<const void> keep_alive);
  // An owned copy of `bytes` (asserts the size).
  static QuantizedTensor copy_of(const Format& format, int64_t rows, int64_t cols, std::span<const std::byte> bytes);
  // src [rows, cols] encoded with format.quantize (throws its errors); owned bytes.
  static QuantizedTensor quantize(ThreadPool& pool, const Format& format, const float* src, int64_t rows,
                                  int64_t cols, const QuantizeOptions& options = {});

  size_t row_bytes() const { return format->row_bytes(cols); }
  // Rows [r0, r1) into out[(r1 − r0) × cols] (fast kernels / scalar reference twin).
  void dequantize_rows(int64_t r0, int64_t r1, float* out) const;
  void dequantize_rows_reference(int64_t r0, int64_t r1, float* out) const;
  // The whole matrix into out[rows × cols], in parallel over rows.
  void dequantize(ThreadPool& pool, float* out) const;
};

// Row r of the result is row src_rows[r] of t (owned bytes); src_rows.size() == t.rows, every entry
// in [0, t.rows). Asserts t's format has no trailer.
QuantizedTensor gather_rows(const QuantizedTensor& t, std::span<const int64_t> src_rows);

// y[m, w.rows] (+)= x[m, w.cols] · deq(w)ᵀ, row-major with leading dimensions.
struct QuantMatmulArgs {
  const float* x = nullptr;
  int64_t ldx = 0;  // >= w.cols
  const QuantizedTensor* w = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;  // >= w.rows
  int64_t m = 0;
  bool accumulate = false;  // y += x·Wᵀ instead of y = x·Wᵀ
};

void matmul_nt_quantized(ThreadPool& pool, const QuantMatmulArgs& args);
void matmul_nt_quantized_reference(const QuantMatmulArgs& args);

}  // namespace calq
