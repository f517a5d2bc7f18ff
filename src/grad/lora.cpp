#include "grad/lora.h"

#include <cassert>

#include "grad/ops_gemm.h"

namespace calq::grad {
namespace {

// SplitMix64's finalizer: a bijective mix of 64 bits.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t site_key(const LoraDropout& d, int64_t layer, int64_t slot) {
  return mix(mix(mix(mix(d.seed) ^ static_cast<uint64_t>(d.step)) ^ static_cast<uint64_t>(layer)) ^
             static_cast<uint64_t>(slot));
}

bool keep_at(uint64_t key, int64_t element, double p) {
  const uint64_t h = mix(key ^ (static_cast<uint64_t>(element) * 0xd1342543de82ef95ULL));
  return static_cast<double>(h >> 11) * 0x1.0p-53 >= p;
}

constexpr Grain kRowGrain{.min_items = 16};

// out[rows, in] = mask ⊙ v / (1 − p) (the dropout's forward on x, or its backward on a gradient
// when accumulate: added into out).
template <typename T>
void apply_mask(ThreadPool& pool, const LoraDropout& d, int64_t layer, int64_t slot, const T* v, int64_t rows,
                int64_t in, T* out, bool accumulate) {
  const uint64_t key = site_key(d, layer, slot);
  const T inv = static_cast<T>(1.0 / (1.0 - d.p));
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
      for (int64_t c = 0; c < in; ++c) {
        const int64_t e = r * in + c;
        const T kept = keep_at(key, e, d.p) ? v[e] * inv : T(0);
        out[e] = accumulate ? out[e] + kept : kept;
      }
    }
  });
}

template <typename T>
void scale_values(ThreadPool& pool, T* v, int64_t rows, int64_t cols, T s) {
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    for (auto i = static_cast<int64_t>(r0) * cols; i < static_cast<int64_t>(r1) * cols; ++i) v[i] *= s;
  });
}

// The adapter's input: x itself, or drop(x) written into scratch.x.
template <typename T>
const T* adapter_input(ThreadPool& pool, const LoraDropout& d, int64_t layer, int64_t slot, const T* x, int64_t rows,
                       int64_t in, LoraScratch<T>& scratch) {
  if (!d.active()) return x;
  scratch.x.resize(static_cast<size_t>(rows * in));
  apply_mask(pool, d, layer, slot, x, rows, in, scratch.x.data(), false);
  return scratch.x.data();
}

}  // namespace

bool lora_keep(const LoraDropout& d, int64_t layer, int64_t slot, int64_t element) {
  return !d.active() || keep_at(site_key(d, layer, slot), element, d.p);
}

template <typename T>
void lora_forward(ThreadPool& pool, const LoraParams<T>& p, const LoraDropout& d, int64_t layer, int64_t slot,
                  const T* x, int64_t rows, int64_t in, int64_t out, T* us, LoraScratch<T>& scratch, T* y) {
  assert(!p.empty() && static_cast<int64_t>(p.a.size()) == p.rank * in &&
         static_cast<int64_t>(p.b.size()) == out * p.rank);
  const int64_t r = p.rank;
  const T* src = adapter_input(pool, d, layer, slot, x, rows, in, scratch);
  gemm_nt(pool, Gemm<T>{.a = src, .lda = in, .b = p.a.data(), .ldb = in, .c = us, .ldc = r, .m = rows, .n = r, .k = in});
  scale_values(pool, us, rows, r, p.scale);
  if (y == nullptr) return;
  gemm_nt(pool, Gemm<T>{.a = us, .lda = r, .b = p.b.data(), .ldb = r, .c = y, .ldc = out, .m = rows, .n = out, .k = r,
                        .accumulate = true});
}

template <typename T>
void lora_backward(ThreadPool& pool, const LoraParams<T>& p, const LoraDropout& d, int64_t layer, int64_t slot,
                   const T* x, int64_t rows, int64_t in, int64_t out, const T* us, const T* dy, LoraParams<T>& g,
                   T* dx, LoraScratch<T>& scratch) {
  const int64_t r = p.rank;
  if (!g.b.empty()) {
    assert(g.b.size() == p.b.size());
    gemm_tn(pool, Gemm<T>{.a = dy, .lda = out, .b = us, .ldb = r, .c = g.b.data(), .ldc = r, .m = out, .n = r,
                          .k = rows, .accumulate = true});
  }
  // du = s · dy·B: the gradient of the rank-sized intermediate before its scaling.
  scratch.du.resize(static_cast<size_t>(rows * r));
  gemm_nn(pool, Gemm<T>{.a = dy, .lda = out, .b = p.b.data(), .ldb = r, .c = scratch.du.data(), .ldc = r, .m = rows,
                        .n = r, .k = out});
  scale_values(pool, scratch.du.data(), rows, r, p.scale);
  if (!g.a.empty()) {
    assert(g.a.size() == p.a.size());
    const T* src = adapter_input(pool, d, layer, slot, x, rows, in, scratch);
    gemm_tn(pool, Gemm<T>{.a = scratch.du.data(), .lda = r, .b = src, .ldb = in, .c = g.a.data(), .ldc = in, .m = r,
                          .n = in, .k = rows, .accumulate = true});
  }
  if (!d.active()) {
    gemm_nn(pool, Gemm<T>{.a = scratch.du.data(), .lda = r, .b = p.a.data(), .ldb = in, .c = dx, .ldc = in, .m = rows,
                          .n = in, .k = r, .accumulate = true});
    return;
  }
  scratch.dx.resize(static_cast<size_t>(rows * in));
  gemm_nn(pool, Gemm<T>{.a = scratch.du.data(), .lda = r, .b = p.a.data(), .ldb = in, .c = scratch.dx.data(),
                        .ldc = in, .m = rows, .n = in, .k = r});
  apply_mask(pool, d, layer, slot, scratch.dx.data(), rows, in, dx, true);
}

#define CALQ_LORA_INSTANTIATE(T)                                                                                     \
  template void lora_forward<T>(ThreadPool&, const LoraParams<T>&, const LoraDropout&, int64_t, int64_t, const T*,   \
                                int64_t, int64_t, int64_t, T*, LoraScratch<T>&, T*);                                 \
  template void lora_backward<T>(ThreadPool&, const LoraParams<T>&, const LoraDropout&, int64_t, int64_t, const T*,  \
                                 int64_t, int64_t, int64_t, const T*, const T*, LoraParams<T>&, T*, LoraScratch<T>&);
CALQ_LORA_INSTANTIATE(float)
CALQ_LORA_INSTANTIATE(double)
#undef CALQ_LORA_INSTANTIATE

}  // namespace calq::grad
