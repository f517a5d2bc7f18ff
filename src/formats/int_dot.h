// Integer matmul for quantized weights: y = x·Ŵᵀ on 8-bit integer dot products, the way llama.cpp
// runs quantized models (its Q8_0/Q8_K activations), instead of dequantizing Ŵ to float32.
//
// IntRowCodec — a format's rows as integers: element j of a row is
//     Ŵ[j] = scale[b]·u[j] + offset[b],   b = j / block,   u ∈ [0, max_code] (uint8),
// with block 16 or 32 and the scales and offsets in float32 (e.g. q4_K: u = q, scale = d·sc,
// offset = −dmin·m; q8_0: u = q + 128, scale = d, offset = −128·d).
//
// The product, defined exactly (every kernel level computes these bits):
//  * x is quantized per row in blocks of the codec's `block` elements: a = max|x| over the block,
//    dx = a / 127, q = nearbyint(x · (127 / a)) ∈ [−127, 127] (all 0 with dx = 0 when a = 0),
//    sx = Σ q (exact), dsx = dx · float(sx).
//  * For token i and weight row r, over the blocks b in order, starting from t = 0:
//        acc = Σ_{j ∈ b} u[r, j]·q[i, j]      (exact, int32)
//        t = fma(float(acc), dx[i, b] · scale[r, b], t)
//        t = fma(offset[r, b], dsx[i, b], t)
//    and y[i, r] = t (or y[i, r] + t with accumulate).
//  The only approximation against the exact float path is x's 8-bit quantization (relative error
//  about 0.4 % of each block's largest value per element, averaging out over a dot product).
// Contract:
//  * int_matmul_supported(w): the format has a codec and w.cols is a multiple of its block.
//  * int_matmul over the pool equals int_matmul_reference (the scalar twin) bit for bit, for every
//    kernel level (core/cpu_features.h) and thread count: each output element is one thread's
//    sequential chain above. Work is cut into fixed blocks of kMatmulColumnBlock weight rows.
//  * Inputs must be finite (callers' activations are); a NaN or infinity gives unspecified values,
//    never out-of-bounds access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "formats/qtensor.h"

namespace calq {

class IntRowCodec {
 public:
  IntRowCodec(int block, int max_code) : block_(block), max_code_(max_code) {}
  virtual ~IntRowCodec() = default;
  int block() const { return block_; }        // 16 or 32
  int max_code() const { return max_code_; }  // largest u the codec emits (≤ 255)
  // Row r of the [rows, cols] tensor whose bytes (all of them, a trailer included) are `data`
  // (cols % block == 0) → u[cols], scale[cols / block], offset[cols / block].
  virtual void decode_row(const std::byte* data, int64_t rows, int64_t cols, int64_t r, uint8_t* u, float* scale,
                          float* offset) const = 0;

 private:
  int block_;
  int max_code_;
};

bool int_matmul_supported(const QuantizedTensor& w);

// x[m, k] quantized as described above, blocks of `block` elements.
struct QuantizedActivations {
  int64_t m = 0, k = 0;
  int block = 32;
  std::vector<int8_t> q;    // [m, k]
  std::vector<float> dx;    // [m, k / block]
  std::vector<int32_t> sx;  // [m, k / block]
  std::vector<float> dsx;   // [m, k / block]
};
// Row-parallel on the pool; identical to the scalar twin.
void quantize_activations(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, int64_t k, int block,
                          QuantizedActivations& out);
void quantize_activations_reference(const float* x, int64_t ldx, int64_t m, int64_t k, int block,
                                    QuantizedActivations& out);

// y[m, w.rows] (+)= x[m, w.cols] · Ŵᵀ as defined above; asserts int_matmul_supported(*args.w).
// Uses kernel_level() (or `level`, lowered to the best level the machine supports at or below it
// (best_supported_level), when given).
void int_matmul(ThreadPool& pool, const QuantMatmulArgs& args);
void int_matmul_at(ThreadPool& pool, const QuantMatmulArgs& args, KernelLevel level);
// The same product with activations the caller quantized (args.x unused): real W8A8 for a model
// whose activations are quantized by its own rule (per token, or one static scale; every block of a
// row then carries the row's scale). qa.k == w.cols and qa.block == the codec's block, asserted.
void int_matmul_prequantized(ThreadPool& pool, const QuantizedActivations& qa, const QuantMatmulArgs& args);
void int_matmul_reference(const QuantMatmulArgs& args);

// What the int and float matmuls ran in this process, summed over calls (atomic counters): for the
// kernel report of `calq eval`. Keys: "int8/<level>/<format>" and "float/<format>" (f32 weights
// are not counted here; linear_nt counts them).
struct KernelCount {
  std::string key;
  int64_t calls = 0;
};
void count_kernel_call(const std::string& key);
std::vector<KernelCount> kernel_counts();  // sorted by key
void reset_kernel_counts();

}  // namespace calq
