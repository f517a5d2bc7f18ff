// Range observers — how a clipping range is chosen, for weights and for activations.
//
// An Observer bundles two decisions made by the same rule:
//  * weight_range(): a formats/range.h RangeChooser; the integer formats call it once per group of
//    values (a group of 32..256 weights, a row, or a whole tensor). Its parameters obey the
//    RangeChooser contract (scale rounded as the grid stores it, integer zero point in the grid,
//    deterministic, thread-safe const calls — the formats call it from every pool thread).
//  * activation_clip(hist, levels): the symmetric clip threshold T for activations, from a running
//    histogram of |x| (calib/histogram.h), for a symmetric grid with `levels` positive levels
//    (127 for int8): values are meant to be quantized as round(x / (T / levels)) clamped to
//    ±levels. T is finite and > 0, except 0 when the histogram holds no value (total 0) or only
//    values in its first bin at the smallest range (|x| < 2^kMinExp / kBins, i.e. zeros).
//
// Observers ("minmax", "percentile", "kl", "mse"; one file each) are deterministic and single
// threaded; their outputs depend only on their inputs and options, never on thread count.
//
// Shared definitions used by several observers:
//  * The "max edge" of a histogram is the upper edge (h + 1) · bin_width of its highest nonzero
//    bin h: the histogram's bound on max|x| (the true max lies in [h·w, (h+1)·w)).
//  * For weights the number of positive levels of a grid is qmax for symmetric grids and
//    (qmax − qmin) / 2 (integer division) for asymmetric ones (grid_levels()).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "calib/histogram.h"
#include "formats/range.h"

namespace calq::calib {

struct ObserverOptions {
  double percentile = 99.99;       // percentile observer: p in (0, 100]
  int kl_bins = 2048;              // kl observer: histogram bins, in [16, 65536]
  int mse_min_ratio_percent = 50;  // mse observer: smallest clip ratio tried, in [1, 100] percent
};

class Observer {
 public:
  virtual ~Observer() = default;
  virtual std::string_view name() const = 0;  // "minmax", "percentile", "kl", "mse"
  // For weights (per tensor / per channel / per group: the int formats call it per group of values).
  // Lives as long as the observer.
  virtual const RangeChooser& weight_range() const = 0;
  // For activations: the symmetric clip threshold T (see the header comment). levels >= 1.
  virtual double activation_clip(const AbsHistogram& hist, int levels) const = 0;
};

// Unknown name: calq::Error kInvalidArgument listing the valid names. Options out of their ranges
// (see ObserverOptions): calq::Error kInvalidArgument naming the option.
std::unique_ptr<Observer> make_observer(std::string_view name, const ObserverOptions& options = {});
std::vector<std::string> observer_names();  // in registration order

// ---- Shared helpers (observer.cpp) ----

// Upper edge of the highest nonzero bin; 0 for an empty or all-zero histogram (as defined above).
double histogram_max_edge(const AbsHistogram& hist);
// The positive levels of a weight grid (see above); >= 1 for any grid with qmax > qmin.
int grid_levels(const QuantGrid& grid);

// ---- One factory per observer file (make_observer calls these; options already validated) ----
std::unique_ptr<Observer> make_minmax_observer(const ObserverOptions& options);      // observer_minmax.cpp
std::unique_ptr<Observer> make_percentile_observer(const ObserverOptions& options);  // observer_percentile.cpp
std::unique_ptr<Observer> make_kl_observer(const ObserverOptions& options);          // observer_kl.cpp
std::unique_ptr<Observer> make_mse_observer(const ObserverOptions& options);         // observer_mse.cpp

}  // namespace calq::calib
