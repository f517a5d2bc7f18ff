#include "model/linear_weight.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "core/matmul.h"

namespace calq::model {

LinearWeight::LinearWeight(Tensor dense) : dense_(std::move(dense)) {
  assert(dense_.empty() || (dense_.dtype() == DType::kF32 && dense_.rank() == 2));
}

LinearWeight::LinearWeight(QuantizedTensor quant) : quant_(std::move(quant)) { assert(quant_.format != nullptr); }

const Tensor& LinearWeight::dense() const {
  assert(!is_quantized() && "dense() on a quantized weight");
  return dense_;
}

const QuantizedTensor& LinearWeight::quantized() const {
  assert(is_quantized() && "quantized() on a dense weight");
  return quant_;
}

int64_t LinearWeight::rows() const {
  if (is_quantized()) return quant_.rows;
  return dense_.empty() ? 0 : dense_.dim(0);
}

int64_t LinearWeight::cols() const {
  if (is_quantized()) return quant_.cols;
  return dense_.empty() ? 0 : dense_.dim(1);
}

size_t LinearWeight::nbytes() const { return is_quantized() ? quant_.bytes.size() : dense_.nbytes(); }

std::string LinearWeight::format_name() const { return is_quantized() ? quant_.format->name() : "f32"; }

bool LinearWeight::same_storage(const LinearWeight& other) const {
  if (is_quantized() != other.is_quantized()) return false;
  if (is_quantized()) return quant_.bytes.data() == other.quant_.bytes.data();
  return dense_.data() != nullptr && dense_.data() == other.dense_.data();
}

void LinearWeight::rows_f32(int64_t r0, int64_t r1, float* out) const {
  assert(0 <= r0 && r0 <= r1 && r1 <= rows());
  if (is_quantized()) {
    quant_.dequantize_rows(r0, r1, out);
    return;
  }
  std::copy(dense_.f32() + r0 * cols(), dense_.f32() + r1 * cols(), out);
}

Tensor LinearWeight::to_dense(ThreadPool& pool) const {
  if (!is_quantized()) return dense_;
  Tensor out = Tensor::zeros(DType::kF32, {quant_.rows, quant_.cols});
  quant_.dequantize(pool, out.mutable_f32());
  return out;
}

void linear_nt(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, const LinearWeight& w, float* y, int64_t ldy,
               bool accumulate) {
  if (w.is_quantized()) {
    matmul_nt_quantized(pool, QuantMatmulArgs{.x = x, .ldx = ldx, .w = &w.quantized(), .y = y, .ldy = ldy, .m = m,
                                              .accumulate = accumulate});
    return;
  }
  const Tensor& d = w.dense();
  matmul_nt(pool, MatmulArgs{.x = x, .ldx = ldx, .w = d.f32(), .ldw = d.dim(1), .y = y, .ldy = ldy, .m = m,
                             .n = d.dim(0), .k = d.dim(1), .accumulate = accumulate});
}

}  // namespace calq::model
