#include "calib/stats_drift.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace calq::calib {
namespace {

// Median of `v` (non-empty; reordered): the mean of the two middle values for an even count.
double median(std::vector<double>& v) {
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  const double hi = v[mid];
  if (v.size() % 2 == 1) return hi;
  const double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lo + hi);
}

}  // namespace

double relative_drift(double a, double b) {
  const double m = std::max(std::fabs(a), std::fabs(b));
  return m > 0 ? std::fabs(a - b) / m : 0.0;
}

DriftReport compare_activation_stats(const CalibrationStats& a, const CalibrationStats& b, const DriftOptions& o) {
  if (!(o.threshold > 0)) fail(ErrorKind::kInvalidArgument, "drift threshold must be > 0, got {}", o.threshold);
  for (const CalibrationStats* s : {&a, &b}) {
    if (!s->kinds().contains(StatKind::kAbsMax) || !s->kinds().contains(StatKind::kMeanAbs)) {
      fail(ErrorKind::kInvalidArgument, "calibration drift needs absmax and mean_abs statistics");
    }
  }
  if (a.sites() != b.sites()) {
    fail(ErrorKind::kInvalidArgument, "the two statistics describe different sites ({} vs {}): not the same model",
         a.site_count(), b.site_count());
  }
  DriftReport r{.threshold = o.threshold};
  for (const auto& [layer, site] : a.sites()) {
    const SiteStats& sa = *a.find(layer, site);
    const SiteStats& sb = *b.find(layer, site);
    if (sa.cols() != sb.cols()) {
      fail(ErrorKind::kInvalidArgument, "layer {} {}: {} vs {} channels", layer, site_name(site), sa.cols(), sb.cols());
    }
    if (sa.rows() == 0 || sb.rows() == 0) {
      fail(ErrorKind::kInvalidArgument, "layer {} {}: no activations observed", layer, site_name(site));
    }
    const std::vector<float> ma = sa.mean_abs(), mb = sb.mean_abs();
    std::vector<double> dmax(static_cast<size_t>(sa.cols())), dmean(dmax.size());
    SiteDrift d{.layer = layer, .site = site, .cols = sa.cols()};
    for (size_t c = 0; c < dmax.size(); ++c) {
      dmax[c] = relative_drift(sa.absmax()[c], sb.absmax()[c]);
      dmean[c] = relative_drift(ma[c], mb[c]);
      if (dmean[c] > d.mean_abs_max) {
        d.mean_abs_max = dmean[c];
        d.worst_channel = static_cast<int64_t>(c);
      }
      d.absmax_max = std::max(d.absmax_max, dmax[c]);
    }
    d.absmax_median = median(dmax);
    d.mean_abs_median = median(dmean);
    d.flagged = d.mean_abs_median > o.threshold;
    r.score += d.mean_abs_median;
    r.absmax_score += d.absmax_median;
    r.sites.push_back(d);
  }
  if (!r.sites.empty()) {
    r.score /= static_cast<double>(r.sites.size());
    r.absmax_score /= static_cast<double>(r.sites.size());
  }
  r.flagged = r.score > o.threshold;
  return r;
}

}  // namespace calq::calib
