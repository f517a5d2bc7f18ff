// LinearWeight — a [rows, cols] weight matrix (a linear layer's [out, in] weight, the token
// embedding or the output head) held either as a dense float32 Tensor or as a QuantizedTensor in
// any registered number format (formats/qtensor.h), which the runtime uses in its real format.
//
// Contract:
//  * A dense weight is exactly the float32 Tensor it was made from (shared, not copied), and
//    linear_nt on it is the same matmul_nt call the runtime always made: same speed, same bits.
//  * A quantized weight is multiplied by dequantizing fixed blocks of rows on the fly
//    (matmul_nt_quantized): bit-identical to dequantizing the whole weight up front and using the
//    dense path, for any thread count.
//  * Copies share storage (tied embeddings are one LinearWeight copied into both roles);
//    same_storage() tells whether two weights are those same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "formats/qtensor.h"

namespace calq::model {

class LinearWeight {
 public:
  LinearWeight() = default;
  // Implicit on purpose: every float32 [rows, cols] Tensor is a dense weight (asserts F32, rank 2
  // or empty).
  LinearWeight(Tensor dense);            // NOLINT(google-explicit-constructor)
  LinearWeight(QuantizedTensor quant);   // NOLINT(google-explicit-constructor)

  bool is_quantized() const { return quant_.format != nullptr; }
  bool empty() const { return !is_quantized() && dense_.empty(); }
  const Tensor& dense() const;              // asserts !is_quantized()
  const QuantizedTensor& quantized() const;  // asserts is_quantized()

  int64_t rows() const;
  int64_t cols() const;
  Shape shape() const { return empty() ? Shape{} : Shape{rows(), cols()}; }
  int64_t numel() const { return rows() * cols(); }
  size_t nbytes() const;              // bytes held: float32 or encoded
  std::string format_name() const;    // "f32" or the format's registry name
  bool same_storage(const LinearWeight& other) const;

  // Rows [r0, r1) as float32 into out[(r1 − r0) × cols] (a copy for a dense weight).
  void rows_f32(int64_t r0, int64_t r1, float* out) const;
  // The whole weight as float32 [rows, cols]: the dense tensor itself (shared), or a new tensor
  // with the quantized weight dequantized (Format::dequantize).
  Tensor to_dense(ThreadPool& pool) const;

 private:
  Tensor dense_;
  QuantizedTensor quant_;
};

// y[m, w.rows] (+)= x[m, w.cols] · Wᵀ with row strides ldx/ldy (matmul_nt or matmul_nt_quantized).
void linear_nt(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, const LinearWeight& w, float* y, int64_t ldy,
               bool accumulate = false);

}  // namespace calq::model
