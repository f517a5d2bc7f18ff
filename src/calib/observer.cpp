#include "calib/observer.h"

#include "core/error.h"

namespace calq::calib {
namespace {

using Factory = std::unique_ptr<Observer> (*)(const ObserverOptions&);

struct Entry {
  std::string_view name;
  Factory make;
};

constexpr Entry kObservers[] = {
    {"minmax", make_minmax_observer},
    {"percentile", make_percentile_observer},
    {"kl", make_kl_observer},
    {"mse", make_mse_observer},
};

void check_options(const ObserverOptions& o) {
  if (!(o.percentile > 0.0 && o.percentile <= 100.0)) {
    fail(ErrorKind::kInvalidArgument, "observer option percentile = {}: must be in (0, 100]", o.percentile);
  }
  if (o.kl_bins < 16 || o.kl_bins > 65536) {
    fail(ErrorKind::kInvalidArgument, "observer option kl_bins = {}: must be in [16, 65536]", o.kl_bins);
  }
  if (o.mse_min_ratio_percent < 1 || o.mse_min_ratio_percent > 100) {
    fail(ErrorKind::kInvalidArgument, "observer option mse_min_ratio_percent = {}: must be in [1, 100]",
         o.mse_min_ratio_percent);
  }
}

}  // namespace

std::unique_ptr<Observer> make_observer(std::string_view name, const ObserverOptions& options) {
  for (const Entry& e : kObservers) {
    if (e.name == name) {
      check_options(options);
      return e.make(options);
    }
  }
  std::string known;
  for (const Entry& e : kObservers) {
    if (!known.empty()) known += ", ";
    known += e.name;
  }
  fail(ErrorKind::kInvalidArgument, "unknown observer '{}' (valid: {})", name, known);
}

std::vector<std::string> observer_names() {
  std::vector<std::string> names;
  for (const Entry& e : kObservers) names.emplace_back(e.name);
  return names;
}

double histogram_max_edge(const AbsHistogram& hist) {
  const auto& c = hist.counts();
  int64_t h = AbsHistogram::kBins - 1;
  while (h >= 0 && c[static_cast<size_t>(h)] == 0) --h;
  if (h < 0) return 0.0;  // empty
  // Only bin 0 at the smallest range: every value is below 2^kMinExp / kBins, i.e. zero for any
  // purpose a clip range serves.
  if (h == 0 && hist.exp() == AbsHistogram::kMinExp) return 0.0;
  return static_cast<double>(h + 1) * hist.bin_width();
}

int grid_levels(const QuantGrid& grid) { return grid.symmetric ? grid.qmax : (grid.qmax - grid.qmin) / 2; }

}  // namespace calq::calib
