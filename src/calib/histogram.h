// AbsHistogram — a running histogram of |x| whose merges are exact and order-independent.
//
// Layout: kBins equal bins over [0, 2^exp). Bin i holds the values with
// floor(|x| · 2^(log2(kBins) − exp)) == i; the scaling is by a power of two, so the bin of a float
// is computed exactly. When a value ≥ 2^exp arrives, exp grows to the smallest power of two above
// it and existing bins are merged in groups of 2^(Δexp) (bin boundaries stay aligned, so a value's
// bin after growing equals the bin it would have had if the range had been that large from the
// start). Counts are integers: adding values in any order and merging histograms in any order give
// the same counts — bitwise reproducible statistics for any thread count.
//
// Used by the calibration collectors (running |x| histograms of every linear input) and by the
// range observers (percentile and KL-divergence clipping of activations and weights).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace calq::calib {

class AbsHistogram {
 public:
  static constexpr int64_t kBins = 2048;
  static constexpr int kLog2Bins = 11;
  // The smallest range exponent: values below 2^kMinExp / kBins all land in bin 0.
  static constexpr int kMinExp = -40;
  // The largest range exponent: every finite float is below 2^128.
  static constexpr int kMaxExp = 128;

  AbsHistogram();
  // Values must be finite (asserted: callers check activations first and report NaN/Inf as errors).
  void add(std::span<const float> values);
  // Adds `other`'s counts (rebinning the histogram with the smaller exp).
  void merge(const AbsHistogram& other);
  // Raises exp to `new_exp` (>= exp()), merging bins as described above.
  void grow_to(int new_exp);

  int exp() const { return exp_; }
  double range() const;      // 2^exp
  double bin_width() const;  // 2^exp / kBins
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t total() const { return total_; }
  // Rebuilds a histogram from stored counts (kBins of them, all >= 0) and exp; for the stats file.
  static AbsHistogram from_counts(int exp, std::span<const int64_t> counts);

  friend bool operator==(const AbsHistogram&, const AbsHistogram&) = default;

 private:
  int exp_ = kMinExp;
  int64_t total_ = 0;
  std::vector<int64_t> counts_;
};

}  // namespace calq::calib
