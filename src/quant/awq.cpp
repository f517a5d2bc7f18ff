#include "quant/awq.h"

#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>

#include "core/error.h"
#include "core/matmul.h"

namespace calq::quant {
namespace {

// Rows per unit of parallel work. Fixed, so every row's arithmetic (and the order partial sums
// are added in) is the same for any pool size.
constexpr int64_t kRowBlock = 64;
// Smallest block that is a clipping group of its own; smaller blocks (packing units of
// per-channel / per-tensor / element formats) are clipped in groups of kFallbackClipGroup.
constexpr int64_t kMinClipGroup = 16;
constexpr int64_t kFallbackClipGroup = 128;

size_t idx(int64_t i) { return static_cast<size_t>(i); }

// Fills d[(r1 − r0) × in] with the original-domain error of rows [r0, r1).
using DeltaFn = std::function<void(int64_t r0, int64_t r1, double* d)>;

// out[r] = Δw_rᵀ H Δw_r for r in [0, rows), Δw from `delta`, computed in fixed row blocks.
void row_errors(ThreadPool& pool, int64_t rows, int64_t in, const double* h, const DeltaFn& delta, double* out) {
  init_blas_threading();
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  pool.parallel_for(0, idx(blocks), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
    std::vector<double> d(idx(kRowBlock * in)), c(idx(kRowBlock * in));
    for (size_t b = b0; b < b1; ++b) {
      const int64_t r0 = static_cast<int64_t>(b) * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
      const int64_t nb = r1 - r0;
      delta(r0, r1, d.data());
      // C = D · H (H symmetric, full storage).
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(nb), static_cast<blasint>(in),
                  static_cast<blasint>(in), 1.0, d.data(), static_cast<blasint>(in), h, static_cast<blasint>(in), 0.0,
                  c.data(), static_cast<blasint>(in));
      for (int64_t r = 0; r < nb; ++r) {
        double e = 0;
        for (int64_t j = 0; j < in; ++j) e += d[idx(r * in + j)] * c[idx(r * in + j)];
        out[r0 + r] = e;
      }
    }
  });
}

double sum_in_order(const std::vector<double>& v) {
  double s = 0;
  for (const double x : v) s += x;
  return s;
}

// The format's round trip of src [rows, in] into out.
void round_trip(ThreadPool& pool, const Format& format, const float* src, int64_t rows, int64_t in,
                const QuantizeOptions& qopts, std::vector<std::byte>& bytes, float* out) {
  bytes.resize(format.tensor_bytes(rows, in));
  format.quantize(pool, src, rows, in, bytes, qopts);
  format.dequantize(pool, bytes.data(), rows, in, out);
}

// The original-domain error Q/s − W of rows [r0, r1).
DeltaFn scaled_delta(const float* q, const float* w, const std::vector<float>& s, int64_t in) {
  return [q, w, &s, in](int64_t r0, int64_t r1, double* d) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < in; ++j) {
        d[(r - r0) * in + j] = static_cast<double>(q[r * in + j]) / static_cast<double>(s[idx(j)]) -
                               static_cast<double>(w[r * in + j]);
      }
    }
  };
}

void validate(std::span<const Tensor* const> consumers, std::span<const float> mean_abs,
              std::span<const double> hessian, const Format& format, const AwqOptions& o) {
  const auto in = static_cast<int64_t>(mean_abs.size());
  if (consumers.empty()) fail(ErrorKind::kInvalidArgument, "{}: AWQ needs at least one weight", o.tensor_name);
  if (o.grid < 1 || o.clip_steps < 1 || !(o.max_shrink >= 0.0 && o.max_shrink < 1.0)) {
    fail(ErrorKind::kInvalidArgument, "{}: AWQ options out of range (grid {}, clip_steps {}, max_shrink {})",
         o.tensor_name, o.grid, o.clip_steps, o.max_shrink);
  }
  for (size_t k = 0; k < consumers.size(); ++k) {
    const Tensor* t = consumers[k];
    if (t == nullptr || t->dtype() != DType::kF32 || t->rank() != 2 || t->dim(1) != in || t->dim(0) < 1) {
      fail(ErrorKind::kInvalidArgument, "{}: AWQ weight {} must be float32 [rows, {}] (it is {})", o.tensor_name, k,
           in, t == nullptr ? std::string("null") : shape_string(t->shape()));
    }
    format.check_shape(t->dim(0), in, o.tensor_name);
  }
  for (size_t j = 0; j < mean_abs.size(); ++j) {
    if (!std::isfinite(mean_abs[j]) || mean_abs[j] < 0.0f) {
      fail(ErrorKind::kInvalidArgument, "{}: AWQ activation mean |x| of column {} is {} (must be finite, >= 0)",
           o.tensor_name, j, mean_abs[j]);
    }
  }
  if (hessian.size() != idx(in) * idx(in)) {
    fail(ErrorKind::kInvalidArgument, "{}: AWQ Hessian has {} values, expected {} x {}", o.tensor_name,
         hessian.size(), in, in);
  }
  for (size_t i = 0; i < hessian.size(); ++i) {
    if (!std::isfinite(hessian[i])) {
      fail(ErrorKind::kInvalidArgument, "{}: AWQ Hessian value {} is not finite", o.tensor_name, i);
    }
  }
}

// s = (mean|x|)^α, clamped at 1e-4, divided by sqrt(max · min). α = 0 gives exactly 1.
std::vector<float> awq_scales(std::span<const float> mean_abs, double alpha) {
  std::vector<double> s(mean_abs.size());
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (size_t j = 0; j < s.size(); ++j) {
    s[j] = std::max(std::pow(static_cast<double>(mean_abs[j]), alpha), 1e-4);
    lo = std::min(lo, s[j]);
    hi = std::max(hi, s[j]);
  }
  const double norm = std::sqrt(hi * lo);
  std::vector<float> out(s.size());
  for (size_t j = 0; j < s.size(); ++j) out[j] = static_cast<float>(s[j] / norm);
  return out;
}

struct Consumer {
  const float* w = nullptr;   // original [rows, in]
  int64_t rows = 0;
  std::vector<float> scaled;  // W·diag(s) for the best s
  std::vector<double> row_err;  // per-row error of the scaled round trip
};

// Clamps row values of group [g0, g0 + gl) to ±max|w|·(1 − k/steps).
void clamp_group(const float* src, float* dst, int64_t gl, int k, int steps) {
  float m = 0;
  for (int64_t j = 0; j < gl; ++j) m = std::max(m, std::abs(src[j]));
  const float bound = m * static_cast<float>(1.0 - static_cast<double>(k) / steps);
  for (int64_t j = 0; j < gl; ++j) dst[j] = std::clamp(src[j], -bound, bound);
}

// The clip search for one consumer (see the header). Writes the chosen weights into c.scaled and
// returns the consumer's error after clipping (<= Σ c.row_err).
double clip_consumer(ThreadPool& pool, const Format& format, Consumer& c, int64_t in, const std::vector<float>& s,
                     const double* h, const QuantizeOptions& qopts, const AwqOptions& o) {
  const int64_t rows = c.rows;
  const int64_t block = format.traits().block_size;
  const int64_t group = block >= kMinClipGroup ? block : std::min(kFallbackClipGroup, in);
  const int64_t groups = (in + group - 1) / group;
  const int max_k = static_cast<int>(std::floor(o.max_shrink * o.clip_steps + 1e-9));
  std::vector<double> best_err(idx(rows * groups), std::numeric_limits<double>::infinity());
  std::vector<int> best_k(idx(rows * groups), 0);
  std::vector<float> clamped(idx(rows * in)), q(idx(rows * in));
  std::vector<std::byte> bytes;
  init_blas_threading();
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  for (int k = 0; k <= max_k; ++k) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g0 = 0; g0 < in; g0 += group) {
        const int64_t off = r * in + g0;
        clamp_group(c.scaled.data() + off, clamped.data() + off, std::min(group, in - g0), k, o.clip_steps);
      }
    }
    round_trip(pool, format, clamped.data(), rows, in, qopts, bytes, q.data());
    const DeltaFn delta = scaled_delta(q.data(), c.w, s, in);
    pool.parallel_for(0, idx(blocks), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
      std::vector<double> d(idx(kRowBlock * in)), prod(idx(kRowBlock * group));
      for (size_t b = b0; b < b1; ++b) {
        const int64_t r0 = static_cast<int64_t>(b) * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
        const int64_t nb = r1 - r0;
        delta(r0, r1, d.data());
        for (int64_t gi = 0; gi < groups; ++gi) {
          const int64_t g0 = gi * group, gl = std::min(group, in - g0);
          // prod = D_g · H_gg, D_g the group's columns of the block.
          cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, static_cast<blasint>(nb), static_cast<blasint>(gl),
                      1.0, h + g0 * in + g0, static_cast<blasint>(in), d.data() + g0, static_cast<blasint>(in), 0.0,
                      prod.data(), static_cast<blasint>(gl));
          for (int64_t r = 0; r < nb; ++r) {
            double e = 0;
            for (int64_t j = 0; j < gl; ++j) e += d[idx(r * in + g0 + j)] * prod[idx(r * gl + j)];
            const size_t at = idx((r0 + r) * groups + gi);
            if (e < best_err[at]) best_err[at] = e, best_k[at] = k;
          }
        }
      }
    });
  }
  // The chosen clamps; then each row keeps them only if its full error did not grow.
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t off = r * in + gi * group;
      clamp_group(c.scaled.data() + off, clamped.data() + off, std::min(group, in - gi * group),
                  best_k[idx(r * groups + gi)], o.clip_steps);
    }
  }
  round_trip(pool, format, clamped.data(), rows, in, qopts, bytes, q.data());
  std::vector<double> err(idx(rows));
  row_errors(pool, rows, in, h, scaled_delta(q.data(), c.w, s, in), err.data());
  bool reverted = false;
  for (int64_t r = 0; r < rows; ++r) {
    if (err[idx(r)] > c.row_err[idx(r)]) {
      std::copy_n(c.scaled.data() + r * in, in, clamped.data() + r * in);
      reverted = true;
    }
  }
  if (reverted) {
    // Re-measure the mix: formats with tensor-level state couple the rows.
    round_trip(pool, format, clamped.data(), rows, in, qopts, bytes, q.data());
    row_errors(pool, rows, in, h, scaled_delta(q.data(), c.w, s, in), err.data());
  }
  const double clipped = sum_in_order(err), unclipped = sum_in_order(c.row_err);
  if (clipped > unclipped) return unclipped;
  c.scaled.swap(clamped);
  c.row_err = std::move(err);
  return clipped;
}

}  // namespace

double hessian_weighted_error(const float* w, const float* reference, int64_t rows, int64_t in,
                              std::span<const double> hessian, ThreadPool& pool) {
  assert(hessian.size() == idx(in) * idx(in));
  std::vector<double> err(idx(rows));
  row_errors(pool, rows, in, hessian.data(),
             [&](int64_t r0, int64_t r1, double* d) {
               for (int64_t i = r0 * in; i < r1 * in; ++i) {
                 d[i - r0 * in] = static_cast<double>(w[i]) - static_cast<double>(reference[i]);
               }
             },
             err.data());
  return sum_in_order(err);
}

AwqResult awq_search(std::span<const Tensor* const> consumers, std::span<const float> mean_abs,
                     std::span<const double> hessian, const Format& format, const float* importance,
                     const AwqOptions& options, ThreadPool& pool) {
  validate(consumers, mean_abs, hessian, format, options);
  const auto in = static_cast<int64_t>(mean_abs.size());
  const double* h = hessian.data();

  std::vector<Consumer> cs(consumers.size());
  for (size_t k = 0; k < cs.size(); ++k) cs[k].w = consumers[k]->f32(), cs[k].rows = consumers[k]->dim(0);

  AwqResult result;
  std::vector<float> scaled_importance;
  const auto options_for = [&](const std::vector<float>& s) {
    if (importance != nullptr) {
      scaled_importance.resize(idx(in));
      for (int64_t j = 0; j < in; ++j) scaled_importance[idx(j)] = importance[j] / (s[idx(j)] * s[idx(j)]);
    }
    return QuantizeOptions{.tensor_name = options.tensor_name,
                           .importance = importance != nullptr ? scaled_importance.data() : nullptr,
                           .range = options.range};
  };

  // 1. Scale search over the α grid.
  double best = std::numeric_limits<double>::infinity();
  std::vector<float> scaled, q;
  std::vector<std::byte> bytes;
  std::vector<double> row_err;
  for (int i = 0; i < options.grid; ++i) {
    const double alpha = static_cast<double>(i) / options.grid;
    const std::vector<float> s = awq_scales(mean_abs, alpha);
    const QuantizeOptions qopts = options_for(s);
    double total = 0;
    for (size_t k = 0; k < cs.size(); ++k) {
      const int64_t rows = cs[k].rows;
      scaled.resize(idx(rows * in));
      q.resize(idx(rows * in));
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < in; ++j) scaled[idx(r * in + j)] = cs[k].w[r * in + j] * s[idx(j)];
      }
      round_trip(pool, format, scaled.data(), rows, in, qopts, bytes, q.data());
      row_err.resize(idx(rows));
      row_errors(pool, rows, in, h, scaled_delta(q.data(), cs[k].w, s, in), row_err.data());
      total += sum_in_order(row_err);
    }
    if (i == 0) result.error_rtn = total;
    if (total < best) {
      best = total;
      result.alpha = alpha;
      result.scales = s;
    }
  }
  result.error_scaled = best;

  // Recompute the chosen α's scaled weights and row errors (cheaper than keeping every α's).
  const QuantizeOptions qopts = options_for(result.scales);
  for (size_t k = 0; k < cs.size(); ++k) {
    const int64_t rows = cs[k].rows;
    cs[k].scaled.resize(idx(rows * in));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < in; ++j) cs[k].scaled[idx(r * in + j)] = cs[k].w[r * in + j] * result.scales[idx(j)];
    }
    q.resize(idx(rows * in));
    round_trip(pool, format, cs[k].scaled.data(), rows, in, qopts, bytes, q.data());
    cs[k].row_err.resize(idx(rows));
    row_errors(pool, rows, in, h, scaled_delta(q.data(), cs[k].w, result.scales, in), cs[k].row_err.data());
  }

  // 2. Clip search.
  result.error_clipped = best;
  if (options.clip) {
    double total = 0;
    for (auto& c : cs) total += clip_consumer(pool, format, c, in, result.scales, h, qopts, options);
    result.error_clipped = total;
  }

  for (auto& c : cs) {
    Tensor t = Tensor::zeros(DType::kF32, {c.rows, in});
    std::copy(c.scaled.begin(), c.scaled.end(), t.mutable_f32());
    result.weights.push_back(std::move(t));
  }
  if (importance != nullptr) result.importance = scaled_importance;
  return result;
}

}  // namespace calq::quant
