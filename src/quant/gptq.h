// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers") on one weight matrix: quantizes the columns (inputs) one at a time
// and spreads each column's rounding error over the columns not yet quantized, weighted by the
// inverse Hessian of the layer's inputs, so that ‖(W − Q)X‖ is small rather than ‖W − Q‖.
//
// Contract:
//  * The result is stored in any format with a GridCodec (formats/grid.h); its parameters (scales,
//    zero points) are chosen by the format's own chooser from the current, error-compensated values
//    at the start of each parameter block (storage order), or up front from W when act_order is set
//    ("static groups", so the bytes keep the format's layout). Formats without a codec are an Error.
//  * hessian = Σ xᵀx over calibration inputs x (any positive scale: the algorithm is scale-free),
//    [cols × cols] row-major double, symmetric. Inputs with H_jj == 0 ("dead") get H_jj = 1 and
//    weight 0 (they never receive error and quantize to 0). The dampening λ = damp · mean(diag H)
//    is added to the diagonal; when a Cholesky factorisation fails, damp is multiplied by 10 (a
//    zero damp first becomes kGptqZeroDampRetry) and the factorisation retried, up to
//    kGptqDampTries attempts in all, then an Error naming the tensor.
//  * H⁻¹'s upper Cholesky factor U (H⁻¹ = UᵀU, GPTQ's form) comes from one Cholesky of the
//    reversed H and one triangular inverse (the same U as potrf∘potri∘potrf, half the work), in
//    double, tiled (256 columns) over the pool; the reference runs the same tiles inline.
//  * Deterministic: rows are independent and are processed in chunks of kGptqRowChunk rows (fixed,
//    whatever the thread count), each chunk single-threaded, and the factorisation's tiles are
//    fixed too, so the bytes are identical for any pool. W and U are float32 in the sweep (as GPTQ).
//  * gptq_quantize (lazy batches of `block` columns: immediate updates inside the batch, one sgemm
//    per batch for the columns after it) and gptq_quantize_reference (a rank-1 update of every
//    remaining column after each column; whole matrix, one thread) run the same arithmetic except
//    for the order in which the updates are summed, so their values agree to float rounding
//    (a code may differ where a value sits on a rounding boundary).
//  * Errors from outside (non-finite w or H, wrong sizes, bad options, a shape the format cannot
//    store, a format without a codec) throw calq::Error naming options.tensor_name; nothing is
//    written to dst/dequant then, except when the codec itself rejects a value during the sweep.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/thread_pool.h"
#include "formats/format.h"

namespace calq::quant {

inline constexpr int64_t kGptqRowChunk = 64;
inline constexpr int kGptqDampTries = 6;
inline constexpr double kGptqZeroDampRetry = 1e-3;

struct GptqOptions {
  double damp = 0.01;    // × mean diagonal of H, added to the diagonal (>= 0, finite)
  int64_t block = 128;   // lazy-batch width (> 0)
  bool act_order = false;  // columns by descending diag(H) (stable); group params chosen up front
                           // from the original W in storage order ("static groups")
  std::string_view tensor_name = "<tensor>";
  const float* importance = nullptr;  // passed to the codec (the format's own importance), or nullptr
  const RangeChooser* range = nullptr;  // passed to the codec; nullptr = the format's default
};

struct GptqResult {
  double damp_used = 0;      // the damp factor that factorised (options.damp, or larger after retries)
  int64_t dead_columns = 0;  // inputs with H_jj == 0
  double error_before = 0;   // not computed (0); callers that want the RTN error measure it themselves
  // Σ_rows (w − q)ᵀ H (w − q) for the final q and the caller's H (undamped), computed from GPTQ's
  // own per-column errors: Σ err_j² (= the damped objective in exact arithmetic) minus the damping
  // term λ‖w' − q‖² and the dead columns' H_jj = 1 term. Accurate to float rounding of the sweep.
  double error = 0;
};

// w: [rows, cols] float32 (not modified); hessian: [cols × cols]; dst: format.tensor_bytes(rows, cols);
// dequant (optional, rows × cols): the quantized values (Format::dequantize of dst, bit for bit).
GptqResult gptq_quantize(const Format& format, const float* w, int64_t rows, int64_t cols,
                         std::span<const double> hessian, std::span<std::byte> dst, float* dequant,
                         const GptqOptions& options, ThreadPool& pool);

// The straightforward twin (no lazy batches, single-threaded); tests and the benchmark compare
// against it. options.block is checked but unused.
GptqResult gptq_quantize_reference(const Format& format, const float* w, int64_t rows, int64_t cols,
                                   std::span<const double> hessian, std::span<std::byte> dst, float* dequant,
                                   const GptqOptions& options);

}  // namespace calq::quant
