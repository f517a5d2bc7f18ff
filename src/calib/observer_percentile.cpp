// The percentile observer: clips at the p-th percentile (ObserverOptions::percentile, default
// 99.99) instead of the extreme value.
//
// Order statistic (exact and deterministic): the nearest-rank percentile. Of n values sorted
// ascending, the p-th percentile is the k-th smallest (1-based) with k = ⌈p·n/100⌉ clamped to
// [1, n]; p·n/100 is evaluated in double and reduced by a relative 1e-12 before the ceiling, so a
// decimal p whose exact p·n/100 is an integer is not pushed one rank up by representation error.
// So the 99.99th percentile of 1..1000 is 1000 and the 50th is 500; for groups of 32..256 values
// any p > 100·(n−1)/n (99.99 included) gives the maximum, i.e. min-max.
//
//  * Weights, symmetric grids: T = the p-th percentile of |x|; range [−T, T].
//  * Weights, asymmetric grids: lo = the (100 − p)-th percentile of x, hi = the p-th percentile of
//    x, widened to keep lo ≤ 0 ≤ hi; parameters via params_for_range. Importance weights are ignored.
//  * Activations: T = the upper edge of the first histogram bin at which the cumulative count
//    reaches ⌈p·total/100⌉ (same rank rule), so T ≥ the p-th percentile of |x| and T ≤ the max edge.
#include <algorithm>
#include <cmath>
#include <vector>

#include "calib/observer.h"

namespace calq::calib {
namespace {

// 1-based nearest rank of percentile p among n values.
int64_t nearest_rank(double p, int64_t n) {
  const double r = p * static_cast<double>(n) / 100.0;
  const auto k = static_cast<int64_t>(std::ceil(r * (1.0 - 1e-12)));
  return std::clamp<int64_t>(k, 1, n);
}

class PercentileRange final : public RangeChooser {
 public:
  explicit PercentileRange(double p) : p_(p) {}
  std::string_view name() const override { return "percentile"; }

  QuantParams choose(const RangeInput& in, const QuantGrid& grid) const override {
    const auto n = static_cast<int64_t>(in.x.size());
    if (n == 0) return params_for_range(0.0f, 0.0f, grid);
    // Scratch per thread: the formats call choose() from every pool thread, once per group.
    thread_local std::vector<float> v;
    v.resize(in.x.size());
    const int64_t k_hi = nearest_rank(p_, n) - 1;
    if (grid.symmetric) {
      for (size_t i = 0; i < in.x.size(); ++i) v[i] = std::fabs(in.x[i]);
      std::nth_element(v.begin(), v.begin() + k_hi, v.end());
      const float t = v[static_cast<size_t>(k_hi)];
      return params_for_range(-t, t, grid);
    }
    std::copy(in.x.begin(), in.x.end(), v.begin());
    const int64_t k_lo = nearest_rank(100.0 - p_, n) - 1;  // <= k_hi since 100 − p <= p for p >= 50
    std::nth_element(v.begin(), v.begin() + k_hi, v.end());
    const float hi = v[static_cast<size_t>(k_hi)];
    float lo = hi;
    if (k_lo < k_hi) {
      // Everything before k_hi is <= v[k_hi] now, so the k_lo-th smallest lies in [0, k_hi).
      std::nth_element(v.begin(), v.begin() + k_lo, v.begin() + k_hi);
      lo = v[static_cast<size_t>(k_lo)];
    } else if (k_lo > k_hi) {  // p < 50: the "low" rank is above the high one; search the rest
      std::nth_element(v.begin() + k_hi + 1, v.begin() + k_lo, v.end());
      lo = v[static_cast<size_t>(k_lo)];
    }
    return params_for_range(std::min(std::min(lo, hi), 0.0f), std::max(std::max(lo, hi), 0.0f), grid);
  }

 private:
  double p_;
};

class PercentileObserver final : public Observer {
 public:
  explicit PercentileObserver(double p) : p_(p), range_(p) {}
  std::string_view name() const override { return "percentile"; }
  const RangeChooser& weight_range() const override { return range_; }

  double activation_clip(const AbsHistogram& hist, int /*levels*/) const override {
    if (histogram_max_edge(hist) == 0.0) return 0.0;
    const int64_t need = nearest_rank(p_, hist.total());
    const auto& c = hist.counts();
    int64_t cum = 0;
    for (int64_t i = 0; i < AbsHistogram::kBins; ++i) {
      cum += c[static_cast<size_t>(i)];
      if (cum >= need) return static_cast<double>(i + 1) * hist.bin_width();
    }
    return histogram_max_edge(hist);  // unreachable: cum reaches total >= need
  }

 private:
  double p_;
  PercentileRange range_;
};

}  // namespace

std::unique_ptr<Observer> make_percentile_observer(const ObserverOptions& options) {
  return std::make_unique<PercentileObserver>(options.percentile);
}

}  // namespace calq::calib
