// The min-max observer: no clipping. Weights use formats' min_max_range() (the full range
// [min(x, 0), max(x, 0)], or max|x| on symmetric grids); activations clip at the histogram's max
// edge, the upper edge of its highest nonzero bin (a bound on max|x| within one bin width).
#include "calib/observer.h"

namespace calq::calib {
namespace {

class MinMaxObserver final : public Observer {
 public:
  std::string_view name() const override { return "minmax"; }
  const RangeChooser& weight_range() const override { return min_max_range(); }
  double activation_clip(const AbsHistogram& hist, int /*levels*/) const override { return histogram_max_edge(hist); }
};

}  // namespace

std::unique_ptr<Observer> make_minmax_observer(const ObserverOptions& /*options*/) {
  return std::make_unique<MinMaxObserver>();
}

}  // namespace calq::calib
