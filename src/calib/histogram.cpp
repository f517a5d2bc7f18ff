#include "calib/histogram.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace calq::calib {
namespace {

// The smallest exp >= kMinExp with a < 2^exp (a finite, >= 0).
int exp_for(float a) {
  if (a == 0.0f) return AbsHistogram::kMinExp;
  int e = 0;
  std::frexp(a, &e);  // a = m · 2^e with m in [0.5, 1): 2^(e-1) <= a < 2^e
  return std::max(e, AbsHistogram::kMinExp);
}

}  // namespace

AbsHistogram::AbsHistogram() : counts_(kBins, 0) {}

double AbsHistogram::range() const { return std::ldexp(1.0, exp_); }
double AbsHistogram::bin_width() const { return std::ldexp(1.0, exp_ - kLog2Bins); }

void AbsHistogram::grow_to(int new_exp) {
  assert(new_exp >= exp_ && new_exp <= kMaxExp);
  const int shift = new_exp - exp_;
  if (shift == 0) return;
  exp_ = new_exp;
  if (shift >= kLog2Bins) {  // everything now lies in the first bin
    counts_.assign(kBins, 0);
    counts_[0] = total_;
    return;
  }
  // Old bin i becomes bin i >> shift, since floor(floor(y) / 2^s) == floor(y / 2^s).
  std::vector<int64_t> merged(kBins, 0);
  for (int64_t i = 0; i < kBins; ++i) merged[static_cast<size_t>(i >> shift)] += counts_[static_cast<size_t>(i)];
  counts_ = std::move(merged);
}

void AbsHistogram::add(std::span<const float> values) {
  if (values.empty()) return;
  float peak = 0.0f;
  for (const float v : values) {
    assert(std::isfinite(v));
    peak = std::max(peak, std::fabs(v));
  }
  const int need = exp_for(peak);
  if (need > exp_) grow_to(need);
  // The scale is a power of two in float's normal range (2^51 .. 2^-117), so |x| · scale is exact
  // unless it lands in the subnormal range, where it is below 1 and the bin is 0 either way.
  // Since |x| < 2^exp, the product is < kBins.
  const float scale = std::ldexp(1.0f, kLog2Bins - exp_);
  int64_t* counts = counts_.data();
  for (const float v : values) {
    const auto bin = static_cast<int32_t>(std::fabs(v) * scale);
    assert(bin >= 0 && bin < kBins);
    ++counts[bin];
  }
  total_ += static_cast<int64_t>(values.size());
}

void AbsHistogram::merge(const AbsHistogram& other) {
  if (other.exp_ > exp_) grow_to(other.exp_);
  const int shift = exp_ - other.exp_;
  if (shift >= kLog2Bins) {
    counts_[0] += other.total_;
  } else {
    for (int64_t i = 0; i < kBins; ++i) {
      counts_[static_cast<size_t>(i >> shift)] += other.counts_[static_cast<size_t>(i)];
    }
  }
  total_ += other.total_;
}

AbsHistogram AbsHistogram::from_counts(int exp, std::span<const int64_t> counts) {
  assert(exp >= kMinExp && exp <= kMaxExp);
  assert(static_cast<int64_t>(counts.size()) == kBins);
  AbsHistogram h;
  h.exp_ = exp;
  for (size_t i = 0; i < counts.size(); ++i) {
    assert(counts[i] >= 0);
    h.counts_[i] = counts[i];
    h.total_ += counts[i];
  }
  return h;
}

}  // namespace calq::calib
