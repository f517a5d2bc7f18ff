// Summaries of a per-channel statistic (one value per input channel of a linear layer): the
// largest channels, the median, and how far the largest stands above the median.
//
// Contract: pure functions of their input; ties in ranking go to the lower channel index, so the
// result is fully determined by the values. The median of an even count is the mean of the two
// middle values (computed in double). An empty input gives an all-zero summary.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace calq::calib {

struct ChannelValue {
  int64_t channel = 0;
  double value = 0.0;
};

struct ChannelSummary {
  int64_t count = 0;
  double max = 0.0;
  int64_t argmax = 0;  // lowest channel holding `max`
  double median = 0.0;
  // max / median; +infinity when the median is 0 and the max is not, 1 when both are 0.
  double max_over_median = 0.0;
  std::vector<ChannelValue> top;  // up to `top_k` largest, descending
};

ChannelSummary summarize_channels(std::span<const float> values, size_t top_k);
ChannelSummary summarize_channels(std::span<const double> values, size_t top_k);

// Median as defined above (values are copied; the input is not reordered).
double median_of(std::span<const double> values);

// Channels whose value is strictly greater than `threshold`, ascending by index.
std::vector<int64_t> channels_above(std::span<const float> values, double threshold);

}  // namespace calq::calib
