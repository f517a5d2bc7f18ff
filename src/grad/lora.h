// LoRA adapters in the gradient engine: one linear's low-rank addition (LoRA, QLoRA) with its
// forward, its backward to A, B and the linear's input, and input dropout, for T ∈ {float, double}.
//
// A linear with an adapter computes y = x·Wᵀ (+ b) + s · (drop(x)·Aᵀ)·Bᵀ with A [rank, in],
// B [out, rank], s = alpha / rank (model/lora_adapter.h's math: the rank-sized intermediate is
// scaled before the second product, as LoraAdapter::apply does, so a float forward agrees with the
// runtime's to float rounding).
//
// Contract:
//  * Adapters live in LayerParams::lora (grad/layer.h), one slot per kLayerLinearRoles position; a
//    slot with rank 0 is no adapter. The gradient of an adapter has the same shapes; a gradient slot
//    whose a (or b) is empty is not computed (the adapter, or that factor, is frozen) — the gradient
//    to the linear's input always flows through the adapter.
//  * Dropout (PEFT's lora_dropout) applies to the adapter's input only, in a training forward
//    (model_forward_backward / layer_forward / layer_backward given an active LoraDropout), never in
//    model_logits / model_loss. Element e (row-major index into the linear's [rows, in] input) of
//    the adapter of kLayerLinearRoles position `slot` in layer `layer` is kept when
//    lora_keep(dropout, layer, slot, e), and then scaled by 1 / (1 − p): a counter-based hash of
//    (seed, step, layer, slot, e), so masks do not depend on the thread count or on the order of
//    evaluation, and the backward's recompute sees the forward's mask.
//  * Same bits for any thread count (products through ops_gemm.h; elementwise loops).
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"

namespace calq::grad {

template <typename T>
struct LoraParams {
  std::vector<T> a;  // [rank, in]
  std::vector<T> b;  // [out, rank]
  int64_t rank = 0;  // 0: no adapter
  T scale = 0;       // alpha / rank (as model::LoraAdapter::scale(): rounded to float)
  bool empty() const { return rank == 0; }
};

struct LoraDropout {
  double p = 0;       // drop probability, in [0, 1); 0 = off
  uint64_t seed = 0;
  int64_t step = 0;   // the training step (a new mask every step)
  bool active() const { return p > 0; }
};

// Whether input element `element` of the adapter at (layer, slot) survives dropout `d` (always true
// when d is not active).
bool lora_keep(const LoraDropout& d, int64_t layer, int64_t slot, int64_t element);

// Buffers one adapter's forward and backward use (grown on demand, reused).
template <typename T>
struct LoraScratch {
  std::vector<T> x, du, dx;
};

// us[rows, rank] = s · drop(x)·Aᵀ; then, when y is non-null, y[rows, out] += us·Bᵀ.
template <typename T>
void lora_forward(ThreadPool& pool, const LoraParams<T>& p, const LoraDropout& d, int64_t layer, int64_t slot,
                  const T* x, int64_t rows, int64_t in, int64_t out, T* us, LoraScratch<T>& scratch, T* y);

// Given the linear's input x, the forward's us and dy[rows, out]: dB += dyᵀ·us, dA += (s·dy·B)ᵀ·drop(x)
// (each when g's tensor is non-empty), and dx[rows, in] += drop'(s·dy·B·A) (the dropout's mask and
// scale applied to the input gradient).
template <typename T>
void lora_backward(ThreadPool& pool, const LoraParams<T>& p, const LoraDropout& d, int64_t layer, int64_t slot,
                   const T* x, int64_t rows, int64_t in, int64_t out, const T* us, const T* dy, LoraParams<T>& g,
                   T* dx, LoraScratch<T>& scratch);

}  // namespace calq::grad
