// LoraAdapter — a low-rank float addition to one per-layer linear (LoRA, QLoRA; EoRA-style error
// compensation): the linear computes y = x·Wᵀ + scale · (x·Aᵀ)·Bᵀ with A [rank, in], B [out, rank],
// scale = alpha / rank (PEFT's lora_alpha / r). The base W (dense or quantized) is untouched.
//
// Contract:
//  * make() checks the shapes (A [rank, in], B [out, rank], rank >= 1, float32, every value finite,
//    alpha finite and > 0) and keeps the Tensors (shared, not copied); otherwise
//    Error(kInvalidArgument) whose message starts with `context` ("layer 3 attn_q adapter").
//  * apply(): y[rows, out] += scale · (x[rows, in]·Aᵀ)·Bᵀ — two matmul_nt calls on the pool
//    (core/matmul.h: the same bits for any thread count), the rank-sized intermediate scaled
//    before the second. apply_reference is its scalar twin (double accumulation) for tests.
//  * An adapter's bytes count in Model::storage_bytes (and so in bits per weight), not in
//    parameter_count: bits per weight stay bits per base weight, adapters included.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/tensor.h"
#include "core/thread_pool.h"

namespace calq::model {

class LoraAdapter {
 public:
  LoraAdapter() = default;
  static LoraAdapter make(Tensor a, Tensor b, double alpha, int64_t in, int64_t out, std::string_view context);

  int64_t rank() const { return a_.shape()[0]; }
  int64_t in() const { return a_.shape()[1]; }
  int64_t out() const { return b_.shape()[0]; }
  double alpha() const { return alpha_; }
  float scale() const { return static_cast<float>(alpha_ / static_cast<double>(rank())); }
  const Tensor& a() const { return a_; }  // [rank, in]
  const Tensor& b() const { return b_; }  // [out, rank]
  uint64_t nbytes() const { return a_.nbytes() + b_.nbytes(); }

  void apply(ThreadPool& pool, const float* x, int64_t rows, float* y) const;
  void apply_reference(const float* x, int64_t rows, float* y) const;
  // w[out, in] += scale · B·A (float32, matmul_nn on the pool: the same bits for any thread count).
  void add_to_weight(ThreadPool& pool, float* w) const;

 private:
  Tensor a_, b_;
  double alpha_ = 1;
};

struct Model;

// Folds every adapter of `model` into its linear: W ← dequantize(W) + scale·B·A as a new dense
// float32 weight (storage shared with other Models is never written; an activation quantization
// spec is kept), and removes the adapter. Linears without an adapter are unchanged.
void merge_adapters(Model& model, ThreadPool& pool);

}  // namespace calq::model
