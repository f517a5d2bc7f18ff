#include "calib/channel_summary.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace calq::calib {

double median_of(std::span<const double> values) {
  if (values.empty()) return 0.0;
  std::vector<double> v(values.begin(), values.end());
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  const double upper = v[mid];
  if (v.size() % 2 == 1) return upper;
  // The lower middle value is the largest of the elements before `mid`.
  const double lower = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lower + upper);
}

ChannelSummary summarize_channels(std::span<const double> values, size_t top_k) {
  ChannelSummary s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  const auto by_value = [&](int64_t a, int64_t b) {
    const double va = values[static_cast<size_t>(a)], vb = values[static_cast<size_t>(b)];
    return va != vb ? va > vb : a < b;
  };
  const size_t k = std::min(top_k, values.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(std::max<size_t>(k, 1)), order.end(),
                    by_value);
  s.argmax = order[0];
  s.max = values[static_cast<size_t>(order[0])];
  for (size_t i = 0; i < k; ++i) s.top.push_back({order[i], values[static_cast<size_t>(order[i])]});
  s.median = median_of(values);
  if (s.median != 0.0) {
    s.max_over_median = s.max / s.median;
  } else {
    s.max_over_median = s.max == 0.0 ? 1.0 : std::numeric_limits<double>::infinity();
  }
  return s;
}

ChannelSummary summarize_channels(std::span<const float> values, size_t top_k) {
  const std::vector<double> wide(values.begin(), values.end());
  return summarize_channels(std::span<const double>(wide), top_k);
}

std::vector<int64_t> channels_above(std::span<const float> values, double threshold) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (static_cast<double>(values[i]) > threshold) out.push_back(static_cast<int64_t>(i));
  }
  return out;
}

}  // namespace calq::calib
