// Outlier statistics of one weight matrix W[out, in] (row-major, float32), and of every linear
// weight of a model.
//
// What is computed (all moments in double, population form, i.e. divided by n):
//  * min, max, absmax, mean, std;
//  * excess kurtosis m4 / m2^2 - 3 (Fisher: 0 for a Gaussian, -1.2 for a uniform, 3 for a
//    Laplace distribution); 0 when std is 0;
//  * the count and share of weights with |w - mean| > sigma_threshold * std (default 6: a Gaussian
//    puts 2e-9 of its mass there, so any visible share is heavy tail);
//  * per input channel (column j of W, the weights that multiply activation channel j) the max
//    |w|, and the outlier channels: those whose max |w| exceeds outlier_channel_factor times the
//    median of the channel maxima.
//
// Why the default factor is 2: for i.i.d. Gaussian weights the max |w| of a column of n rows
// concentrates tightly around its median (about 2.8 sigma for n = 128, 3.2 for n = 512, 4.1 for
// n = 16384), so 2x the median is 5.6 to 8.2 sigma, a level a Gaussian matrix of these sizes
// reaches with probability well under 1% (P(|z| > 5.6) is 3e-8 per weight). A flagged channel
// therefore has a weight at least twice as large as the typical channel's largest: a heavy tail
// concentrated in that input channel, the kind that stretches a quantization scale and that
// outlier-aware methods (AWQ scaling, mixed precision) target.
//
// Contract: mean and moments are computed in two passes (mean first, then centred sums), with
// per-row partial sums added in row order, so results are bitwise identical for any thread count.
// Non-finite weights are an ErrorKind::kInvalidArgument error (the loaders already refuse them).
#pragma once

#include <cstdint>
#include <vector>

#include "calib/channel_summary.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::calib {

struct WeightStatsOptions {
  double sigma_threshold = 6.0;
  double outlier_channel_factor = 2.0;
  size_t top_channels = 8;
};

struct WeightStats {
  int64_t rows = 0;  // out features
  int64_t cols = 0;  // in features (channels)
  double min = 0.0;
  double max = 0.0;
  double absmax = 0.0;
  double mean = 0.0;
  double std = 0.0;
  double excess_kurtosis = 0.0;
  int64_t beyond_sigma_count = 0;  // |w - mean| > sigma_threshold * std
  double beyond_sigma_share = 0.0;
  std::vector<float> channel_absmax;  // [cols]
  ChannelSummary channels;            // summary of channel_absmax
  std::vector<int64_t> outlier_channels;  // ascending; channel_absmax > factor * median
};

WeightStats weight_stats(const float* w, int64_t rows, int64_t cols, const WeightStatsOptions& options,
                         ThreadPool& pool);
// `w` must be a 2-D F32 tensor (asserted).
WeightStats weight_stats(const Tensor& w, const WeightStatsOptions& options, ThreadPool& pool);

// The statistics of one weight of a model.
struct ModelWeightStats {
  int64_t layer = -1;  // -1 for global tensors
  model::TensorRole role;
  bool tied = false;   // the output head shares the embedding's bytes (reported once, as kOutput)
  WeightStats stats;
};

// Every linear weight of every layer in layer order (q, k, v, o, gate, up, down as the layer
// holds them), then the output head; then the token embedding when it is not tied (a tied
// embedding is the output head and appears once, with tied = true).
std::vector<ModelWeightStats> model_weight_stats(const model::Model& model, const WeightStatsOptions& options,
                                                 ThreadPool& pool);

}  // namespace calq::calib
