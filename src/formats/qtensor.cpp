#include "formats/qtensor.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <new>

#include "core/matmul.h"

namespace calq {
namespace {

// Owned, 64-byte aligned bytes (the alignment an owned Tensor has) behind a shared_ptr.
std::shared_ptr<std::byte[]> allocate_bytes(size_t n) {
  constexpr std::align_val_t kAlign{64};
  auto* p = static_cast<std::byte*>(::operator new[](std::max<size_t>(n, 1), kAlign));
  return {p, [](std::byte* q) { ::operator delete[](q, kAlign); }};
}

QuantizedTensor owning(const Format& format, int64_t rows, int64_t cols, std::shared_ptr<std::byte[]> buf) {
  QuantizedTensor t;
  t.format = &format;
  t.rows = rows;
  t.cols = cols;
  t.bytes = {buf.get(), format.tensor_bytes(rows, cols)};
  t.keep_alive = std::move(buf);
  return t;
}

}  // namespace

QuantizedTensor QuantizedTensor::view(const Format& format, int64_t rows, int64_t cols,
                                      std::span<const std::byte> bytes, std::shared_ptr<const void> keep_alive) {
  assert(bytes.size() == format.tensor_bytes(rows, cols));
  return QuantizedTensor{.format = &format, .rows = rows, .cols = cols, .bytes = bytes,
                         .keep_alive = std::move(keep_alive)};
}

QuantizedTensor QuantizedTensor::copy_of(const Format& format, int64_t rows, int64_t cols,
                                         std::span<const std::byte> bytes) {
  assert(bytes.size() == format.tensor_bytes(rows, cols));
  auto buf = allocate_bytes(bytes.size());
  std::memcpy(buf.get(), bytes.data(), bytes.size());
  return owning(format, rows, cols, std::move(buf));
}

QuantizedTensor QuantizedTensor::quantize(ThreadPool& pool, const Format& format, const float* src, int64_t rows,
                                          int64_t cols, const QuantizeOptions& options) {
  format.check_shape(rows, cols, options.tensor_name);
  const size_t n = format.tensor_bytes(rows, cols);
  auto buf = allocate_bytes(n);
  format.quantize(pool, src, rows, cols, std::span<std::byte>(buf.get(), n), options);
  return owning(format, rows, cols, std::move(buf));
}

void QuantizedTensor::dequantize_rows(int64_t r0, int64_t r1, float* out) const {
  format->dequantize_rows(bytes.data(), rows, cols, r0, r1, out);
}

void QuantizedTensor::dequantize_rows_reference(int64_t r0, int64_t r1, float* out) const {
  format->dequantize_rows_reference(bytes.data(), rows, cols, r0, r1, out);
}

void QuantizedTensor::dequantize(ThreadPool& pool, float* out) const {
  format->dequantize(pool, bytes.data(), rows, cols, out);
}

QuantizedTensor gather_rows(const QuantizedTensor& t, std::span<const int64_t> src_rows) {
  assert(t.format->trailer_bytes(t.rows, t.cols) == 0 && "rows of a format with a trailer are not independent");
  assert(static_cast<int64_t>(src_rows.size()) == t.rows);
  const size_t rb = t.row_bytes();
  auto buf = allocate_bytes(t.bytes.size());
  for (size_t r = 0; r < src_rows.size(); ++r) {
    assert(0 <= src_rows[r] && src_rows[r] < t.rows);
    std::memcpy(buf.get() + r * rb, t.bytes.data() + static_cast<size_t>(src_rows[r]) * rb, rb);
  }
  return owning(*t.format, t.rows, t.cols, std::move(buf));
}

void matmul_nt_quantized(ThreadPool& pool, const QuantMatmulArgs& a) {
  const QuantizedTensor& w = *a.w;
  if (a.m == 0 || w.rows == 0) return;
  init_blas_threading();
  const int64_t k = w.cols;
  const int64_t blocks = (w.rows + kMatmulColumnBlock - 1) / kMatmulColumnBlock;
  // One block (kMatmulColumnBlock rows of W, a few MB at most) is the unit of work: it is
  // dequantized once and used for all m rows of x, so dequantization costs 1/m of the product.
  pool.parallel_for(0, static_cast<size_t>(blocks), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
    // The tile is per thread and kept between calls: allocating (and faulting in) a fresh buffer
    // for every block would cost as much as dequantizing it.
    thread_local std::vector<float> tile;
    const size_t need = static_cast<size_t>(std::min(w.rows, kMatmulColumnBlock) * k);
    if (tile.size() < need) tile.resize(need);
    for (size_t b = b0; b < b1; ++b) {
      const int64_t n0 = static_cast<int64_t>(b) * kMatmulColumnBlock;
      const int64_t n = std::min(w.rows - n0, kMatmulColumnBlock);
      w.dequantize_rows(n0, n0 + n, tile.data());
      // Exactly the call matmul_nt makes for this block of a dense W (same x, m, n, k, ldw = k).
      matmul_nt_single(MatmulArgs{.x = a.x, .ldx = a.ldx, .w = tile.data(), .ldw = k, .y = a.y + n0, .ldy = a.ldy,
                                  .m = a.m, .n = n, .k = k, .accumulate = a.accumulate});
    }
  });
}

void matmul_nt_quantized_reference(const QuantMatmulArgs& a) {
  const QuantizedTensor& w = *a.w;
  std::vector<float> dense(static_cast<size_t>(w.rows * w.cols));
  w.dequantize_rows_reference(0, w.rows, dense.data());
  matmul_nt_reference(MatmulArgs{.x = a.x, .ldx = a.ldx, .w = dense.data(), .ldw = w.cols, .y = a.y, .ldy = a.ldy,
                                 .m = a.m, .n = w.rows, .k = w.cols, .accumulate = a.accumulate});
}

}  // namespace calq
