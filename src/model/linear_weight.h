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
//  * Activation quantization (ActivationQuant below, default kNone): when set, linear_nt
//    fake-quantizes x before the product (W8A8 simulation, LLM.int8() decomposition); with kNone
//    linear_nt is exactly the product above.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "formats/qtensor.h"

namespace calq::model {

// How linear_nt quantizes the activations x[m, k] it multiplies by this weight — a simulation
// (fake quantization), computed in float32, deterministic and the same for any thread count:
//  * kInt8PerToken: each row of x separately: s = clip · max|row| / 127, q = round(x / s) clamped
//    to [−127, 127] (round = nearbyint, half to even as torch.round), x̂ = q · s; a zero row stays
//    0. With clip < 1 (a per-tensor clipping ratio, as QuaRot and FlatQuant use) the largest
//    values of a row saturate at ±127·s.
//  * kInt4PerToken: the same with 4 bits: s = clip · max|row| / 7, q clamped to [−7, 7]
//    (symmetric, as QuaRot's W4A4 activations).
//  * kInt8PerTensor: the same with the static s = `scale` (calibrated clip / 127) for every row;
//    values beyond 127·s saturate at ±127·s.
//  * kLlmInt8 (Dettmers et al., LLM.int8()): the outlier columns of this call are the input
//    columns where any |x| of the m rows exceeds `threshold`; they stay float32 exactly; the other
//    columns are quantized per token as kInt8PerToken, each row's s taken over its non-outlier
//    columns only. The product is then x̂ · Wᵀ with the weight as stored (float or quantized):
//    unlike the paper, which multiplies the outlier part by the fp16 weight, the outlier columns
//    here meet the same (possibly quantized) weight as the rest.
// The product of x̂ with a quantized weight (e.g. int8-pc-sym) is the W8A8 result up to float32
// rounding: integer codes times scales, accumulated in float.
struct ActivationQuant {
  enum class Kind : uint8_t { kNone, kInt8PerToken, kInt8PerTensor, kLlmInt8, kInt4PerToken };
  Kind kind = Kind::kNone;
  float scale = 0;         // kInt8PerTensor: the static scale (> 0, finite)
  float threshold = 6.0f;  // kLlmInt8: |x| above it marks an outlier column (> 0, finite)
  float clip = 1.0f;       // kInt8PerToken, kInt4PerToken: the clipping ratio, in (0, 1]

  bool enabled() const { return kind != Kind::kNone; }
  bool per_token() const { return kind == Kind::kInt8PerToken || kind == Kind::kInt4PerToken; }
  // The largest code magnitude: 7 for kInt4PerToken, 127 for the int8 kinds (0 for kNone).
  int qmax() const;
  // Whether the parameters its kind reads are valid (kNone always is).
  bool valid() const;
  friend bool operator==(const ActivationQuant&, const ActivationQuant&) = default;
};

// "none", "int8-token", "int8-tensor", "llm-int8", "int4-token" (the GGUF metadata values,
// docs/formats.md).
std::string_view activation_quant_name(ActivationQuant::Kind kind);
std::optional<ActivationQuant::Kind> activation_quant_by_name(std::string_view name);

// What linear_nt saw with activation quantization on, summed over calls (all integers, added
// atomically: the totals do not depend on the order or thread of the calls).
struct ActivationQuantCounts {
  int64_t calls = 0;
  int64_t rows = 0;             // tokens quantized (Σ m)
  int64_t columns = 0;          // Σ k over calls: input columns looked at
  int64_t outlier_columns = 0;  // kLlmInt8: Σ over calls of the columns kept in float
  int64_t saturated = 0;        // values beyond the clip (|x / s| rounds past qmax): kInt8PerTensor,
                                // and per-token kinds with clip < 1
  friend bool operator==(const ActivationQuantCounts&, const ActivationQuantCounts&) = default;
};

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
  // The same encoded bytes, now held elsewhere (e.g. in a file written from them and mapped back):
  // asserts is_quantized() and bytes.size() == quantized().bytes.size(); everything else (format,
  // activation quantization and its counters, kernel choice) stays.
  void rebind_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> keep_alive);

  // Rows [r0, r1) as float32 into out[(r1 − r0) × cols] (a copy for a dense weight).
  void rows_f32(int64_t r0, int64_t r1, float* out) const;
  // The whole weight as float32 [rows, cols]: the dense tensor itself (shared), or a new tensor
  // with the quantized weight dequantized (Format::dequantize).
  Tensor to_dense(ThreadPool& pool) const;

  // Activation quantization applied by linear_nt (kNone by default). set_act_quant asserts
  // spec.valid() and starts fresh counters (zero) for this weight; copies made afterwards share
  // the spec's counters, so a Model copy reports into the same totals.
  const ActivationQuant& act_quant() const { return act_quant_; }
  void set_act_quant(const ActivationQuant& spec);
  // The counters since set_act_quant or the last reset (all zero while kNone). Reading while
  // another thread multiplies gives some consistent-per-field snapshot; read after the work.
  ActivationQuantCounts act_quant_counts() const;
  void reset_act_quant_counts() const;

  // Whether linear_nt uses the fast kernels for this weight (issue 20), off by default (the exact
  // path: OpenBLAS sgemm, a quantized weight dequantized to float32 block by block):
  //  * a format with an integer codec (every GGUF block type): formats/int_dot.h — x quantized per
  //    block to 8 bits, integer dot products;
  //  * float32 weights, the f16/bf16 formats and the 4-bit table formats (a LutRowCodec: nf4, fp4,
  //    mxfp4, nvfp4 and their variants): formats/float_gemm.h — AVX-512 FMA on the weights as
  //    stored or decoded through their 16 levels, fp32 accumulation (where the CPU has AVX-512;
  //    else the exact path);
  //  * anything else, or while activation quantization is enabled: the exact path.
  bool fast_kernels() const { return fast_kernels_; }
  void set_fast_kernels(bool on) { fast_kernels_ = on; }

 private:
  struct Counters {
    std::atomic<int64_t> calls{0}, rows{0}, columns{0}, outlier_columns{0}, saturated{0};
  };
  friend void linear_nt(ThreadPool&, const float*, int64_t, int64_t, const LinearWeight&, float*, int64_t, bool);

  Tensor dense_;
  QuantizedTensor quant_;
  ActivationQuant act_quant_;
  std::shared_ptr<Counters> counters_;  // set when act_quant_ is enabled
  bool fast_kernels_ = false;
};

// y[m, w.rows] (+)= x[m, w.cols] · Wᵀ with row strides ldx/ldy (matmul_nt or matmul_nt_quantized).
// With w.act_quant() enabled, x is first fake-quantized into a contiguous copy (x itself is not
// changed) as ActivationQuant describes, and the counters are updated.
void linear_nt(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, const LinearWeight& w, float* y, int64_t ldy,
               bool accumulate = false);

// The fake quantization linear_nt applies: x[m, k] (row stride ldx) → xq[m, k] (contiguous) for
// an enabled `spec` (asserted valid). Returns the outlier column count (kLlmInt8, else 0) and adds
// saturated values to *saturated when non-null. Row-parallel on `pool`; same bits for any thread
// count. Exposed for tests and for callers that want x̂ itself.
int64_t fake_quantize_activations(ThreadPool& pool, const ActivationQuant& spec, const float* x, int64_t ldx,
                                  int64_t m, int64_t k, float* xq, int64_t* saturated = nullptr);

}  // namespace calq::model
