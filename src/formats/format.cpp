#include "formats/format.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "core/error.h"

namespace calq {
namespace {

void validate(const Format& f, const float* src, int64_t rows, int64_t cols, std::span<std::byte> dst,
              const QuantizeOptions& o) {
  f.check_shape(rows, cols, o.tensor_name);
  if (dst.size() != f.tensor_bytes(rows, cols)) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': {} output buffer has {} bytes, [{}, {}] needs {}", o.tensor_name,
         f.name(), dst.size(), rows, cols, f.tensor_bytes(rows, cols));
  }
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(src[i])) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite value {} at row {}, column {}; cannot quantize to {}",
           o.tensor_name, src[i], i / cols, i % cols, f.name());
    }
  }
  if (o.importance != nullptr) {
    for (int64_t j = 0; j < cols; ++j) {
      if (!std::isfinite(o.importance[j]) || o.importance[j] < 0) {
        fail(ErrorKind::kInvalidArgument, "tensor '{}': importance weight {} of column {} is not finite and >= 0",
             o.tensor_name, o.importance[j], j);
      }
    }
  }
}

}  // namespace

bool Format::can_store(int64_t rows, int64_t cols) const {
  return rows > 0 && cols > 0 && cols % traits().block_size == 0;
}

void Format::check_shape(int64_t rows, int64_t cols, std::string_view tensor_name) const {
  const auto& t = traits();
  if (rows <= 0 || cols <= 0) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': shape [{}, {}] is empty; cannot quantize to {}", tensor_name, rows,
         cols, t.name);
  }
  if (cols % t.block_size != 0) {
    fail(ErrorKind::kInvalidArgument,
         "tensor '{}': row length {} is not a multiple of {}'s block size {}; choose another format for it",
         tensor_name, cols, t.name, t.block_size);
  }
}

size_t Format::row_bytes(int64_t cols) const {
  const auto& t = traits();
  return static_cast<size_t>(cols / t.block_size) * t.block_bytes;
}

size_t Format::trailer_bytes(int64_t, int64_t) const { return 0; }

void Format::quantize(ThreadPool& pool, const float* src, int64_t rows, int64_t cols, std::span<std::byte> dst,
                      const QuantizeOptions& options) const {
  validate(*this, src, rows, cols, dst, options);
  do_quantize(&pool, src, rows, cols, dst.data(), options);
}

void Format::quantize_reference(const float* src, int64_t rows, int64_t cols, std::span<std::byte> dst,
                                const QuantizeOptions& options) const {
  validate(*this, src, rows, cols, dst, options);
  do_quantize(nullptr, src, rows, cols, dst.data(), options);
}

void Format::for_each_row_range(ThreadPool* pool, int64_t rows, int64_t cols,
                                const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr) {
    fn(0, rows);
    return;
  }
  // Rows per parallel_for chunk: enough elements that the hand-off cost is noise.
  const int64_t per_chunk = 16384;
  const Grain grain{.min_items = static_cast<size_t>(std::max<int64_t>(1, per_chunk / std::max<int64_t>(cols, 1)))};
  pool->parallel_for(0, static_cast<size_t>(rows), grain,
                     [&](size_t r0, size_t r1) { fn(static_cast<int64_t>(r0), static_cast<int64_t>(r1)); });
}

void Format::dequantize(ThreadPool& pool, const std::byte* data, int64_t rows, int64_t cols, float* out) const {
  for_each_row_range(&pool, rows, cols,
                     [&](int64_t r0, int64_t r1) { dequantize_rows(data, rows, cols, r0, r1, out + r0 * cols); });
}

void RowFormat::do_quantize(ThreadPool* pool, const float* src, int64_t rows, int64_t cols, std::byte* dst,
                            const QuantizeOptions& options) const {
  const auto rb = static_cast<int64_t>(row_bytes(cols));
  const bool fast = pool != nullptr;  // the reference path runs the scalar row encoder
  for_each_row_range(pool, rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (fast) {
        quantize_row_fast(src + r * cols, cols, options.importance, dst + r * rb);
      } else {
        quantize_row(src + r * cols, cols, options.importance, dst + r * rb);
      }
    }
  });
}

void RowFormat::dequantize_rows(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                float* out) const {
  assert(0 <= r0 && r0 <= r1 && r1 <= rows);
  (void)rows;
  const size_t rb = row_bytes(cols);
  for (int64_t r = r0; r < r1; ++r) dequantize_row_fast(data + r * rb, cols, out + (r - r0) * cols);
}

void RowFormat::dequantize_rows_reference(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                          float* out) const {
  assert(0 <= r0 && r0 <= r1 && r1 <= rows);
  (void)rows;
  const size_t rb = row_bytes(cols);
  for (int64_t r = r0; r < r1; ++r) dequantize_row(data + r * rb, cols, out + (r - r0) * cols);
}

}  // namespace calq
