#include "core/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <mutex>

namespace calq {
namespace {
// See kMatmulColumnBlock (matmul.h). 256 columns keep the cost of re-packing x per call small
// (~5% on the reference model's output head).
constexpr int64_t kColumnBlock = kMatmulColumnBlock;
}  // namespace

void init_blas_threading() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

void matmul_nt_single(const MatmulArgs& a) {
  if (a.m == 0 || a.n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(a.m), static_cast<blasint>(a.n),
              static_cast<blasint>(a.k), 1.0f, a.x, static_cast<blasint>(a.ldx), a.w,
              static_cast<blasint>(a.ldw), a.accumulate ? 1.0f : 0.0f, a.y, static_cast<blasint>(a.ldy));
}

void matmul_nt(ThreadPool& pool, const MatmulArgs& a) {
  init_blas_threading();
  const int64_t blocks = (a.n + kColumnBlock - 1) / kColumnBlock;
  pool.parallel_for(0, static_cast<size_t>(blocks), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      MatmulArgs part = a;
      const int64_t n0 = static_cast<int64_t>(b) * kColumnBlock;
      part.w = a.w + n0 * a.ldw;
      part.y = a.y + n0;
      part.n = std::min(a.n - n0, kColumnBlock);
      matmul_nt_single(part);
    }
  });
}

void matmul_nt_reference(const MatmulArgs& a) {
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t j = 0; j < a.n; ++j) {
      double acc = a.accumulate ? a.y[i * a.ldy + j] : 0.0;
      for (int64_t p = 0; p < a.k; ++p) {
        acc += static_cast<double>(a.x[i * a.ldx + p]) * static_cast<double>(a.w[j * a.ldw + p]);
      }
      a.y[i * a.ldy + j] = static_cast<float>(acc);
    }
  }
}

void matmul_nn_single(const MatmulArgs& a) {
  if (a.m == 0 || a.n == 0) return;
  init_blas_threading();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(a.m), static_cast<blasint>(a.n),
              static_cast<blasint>(a.k), 1.0f, a.x, static_cast<blasint>(a.ldx), a.w,
              static_cast<blasint>(a.ldw), a.accumulate ? 1.0f : 0.0f, a.y, static_cast<blasint>(a.ldy));
}

void matmul_tn_single(const MatmulArgs& a) {
  if (a.m == 0 || a.n == 0) return;
  init_blas_threading();
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(a.m), static_cast<blasint>(a.n),
              static_cast<blasint>(a.k), 1.0f, a.x, static_cast<blasint>(a.ldx), a.w,
              static_cast<blasint>(a.ldw), a.accumulate ? 1.0f : 0.0f, a.y, static_cast<blasint>(a.ldy));
}

namespace {
// One single-threaded product per fixed kColumnBlock × kColumnBlock tile of y. `x_row_tile`
// offsets x to the tile's rows of y, `w_col_tile` offsets w to the tile's columns.
template <typename XOffset, typename WOffset>
void tiled(ThreadPool& pool, const MatmulArgs& a, void (*single)(const MatmulArgs&), XOffset x_rows,
           WOffset w_cols) {
  init_blas_threading();
  const int64_t row_tiles = (a.m + kColumnBlock - 1) / kColumnBlock;
  const int64_t col_tiles = (a.n + kColumnBlock - 1) / kColumnBlock;
  pool.parallel_for(0, static_cast<size_t>(row_tiles * col_tiles), Grain{.min_items = 1}, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      const int64_t m0 = static_cast<int64_t>(t) / col_tiles * kColumnBlock;
      const int64_t n0 = static_cast<int64_t>(t) % col_tiles * kColumnBlock;
      MatmulArgs part = a;
      part.x = x_rows(m0);
      part.w = w_cols(n0);
      part.y = a.y + m0 * a.ldy + n0;
      part.m = std::min(a.m - m0, kColumnBlock);
      part.n = std::min(a.n - n0, kColumnBlock);
      single(part);
    }
  });
}
}  // namespace

void matmul_nn(ThreadPool& pool, const MatmulArgs& a) {
  tiled(pool, a, matmul_nn_single, [&](int64_t m0) { return a.x + m0 * a.ldx; }, [&](int64_t n0) { return a.w + n0; });
}

void matmul_tn(ThreadPool& pool, const MatmulArgs& a) {
  tiled(pool, a, matmul_tn_single, [&](int64_t m0) { return a.x + m0; }, [&](int64_t n0) { return a.w + n0; });
}

void matmul_nn_reference(const MatmulArgs& a) {
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t j = 0; j < a.n; ++j) {
      double acc = a.accumulate ? a.y[i * a.ldy + j] : 0.0;
      for (int64_t p = 0; p < a.k; ++p) acc += static_cast<double>(a.x[i * a.ldx + p]) * a.w[p * a.ldw + j];
      a.y[i * a.ldy + j] = static_cast<float>(acc);
    }
  }
}

void matmul_tn_reference(const MatmulArgs& a) {
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t j = 0; j < a.n; ++j) {
      double acc = a.accumulate ? a.y[i * a.ldy + j] : 0.0;
      for (int64_t p = 0; p < a.k; ++p) acc += static_cast<double>(a.x[p * a.ldx + i]) * a.w[p * a.ldw + j];
      a.y[i * a.ldy + j] = static_cast<float>(acc);
    }
  }
}

void matmul_nn_single(const float* x, int64_t ldx, const float* v, int64_t ldv, float* y, int64_t ldy,
                      int64_t m, int64_t n, int64_t k) {
  if (m == 0 || n == 0) return;
  init_blas_threading();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), 1.0f, x, static_cast<blasint>(ldx), v, static_cast<blasint>(ldv), 0.0f,
              y, static_cast<blasint>(ldy));
}

}  // namespace calq
