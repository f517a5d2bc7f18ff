// Fake quantization (quantize → dequantize in the forward pass) with the straight-through
// estimator (STE), for every registered number format (formats/format.h) — issue 17's QAT.
//
// Contract:
//  * FakeQuantizer is made from the initial weights W0 [rows, cols] and freezes what the format
//    chose for them where the format has frozen-parameter rounding:
//      - int family (fake_quant_int.h): the per-group scale / zero point the format's chooser picks
//        (QuantizeOptions::range, importance);
//      - GGUF block types (every one with a GridCodec, formats/grid.h): the block / super-block
//        scales and mins and sub-block scale codes, chosen once by the codec from W0.
//    Other formats (f16, bf16, nf4 / fp4 [-dq], fp8 [-pt], mxfp4, nvfp4) have scales defined by the
//    format from the values themselves; they re-quantize W on every forward (Ŵ = deq(quantize(W))).
//  * forward(W) gives Ŵ: for W = W0 exactly Format::dequantize(Format::quantize(W0)) bit for bit;
//    for any W, exactly Format::dequantize(encode(W)) bit for bit — what is written is what was trained.
//  * The STE mask is 1 where the weight lies within the representable range the quantizer chose for
//    its block (ends included), 0 outside (where the format clips it):
//      - int: [s(qmin − z), s(qmax − z)] of the weight's group;
//      - GGUF codecs: [lowest, highest] value the frozen block can represent at that position
//        (found by rounding ∓huge values under the frozen parameters);
//      - f16 / bf16: the finite range; nf4 / fp4 families: never clip (stored absmax >= absmax);
//      - fp8: ±max · scale of the row / tensor; mxfp4: ±6·X of the block; nvfp4: ±6·scale·T.
//    ste_backward: dL/dW = mask · dL/dŴ.
//  * A format outside these families has no fake-quant path: calq::Error(kUnsupported) naming it.
//  * Deterministic: the same bytes for any thread count (parallel over fixed rows or columns).
//  * forward and encode reuse the frozen state's scratch: one call at a time per FakeQuantizer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "formats/format.h"
#include "formats/range.h"
#include "grad/fake_quant_int.h"

#include "formats/grid.h"

namespace calq::grad {

// Whether FakeQuantizer supports `format`.
bool has_fake_quant(const Format& format);

class FakeQuantizer {
 public:
  // Validates like Format::quantize (shape, finite values, importance): calq::Error naming
  // options.tensor_name; calq::Error(kUnsupported) naming the format when it has no fake-quant path.
  // options.importance / options.range must outlive the quantizer.
  FakeQuantizer(ThreadPool& pool, const Format& format, const float* w0, int64_t rows, int64_t cols,
                const QuantizeOptions& options = {});
  ~FakeQuantizer();
  FakeQuantizer(FakeQuantizer&&) noexcept;
  FakeQuantizer& operator=(FakeQuantizer&&) noexcept;

  const Format& format() const { return *format_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

  // w_hat [rows·cols] and, when mask != nullptr, the STE mask [rows·cols]. A non-finite weight is
  // calq::Error naming the tensor.
  void forward(ThreadPool& pool, const float* w, float* w_hat, uint8_t* mask);
  // The format's bytes (tensor_bytes(rows, cols)) of w under the frozen parameters.
  std::vector<std::byte> encode(ThreadPool& pool, const float* w);
  // The spacing of representable values at each weight's position under the frozen parameters
  // [rows·cols]: int family, its group's scale; GGUF codecs, (highest − lowest) / (levels − 1) of its
  // (sub-)block — exact on the uniform grids, the mean spacing on iq4's table; 0 where the block
  // decodes to a single value. calq::Error(kUnsupported) naming the format for formats without
  // frozen parameters (they re-quantize every forward).
  std::vector<float> spacing(ThreadPool& pool);

 private:
  enum class Kind { kInt, kCodec, kDynamic };
  void dynamic_mask(const std::byte* bytes, const float* w, uint8_t* mask) const;

  // What the codec state refers to, at a stable address (the quantizer may be moved).
  struct Frozen {
    std::string name;
    QuantizeOptions options;  // tensor_name views `name`
    std::unique_ptr<GridState> state;
  };
  const Format* format_ = nullptr;
  int64_t rows_ = 0, cols_ = 0;
  std::unique_ptr<Frozen> frozen_;
  Kind kind_ = Kind::kDynamic;
  IntLayout int_layout_;
  std::vector<QuantParams> int_params_;
};

// Ŵ and mask of w with parameters chosen from w itself: FakeQuantizer(w).forward(w).
void fake_quantize(ThreadPool& pool, const Format& format, const float* w, int64_t rows, int64_t cols, float* w_hat,
                   uint8_t* mask, const QuantizeOptions& options = {});

// grad_w[i] = mask[i] ? grad_w_hat[i] : 0 (all three the same length).
template <typename T>
void ste_backward(std::span<const T> grad_w_hat, std::span<const uint8_t> mask, std::span<T> grad_w);

}  // namespace calq::grad
