#include "calib/channel_summary.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace calq::calib {
namespace {

TEST(ChannelSummary, MedianOddAndEven) {
  const std::vector<double> odd = {5, 1, 3};
  EXPECT_EQ(median_of(odd), 3.0);
  const std::vector<double> even = {4, 1, 3, 2};
  EXPECT_EQ(median_of(even), 2.5);
  EXPECT_EQ(median_of(std::vector<double>{}), 0.0);
}

TEST(ChannelSummary, TopChannelsDescendingTiesToLowerIndex) {
  const std::vector<float> v = {1.0f, 4.0f, 2.0f, 4.0f, 0.5f, 1.0f};
  const ChannelSummary s = summarize_channels(std::span<const float>(v), 3);
  EXPECT_EQ(s.count, 6);
  EXPECT_EQ(s.max, 4.0);
  EXPECT_EQ(s.argmax, 1);
  EXPECT_EQ(s.median, 1.5);  // sorted 0.5 1 1 2 4 4
  EXPECT_DOUBLE_EQ(s.max_over_median, 4.0 / 1.5);
  ASSERT_EQ(s.top.size(), 3u);
  EXPECT_EQ(s.top[0].channel, 1);
  EXPECT_EQ(s.top[1].channel, 3);
  EXPECT_EQ(s.top[2].channel, 2);
  EXPECT_EQ(s.top[2].value, 2.0);
}

TEST(ChannelSummary, ZeroMedian) {
  const std::vector<float> zeros = {0, 0, 0};
  EXPECT_EQ(summarize_channels(std::span<const float>(zeros), 2).max_over_median, 1.0);
  const std::vector<float> spike = {0, 0, 3};
  EXPECT_TRUE(std::isinf(summarize_channels(std::span<const float>(spike), 2).max_over_median));
}

TEST(ChannelSummary, ChannelsAboveIsStrict) {
  const std::vector<float> v = {6.0f, 6.5f, 1.0f, 7.0f};
  EXPECT_EQ(channels_above(v, 6.0), (std::vector<int64_t>{1, 3}));
}

}  // namespace
}  // namespace calq::calib
