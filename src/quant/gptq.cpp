#include "quant/gptq.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/matmul.h"
#include "formats/grid.h"

namespace calq::quant {
namespace {

// What both sweeps share: the column order, the upper Cholesky factor U of (H + λI)⁻¹ in that
// order (H⁻¹ = UᵀU), and which inputs are dead.
struct Prepared {
  std::vector<int64_t> perm;  // perm[j]: the storage column swept j-th
  // [cols × cols] row-major; only the upper triangle is written or read. The lower one is left
  // uninitialised: zero-filling it cost about a tenth of a 4096² sweep (page faults).
  std::unique_ptr<float[]> u;
  std::vector<uint8_t> dead;  // storage order
  int64_t dead_count = 0;
  double damp_used = 0;
  double lambda = 0;
};

struct Sums {
  double err2 = 0;   // Σ err_j²
  double diff2 = 0;  // Σ (w' − q)²
  double dead2 = 0;  // Σ over dead columns (w' − q)²
};

struct Sweep {
  const GridCodec& codec;
  GridState& state;
  const Prepared& prep;
  const float* w;
  int64_t rows, cols, pc;
  bool act_order;
  float* dequant;
};

const GridCodec& codec_for(const Format& format, std::string_view tensor_name) {
  const GridCodec* codec = format.grid_codec();
  if (codec == nullptr) {
    fail(ErrorKind::kUnsupported,
         "tensor '{}': GPTQ cannot quantize to {}: the format has no per-column rounding grid (use method rtn "
         "or an int<b>-pc/gN format or a GGUF block format)",
         tensor_name, format.name());
  }
  return *codec;
}

void validate(const Format& format, const float* w, int64_t rows, int64_t cols, std::span<const double> hessian,
              std::span<std::byte> dst, const GptqOptions& o) {
  format.check_shape(rows, cols, o.tensor_name);
  if (!(o.damp >= 0) || !std::isfinite(o.damp)) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': GPTQ damp {} must be finite and >= 0", o.tensor_name, o.damp);
  }
  if (o.block <= 0) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': GPTQ block {} must be > 0", o.tensor_name, o.block);
  }
  if (hessian.size() != static_cast<size_t>(cols * cols)) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': Hessian has {} entries, {} inputs need {}", o.tensor_name,
         hessian.size(), cols, cols * cols);
  }
  if (dst.size() != format.tensor_bytes(rows, cols)) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': {} output buffer has {} bytes, [{}, {}] needs {}", o.tensor_name,
         format.name(), dst.size(), rows, cols, format.tensor_bytes(rows, cols));
  }
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(w[i])) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite weight {} at row {}, column {}; cannot run GPTQ",
           o.tensor_name, w[i], i / cols, i % cols);
    }
  }
  for (int64_t i = 0; i < cols * cols; ++i) {
    if (!std::isfinite(hessian[static_cast<size_t>(i)])) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite Hessian entry {} at ({}, {}); cannot run GPTQ",
           o.tensor_name, hessian[static_cast<size_t>(i)], i / cols, i % cols);
    }
  }
}

// Runs fn(t) for t in [0, tasks): over the pool, or inline when pool == nullptr. The tasks are
// fixed by the caller (tile sizes), never by the thread count, so results do not depend on it.
// Each thread takes the next task when it is done with one: the factorisation's tiles shrink
// along the diagonal (the first does ~n²·tile work, the last tile²·tile), so equal contiguous
// shares would leave one thread with most of it.
void for_tasks(ThreadPool* pool, int64_t tasks, const std::function<void(int64_t)>& fn) {
  if (pool == nullptr) {
    for (int64_t t = 0; t < tasks; ++t) fn(t);
    return;
  }
  std::atomic<int64_t> next{0};
  const size_t lanes = std::min(pool->num_threads(), static_cast<size_t>(tasks));
  pool->parallel_for(0, lanes, Grain{.min_items = 1}, [&](size_t, size_t) {
    for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) fn(t);
  });
}

constexpr int64_t kTile = 256;  // factorisation tile (columns)

// Blocked right-looking Cholesky A = LLᵀ of the column-major n×n matrix `a` (lower triangle,
// in place), tiles of kTile: potrf of the diagonal tile, trsm of the panel below it (row tiles in
// parallel), then syrk/gemm of the trailing matrix (column tiles in parallel), BLAS on one thread
// per task. False when a pivot is not positive.
bool cholesky_lower(ThreadPool* pool, double* a, int64_t n) {
  const auto ld = static_cast<blasint>(n);
  const auto at = [&](int64_t i, int64_t k) { return a + i + k * n; };
  for (int64_t k0 = 0; k0 < n; k0 += kTile) {
    const int64_t kb = std::min(kTile, n - k0);
    if (LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', static_cast<lapack_int>(kb), at(k0, k0), ld) != 0) return false;
    const int64_t r0 = k0 + kb;
    const int64_t tiles = (n - r0 + kTile - 1) / kTile;
    for_tasks(pool, tiles, [&](int64_t t) {  // A[r, k] := A[r, k] · L_kk⁻ᵀ
      const int64_t i0 = r0 + t * kTile;
      cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit,
                  static_cast<blasint>(std::min(kTile, n - i0)), static_cast<blasint>(kb), 1.0, at(k0, k0), ld,
                  at(i0, k0), ld);
    });
    for_tasks(pool, tiles, [&](int64_t t) {  // A[j:, j] −= A[j:, k] · A[j, k]ᵀ
      const int64_t j0 = r0 + t * kTile;
      const int64_t jb = std::min(kTile, n - j0);
      cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, static_cast<blasint>(jb), static_cast<blasint>(kb), -1.0,
                  at(j0, k0), ld, 1.0, at(j0, j0), ld);
      if (j0 + jb < n) {
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(n - j0 - jb),
                    static_cast<blasint>(jb), static_cast<blasint>(kb), -1.0, at(j0 + jb, k0), ld, at(j0, k0), ld, 1.0,
                    at(j0 + jb, j0), ld);
      }
    });
  }
  return true;
}

constexpr int64_t kCopyRows = 16;  // rows of a tile copied together (so the strided reads stay in L1)

// U = J L⁻¹ J as float (row-major, upper): column tile [c0, c0 + cb) of L⁻¹ solves
// L[c0:, c0:] X = I[c0:, c0:c0+cb] (one trsm per tile, in parallel), then lands reversed in U.
void inverse_reversed(ThreadPool* pool, const double* l, int64_t n, float* u) {
  const int64_t tiles = (n + kTile - 1) / kTile;
  for_tasks(pool, tiles, [&](int64_t t) {
    const int64_t c0 = t * kTile;
    const int64_t cb = std::min(kTile, n - c0);
    const int64_t m = n - c0;
    std::vector<double> x(static_cast<size_t>(m * cb), 0.0);
    for (int64_t c = 0; c < cb; ++c) x[static_cast<size_t>(c + c * m)] = 1.0;
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, static_cast<blasint>(m),
                static_cast<blasint>(cb), 1.0, l + c0 + c0 * n, static_cast<blasint>(n), x.data(),
                static_cast<blasint>(m));
    // L⁻¹[c0 + i][c0 + c] → U[n−1−c0−i][n−1−c0−c] for c <= i, kCopyRows rows of x at a time.
    for (int64_t i0 = 0; i0 < m; i0 += kCopyRows) {
      const int64_t i1 = std::min(m, i0 + kCopyRows);
      for (int64_t c = 0; c < std::min(cb, i1); ++c) {
        const double* xc = x.data() + c * m;
        for (int64_t i = std::max(i0, c); i < i1; ++i) {
          u[(n - 1 - c0 - i) * n + (n - 1 - c0 - c)] = static_cast<float>(xc[i]);
        }
      }
    }
  });
}

// The upper factor U with A⁻¹ = UᵀU for A = H + λI in sweep order (GPTQ's "Cholesky of H⁻¹"),
// from one Cholesky and one triangular inverse: with J the reversal, JAJ = LLᵀ gives A = MMᵀ with
// M = JLJ upper, so A⁻¹ = (M⁻¹)ᵀM⁻¹ and U = M⁻¹ = J L⁻¹ J (Cholesky factors are unique, so this
// is the U of potrf(potri(potrf(A))) at half the cost). `b` holds JAJ's lower triangle
// (column-major). False when A is not positive definite.
bool factor_reversed(ThreadPool* pool, double* b, int64_t n, float* u) {
  if (!cholesky_lower(pool, b, n)) return false;
  inverse_reversed(pool, b, n, u);
  return true;
}

Prepared prepare(ThreadPool* pool, std::span<const double> hessian, int64_t cols, const GptqOptions& o) {
  Prepared p;
  const auto n = static_cast<size_t>(cols);
  std::vector<double> diag(n);
  p.dead.assign(n, 0);
  for (size_t j = 0; j < n; ++j) {
    diag[j] = hessian[j * n + j];
    if (diag[j] == 0.0) {
      p.dead[j] = 1;
      diag[j] = 1.0;
      ++p.dead_count;
    }
  }
  p.perm.resize(n);
  std::iota(p.perm.begin(), p.perm.end(), int64_t{0});
  if (o.act_order) {
    std::stable_sort(p.perm.begin(), p.perm.end(), [&](int64_t a, int64_t b) {
      return diag[static_cast<size_t>(a)] > diag[static_cast<size_t>(b)];
    });
  }
  const double mean_diag = std::accumulate(diag.begin(), diag.end(), 0.0) / static_cast<double>(n);
  // Neither buffer is zero-filled first: b's lower triangle is written below, u's upper one by the
  // inverse, and nothing reads the other halves (the tasks touch the pages, in parallel).
  const auto b = std::make_unique_for_overwrite<double[]>(n * n);
  p.u = std::make_unique_for_overwrite<float[]>(n * n);
  double damp = o.damp;
  for (int attempt = 0;; ++attempt) {
    if (attempt == kGptqDampTries) {
      fail(ErrorKind::kInvalidArgument,
           "tensor '{}': the Hessian is not positive definite even with damp {} ({} tries from {}); the "
           "calibration statistics are broken",
           o.tensor_name, damp / 10, kGptqDampTries, o.damp);
    }
    const double lambda = damp * mean_diag;
    const int64_t row_tiles = (cols + kTile - 1) / kTile;
    // b = J·(H + λI)·J in sweep order; column-major, only the lower triangle, the one the
    // factorisation reads (row-major row i, k >= i, is column-major column i).
    for_tasks(pool, row_tiles, [&](int64_t t) {
      for (size_t i = static_cast<size_t>(t * kTile); i < std::min(n, static_cast<size_t>((t + 1) * kTile)); ++i) {
        const auto pi = static_cast<size_t>(p.perm[n - 1 - i]);
        for (size_t k = i; k < n; ++k) {
          const auto pk = static_cast<size_t>(p.perm[n - 1 - k]);
          // A dead input's row and column are zero in any Σxᵀx; zeroing them keeps it decoupled
          // (so it receives no error) even when H came from elsewhere.
          b[i * n + k] = p.dead[pi] || p.dead[pk] ? 0.0 : hessian[pi * n + pk];
        }
        b[i * n + i] = diag[pi] + lambda;  // dead inputs: 1 + λ
      }
    });
    if (factor_reversed(pool, b.get(), cols, p.u.get())) {
      p.damp_used = damp;
      p.lambda = lambda;
      break;
    }
    damp = damp > 0 ? damp * 10 : kGptqZeroDampRetry;
  }
  return p;
}

// The end of the lazy batch starting at i1: at most `width` columns, and cut before a parameter
// block that starts inside the batch but ends after it, so that every block is chosen from values
// with all updates applied (as the unbatched sweep sees them).
int64_t batch_end(const Sweep& s, int64_t i1, int64_t width) {
  int64_t i2 = std::min(i1 + width, s.cols);
  if (!s.act_order) {
    const int64_t start = (i2 - 1) / s.pc * s.pc;
    if (start > i1 && start + s.pc > i2) i2 = start;
  }
  return i2;
}

// Quantizes rows [c0, c1) on the calling thread. width > 0: lazy batches of that many columns
// (immediate updates inside the batch, one sgemm for the rest); width == 0: after each column a
// rank-1 update of every remaining column (the reference).
Sums sweep_rows(const Sweep& s, int64_t c0, int64_t c1, int64_t width) {
  const int64_t nr = c1 - c0;
  const int64_t cols = s.cols;
  const auto at = [cols](int64_t r, int64_t j) { return static_cast<size_t>(r * cols + j); };
  const float* u = s.prep.u.get();
  // The weights with dead inputs zeroed (w'), in storage order, then in sweep order.
  std::vector<float> orig(static_cast<size_t>(nr * cols));
  for (int64_t r = 0; r < nr; ++r) {
    for (int64_t j = 0; j < cols; ++j) orig[at(r, j)] = s.prep.dead[static_cast<size_t>(j)] ? 0.0f : s.w[at(c0 + r, j)];
  }
  if (s.act_order) {  // static groups: parameters from w' before any update
    for (int64_t b = 0; b < cols / s.pc; ++b) s.codec.choose(s.state, b, c0, c1, orig.data() + b * s.pc, cols);
  }
  std::vector<float> x(orig.size());
  for (int64_t r = 0; r < nr; ++r) {
    for (int64_t j = 0; j < cols; ++j) x[at(r, j)] = orig[at(r, s.prep.perm[static_cast<size_t>(j)])];
  }
  std::vector<float> q(orig.size());
  std::vector<float> err(static_cast<size_t>(nr * std::max<int64_t>(width, 1)));
  Sums sums;
  for (int64_t i1 = 0; i1 < cols;) {
    const int64_t i2 = width > 0 ? batch_end(s, i1, width) : cols;
    for (int64_t j = i1; j < i2; ++j) {
      if (!s.act_order && j % s.pc == 0) s.codec.choose(s.state, j / s.pc, c0, c1, x.data() + j, cols);
      s.codec.round_column(s.state, s.prep.perm[static_cast<size_t>(j)], c0, c1, x.data() + j, cols, q.data() + j);
      const float d = u[at(j, j)];
      const float* uj = u + at(j, 0);
      for (int64_t r = 0; r < nr; ++r) {
        float* xr = x.data() + at(r, 0);
        const float e = (xr[j] - q[at(r, j)]) / d;
        sums.err2 += static_cast<double>(e) * e;
        if (width > 0) err[static_cast<size_t>(r * width + (j - i1))] = e;
        for (int64_t k = j + 1; k < i2; ++k) xr[k] -= e * uj[k];
      }
    }
    if (width > 0 && i2 < cols) {
      // x[:, i2:] −= Err[:, i1:i2] · U[i1:i2, i2:]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(nr), static_cast<blasint>(cols - i2),
                  static_cast<blasint>(i2 - i1), -1.0f, err.data(), static_cast<blasint>(width), u + at(i1, i2),
                  static_cast<blasint>(cols), 1.0f, x.data() + i2, static_cast<blasint>(cols));
    }
    i1 = i2;
  }
  for (int64_t r = 0; r < nr; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t c = s.prep.perm[static_cast<size_t>(j)];
      const float v = q[at(r, j)];
      const double dlt = static_cast<double>(orig[at(r, c)]) - v;
      sums.diff2 += dlt * dlt;
      if (s.prep.dead[static_cast<size_t>(c)]) sums.dead2 += dlt * dlt;
      if (s.dequant != nullptr) s.dequant[at(c0 + r, c)] = v;
    }
  }
  return sums;
}

GptqResult finish(const Prepared& prep, const std::vector<Sums>& parts) {
  Sums total;
  for (const Sums& p : parts) {  // in chunk order: independent of the thread count
    total.err2 += p.err2;
    total.diff2 += p.diff2;
    total.dead2 += p.dead2;
  }
  return GptqResult{.damp_used = prep.damp_used,
                    .dead_columns = prep.dead_count,
                    .error_before = 0,
                    .error = total.err2 - prep.lambda * total.diff2 - total.dead2};
}

}  // namespace

GptqResult gptq_quantize(const Format& format, const float* w, int64_t rows, int64_t cols,
                         std::span<const double> hessian, std::span<std::byte> dst, float* dequant,
                         const GptqOptions& options, ThreadPool& pool) {
  const GridCodec& codec = codec_for(format, options.tensor_name);
  validate(format, w, rows, cols, hessian, dst, options);
  const QuantizeOptions qo{.tensor_name = options.tensor_name, .importance = options.importance,
                           .range = options.range};
  auto state = codec.start(rows, cols, qo);
  init_blas_threading();  // one BLAS thread per chunk; the pool provides the parallelism
  const Prepared prep = prepare(&pool, hessian, cols, options);
  const Sweep s{.codec = codec, .state = *state, .prep = prep, .w = w, .rows = rows, .cols = cols,
                .pc = codec.param_cols(cols), .act_order = options.act_order, .dequant = dequant};
  const int64_t chunks = (rows + kGptqRowChunk - 1) / kGptqRowChunk;
  std::vector<Sums> parts(static_cast<size_t>(chunks));
  pool.parallel_for(0, static_cast<size_t>(chunks), Grain{.min_items = 1}, [&](size_t a, size_t b) {
    for (size_t c = a; c < b; ++c) {
      const int64_t r0 = static_cast<int64_t>(c) * kGptqRowChunk;
      parts[c] = sweep_rows(s, r0, std::min(rows, r0 + kGptqRowChunk), options.block);
    }
  });
  codec.pack(*state, dst);
  return finish(prep, parts);
}

GptqResult gptq_quantize_reference(const Format& format, const float* w, int64_t rows, int64_t cols,
                                   std::span<const double> hessian, std::span<std::byte> dst, float* dequant,
                                   const GptqOptions& options) {
  const GridCodec& codec = codec_for(format, options.tensor_name);
  validate(format, w, rows, cols, hessian, dst, options);
  const QuantizeOptions qo{.tensor_name = options.tensor_name, .importance = options.importance,
                           .range = options.range};
  auto state = codec.start(rows, cols, qo);
  init_blas_threading();
  const Prepared prep = prepare(nullptr, hessian, cols, options);
  const Sweep s{.codec = codec, .state = *state, .prep = prep, .w = w, .rows = rows, .cols = cols,
                .pc = codec.param_cols(cols), .act_order = options.act_order, .dequant = dequant};
  const std::vector<Sums> parts = {sweep_rows(s, 0, rows, /*width=*/0)};
  codec.pack(*state, dst);
  return finish(prep, parts);
}

}  // namespace calq::quant
