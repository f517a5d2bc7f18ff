#include "calib/weight_stats.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "core/error.h"

namespace calq::calib {
namespace {

// Enough work per chunk that scheduling overhead stays small for narrow matrices.
Grain row_grain(int64_t cols) { return Grain{.min_items = static_cast<size_t>(std::max<int64_t>(1, 16384 / cols))}; }

}  // namespace

WeightStats weight_stats(const float* w, int64_t rows, int64_t cols, const WeightStatsOptions& options,
                         ThreadPool& pool) {
  assert(rows > 0 && cols > 0);
  WeightStats s;
  s.rows = rows;
  s.cols = cols;
  const auto n_rows = static_cast<size_t>(rows);
  const auto n = static_cast<double>(rows) * static_cast<double>(cols);

  // Pass 1: per-row sum, min, max (and a non-finite check). Row partials are combined in row order
  // below, so the totals do not depend on how rows were split over threads.
  std::vector<double> row_sum(n_rows), row_a(n_rows), row_b(n_rows);
  std::vector<float> row_min(n_rows), row_max(n_rows);
  std::vector<unsigned char> row_bad(n_rows, 0);
  pool.parallel_for(0, n_rows, row_grain(cols), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* x = w + static_cast<int64_t>(r) * cols;
      double sum = 0.0;
      float lo = x[0], hi = x[0];
      bool bad = false;
      for (int64_t c = 0; c < cols; ++c) {
        bad |= !std::isfinite(x[c]);
        sum += static_cast<double>(x[c]);
        lo = std::min(lo, x[c]);
        hi = std::max(hi, x[c]);
      }
      row_sum[r] = sum;
      row_min[r] = lo;
      row_max[r] = hi;
      row_bad[r] = bad ? 1 : 0;
    }
  });
  double total = 0.0;
  s.min = row_min[0];
  s.max = row_max[0];
  for (size_t r = 0; r < n_rows; ++r) {
    if (row_bad[r] != 0) fail(ErrorKind::kInvalidArgument, "weight row {} holds a non-finite value", r);
    total += row_sum[r];
    s.min = std::min(s.min, static_cast<double>(row_min[r]));
    s.max = std::max(s.max, static_cast<double>(row_max[r]));
  }
  s.absmax = std::max(std::abs(s.min), std::abs(s.max));
  s.mean = total / n;

  // Pass 2: centred second and fourth moments.
  const double mean = s.mean;
  pool.parallel_for(0, n_rows, row_grain(cols), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* x = w + static_cast<int64_t>(r) * cols;
      double m2 = 0.0, m4 = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        const double d = static_cast<double>(x[c]) - mean;
        const double d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
      }
      row_a[r] = m2;
      row_b[r] = m4;
    }
  });
  double m2 = 0.0, m4 = 0.0;
  for (size_t r = 0; r < n_rows; ++r) {
    m2 += row_a[r];
    m4 += row_b[r];
  }
  m2 /= n;
  m4 /= n;
  s.std = std::sqrt(m2);
  s.excess_kurtosis = m2 > 0.0 ? m4 / (m2 * m2) - 3.0 : 0.0;

  // Pass 3: the tail beyond sigma_threshold standard deviations (none when std is 0).
  const double limit = options.sigma_threshold * s.std;
  pool.parallel_for(0, n_rows, row_grain(cols), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* x = w + static_cast<int64_t>(r) * cols;
      int64_t count = 0;
      for (int64_t c = 0; c < cols; ++c) count += std::abs(static_cast<double>(x[c]) - mean) > limit ? 1 : 0;
      row_a[r] = static_cast<double>(count);
    }
  });
  for (size_t r = 0; r < n_rows; ++r) s.beyond_sigma_count += static_cast<int64_t>(row_a[r]);
  s.beyond_sigma_share = static_cast<double>(s.beyond_sigma_count) / n;

  // Per input channel max |w|: threads own disjoint column ranges and max is exact, so any split
  // gives the same bits.
  s.channel_absmax.assign(static_cast<size_t>(cols), 0.0f);
  pool.parallel_for(0, static_cast<size_t>(cols), Grain{.min_items = 64}, [&](size_t c0, size_t c1) {
    float* out = s.channel_absmax.data();
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = w + r * cols;
      for (size_t c = c0; c < c1; ++c) out[c] = std::max(out[c], std::abs(x[c]));
    }
  });
  s.channels = summarize_channels(std::span<const float>(s.channel_absmax), options.top_channels);
  s.outlier_channels = channels_above(s.channel_absmax, options.outlier_channel_factor * s.channels.median);
  return s;
}

WeightStats weight_stats(const Tensor& w, const WeightStatsOptions& options, ThreadPool& pool) {
  assert(w.rank() == 2 && w.dtype() == DType::kF32);
  return weight_stats(w.f32(), w.dim(0), w.dim(1), options, pool);
}

std::vector<ModelWeightStats> model_weight_stats(const model::Model& model, const WeightStatsOptions& options,
                                                 ThreadPool& pool) {
  using model::TensorRole;
  std::vector<ModelWeightStats> out;
  // A quantized weight is described as it computes: its dequantized values.
  const auto add = [&](int64_t layer, TensorRole role, const model::LinearWeight& w, bool tied) {
    try {
      out.push_back({.layer = layer, .role = role, .tied = tied, .stats = weight_stats(w.to_dense(pool), options, pool)});
    } catch (const Error& e) {
      fail(e.kind(), "{}: layer {} {}: {}", model.source.string(), layer, model::role_name(role), e.what());
    }
  };
  for (size_t l = 0; l < model.layers.size(); ++l) {
    for (size_t r = 0; r < model::kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (!model::is_linear(role) || !model::is_per_layer(role) || !model::has_role(model.config, role)) continue;
      add(static_cast<int64_t>(l), role, model.layers[l].linear(role), false);
    }
  }
  const bool tied = model.output.same_storage(model.embedding);
  add(-1, TensorRole::kOutput, model.output, tied);
  if (!tied) add(-1, TensorRole::kTokenEmbedding, model.embedding, false);
  return out;
}

}  // namespace calq::calib
