// The MSE observer: the clip range that minimises the squared quantization error, searched over
// clip ratios 1.00, 0.99, ..., mse_min_ratio_percent/100 of the min-max range (exact hundredths);
// ties keep the larger ratio, so it never does worse than min-max on its own objective.
//  * Weights: formats' MseGridRange (range.h) — Σ w·(x − x̂)² under the stored scale, importance
//    weights included.
//  * Activations: the expected squared error over the |x| histogram, each bin's values taken at its
//    center: Σ_k count_k · (v_k − s·min(round(v_k / s), levels))², v_k = (k + ½)·bin_width,
//    s = T / levels, round to nearest even; T = ratio × the histogram's max edge. T is returned as
//    is (not rounded to a storage precision; the caller stores its activation scale its own way).
#include <algorithm>
#include <cassert>
#include <cmath>

#include "calib/observer.h"

namespace calq::calib {
namespace {

// Expected Σ count·(v − x̂)² over the histogram for threshold t (> 0) and `levels` positive levels.
double histogram_squared_error(const AbsHistogram& hist, int64_t top_bin, double t, int levels) {
  const double s = t / levels;
  const double inv = 1.0 / s;
  const double w = hist.bin_width();
  const auto& c = hist.counts();
  double sum = 0;
  for (int64_t k = 0; k <= top_bin; ++k) {
    const int64_t n = c[static_cast<size_t>(k)];
    if (n == 0) continue;
    const double v = (static_cast<double>(k) + 0.5) * w;
    const double q = std::min(std::nearbyint(v * inv), static_cast<double>(levels));
    const double d = v - s * q;
    sum += static_cast<double>(n) * d * d;
  }
  return sum;
}

class MseObserver final : public Observer {
 public:
  explicit MseObserver(int min_percent) : min_percent_(min_percent), range_(min_percent) {}
  std::string_view name() const override { return "mse"; }
  const RangeChooser& weight_range() const override { return range_; }

  double activation_clip(const AbsHistogram& hist, int levels) const override {
    assert(levels >= 1);
    const double max_edge = histogram_max_edge(hist);
    if (max_edge == 0.0) return 0.0;
    const auto top_bin = static_cast<int64_t>(std::llround(max_edge / hist.bin_width())) - 1;
    double best_t = max_edge;
    double best_err = histogram_squared_error(hist, top_bin, max_edge, levels);
    for (int percent = 99; percent >= min_percent_; --percent) {
      const double t = max_edge * percent / 100.0;
      const double err = histogram_squared_error(hist, top_bin, t, levels);
      if (err < best_err) {
        best_err = err;
        best_t = t;
      }
    }
    return best_t;
  }

 private:
  int min_percent_;
  MseGridRange range_;
};

}  // namespace

std::unique_ptr<Observer> make_mse_observer(const ObserverOptions& options) {
  return std::make_unique<MseObserver>(options.mse_min_ratio_percent);
}

}  // namespace calq::calib
