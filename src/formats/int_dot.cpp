// The integer matmul of int_dot.h: activation quantization, weight packing, the scalar twin and
// the AVX2 / AVX-VNNI / AVX-512 VNNI micro-kernels (int_dot_kernels.cpp), and the dispatch between them.
#include "formats/int_dot.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <map>
#include <mutex>

#include "core/matmul.h"
#include "formats/int_dot_kernels.h"

namespace calq {

bool int_matmul_supported(const QuantizedTensor& w) {
  if (w.format == nullptr) return false;
  const IntRowCodec* c = w.format->int_row_codec();
  return c != nullptr && w.cols > 0 && w.cols % c->block() == 0;
}

namespace {

void quantize_activation_rows(const float* x, int64_t ldx, int64_t r0, int64_t r1, int64_t k, int block,
                              QuantizedActivations& out) {
  const int64_t nb = k / block;
  for (int64_t i = r0; i < r1; ++i) {
    const float* xr = x + i * ldx;
    int8_t* q = out.q.data() + i * k;
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = xr + b * block;
      float a = 0;
      for (int j = 0; j < block; ++j) a = std::max(a, std::fabs(xb[j]));
      int32_t sx = 0;
      float dx = 0;
      if (a > 0) {
        dx = a / 127.0f;
        const float id = 127.0f / a;
        for (int j = 0; j < block; ++j) {
          const float v = std::min(127.0f, std::max(-127.0f, std::nearbyint(xb[j] * id)));
          q[b * block + j] = static_cast<int8_t>(v);
          sx += static_cast<int8_t>(v);
        }
      } else {
        std::fill(q + b * block, q + (b + 1) * block, int8_t{0});
      }
      out.dx[i * nb + b] = dx;
      out.sx[i * nb + b] = sx;
      out.dsx[i * nb + b] = dx * static_cast<float>(sx);
    }
  }
}

void resize(QuantizedActivations& out, int64_t m, int64_t k, int block) {
  assert(block > 0 && k % block == 0);
  out.m = m;
  out.k = k;
  out.block = block;
  out.q.resize(static_cast<size_t>(m * k));
  out.dx.resize(static_cast<size_t>(m * (k / block)));
  out.sx.resize(static_cast<size_t>(m * (k / block)));
  out.dsx.resize(static_cast<size_t>(m * (k / block)));
}

std::mutex g_count_mutex;
std::map<std::string, int64_t>& counts() {
  static std::map<std::string, int64_t> c;
  return c;
}

}  // namespace

void quantize_activations(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, int64_t k, int block,
                          QuantizedActivations& out) {
  resize(out, m, k, block);
  pool.parallel_for(0, static_cast<size_t>(m), Grain{.min_items = 8}, [&](size_t r0, size_t r1) {
    quantize_activation_rows(x, ldx, static_cast<int64_t>(r0), static_cast<int64_t>(r1), k, block, out);
  });
}

void quantize_activations_reference(const float* x, int64_t ldx, int64_t m, int64_t k, int block,
                                    QuantizedActivations& out) {
  resize(out, m, k, block);
  quantize_activation_rows(x, ldx, 0, m, k, block, out);
}

void int_matmul_reference(const QuantMatmulArgs& a) {
  const QuantizedTensor& w = *a.w;
  assert(int_matmul_supported(w));
  const IntRowCodec& codec = *w.format->int_row_codec();
  const int block = codec.block();
  const int64_t k = w.cols, nb = k / block;
  QuantizedActivations qa;
  quantize_activations_reference(a.x, a.ldx, a.m, k, block, qa);
  std::vector<uint8_t> u(static_cast<size_t>(k));
  std::vector<float> scale(static_cast<size_t>(nb)), offset(static_cast<size_t>(nb));
  for (int64_t r = 0; r < w.rows; ++r) {
    codec.decode_row(w.bytes.data(), w.rows, k, r, u.data(), scale.data(), offset.data());
    for (int64_t i = 0; i < a.m; ++i) {
      const int8_t* q = qa.q.data() + i * k;
      float t = 0;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t acc = 0;
        for (int j = 0; j < block; ++j) acc += int32_t{u[b * block + j]} * int32_t{q[b * block + j]};
        t = std::fma(static_cast<float>(acc), qa.dx[i * nb + b] * scale[b], t);
        t = std::fma(offset[b], qa.dsx[i * nb + b], t);
      }
      float& y = a.y[i * a.ldy + r];
      y = a.accumulate ? y + t : t;
    }
  }
}

void int_matmul(ThreadPool& pool, const QuantMatmulArgs& args) { int_matmul_at(pool, args, kernel_level()); }

namespace {

void run_blocks(ThreadPool& pool, const QuantMatmulArgs& a, const QuantizedActivations& qa, KernelLevel level) {
  const QuantizedTensor& w = *a.w;
  const IntRowCodec& codec = *w.format->int_row_codec();
  const int64_t blocks = (w.rows + kMatmulColumnBlock - 1) / kMatmulColumnBlock;
  pool.parallel_for(0, static_cast<size_t>(blocks), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
    // Per-thread decode and packing buffers, kept between calls (see matmul_nt_quantized).
    thread_local intdot::PackedRows packed;
    for (size_t blk = b0; blk < b1; ++blk) {
      const int64_t r0 = static_cast<int64_t>(blk) * kMatmulColumnBlock;
      const int64_t n = std::min(w.rows - r0, kMatmulColumnBlock);
      intdot::pack_rows(w, codec, r0, n, level, packed);
      intdot::run_packed(packed, qa, a.y + r0, a.ldy, a.accumulate, level);
    }
  });
  count_kernel_call("int8/" + std::string(kernel_level_name(level)) + "/" + w.format->name());
}

}  // namespace

void int_matmul_at(ThreadPool& pool, const QuantMatmulArgs& a, KernelLevel level) {
  const QuantizedTensor& w = *a.w;
  assert(int_matmul_supported(w));
  if (a.m == 0 || w.rows == 0) return;
  level = best_supported_level(level);  // never a level the CPU lacks
  // Kept between calls on the calling thread: a fresh buffer per product was a third of the
  // evaluation's time in page faults and zeroing. (A thread_local is never captured by a lambda:
  // the name would mean each worker's own copy, so the workers reach the caller's through `qa`.)
  thread_local QuantizedActivations caller_qa;
  QuantizedActivations& qa = caller_qa;
  quantize_activations(pool, a.x, a.ldx, a.m, w.cols, w.format->int_row_codec()->block(), qa);
  run_blocks(pool, a, qa, level);
}

void int_matmul_prequantized(ThreadPool& pool, const QuantizedActivations& qa, const QuantMatmulArgs& a) {
  const QuantizedTensor& w = *a.w;
  assert(int_matmul_supported(w) && qa.k == w.cols && qa.block == w.format->int_row_codec()->block() &&
         qa.m == a.m);
  if (a.m == 0 || w.rows == 0) return;
  run_blocks(pool, a, qa, kernel_level());
}

void count_kernel_call(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_count_mutex);
  ++counts()[key];
}

std::vector<KernelCount> kernel_counts() {
  std::lock_guard<std::mutex> lock(g_count_mutex);
  std::vector<KernelCount> out;
  for (const auto& [k, v] : counts()) out.push_back({k, v});
  return out;
}

void reset_kernel_counts() {
  std::lock_guard<std::mutex> lock(g_count_mutex);
  counts().clear();
}

}  // namespace calq
