// Activation-statistics drift between two calibration runs of the same model: does calibration
// set A exercise the model like evaluation text B does? (`calq calib-check`, `calq bisect
// --calib-check`.) Quantization chooses ranges and importances from A; if B's activations differ,
// those choices are tuned for the wrong inputs.
//
// Per input site (layer, attn_in/attn_out/mlp_in/mlp_down, and the head's input) and channel c,
// the symmetric relative difference d(a, b) = |a − b| / max(|a|, |b|) (0 when both are 0), in
// [0, 1], of
//  * absmax: per-channel max |x| — sensitive to rare outliers and to the sample count;
//  * mean_abs: per-channel mean |x| — the typical magnitude, the steadier of the two.
// Each site reports the median and the maximum over channels of both. The set's score is the
// mean over sites of the per-site median mean_abs drift; the report is flagged when it exceeds
// `threshold`, and each site whose median mean_abs drift exceeds it is flagged too.
//
// Contract: both stats must hold absmax and mean_abs for the same sites with the same widths
// (Error kInvalidArgument naming the first site that differs); sites with zero rows are an Error.
#pragma once

#include <cstdint>
#include <vector>

#include "calib/collectors.h"

namespace calq::calib {

struct SiteDrift {
  int64_t layer = 0;  // -1: the head's input
  InputSite site = InputSite::kAttnIn;
  int64_t cols = 0;
  double absmax_median = 0, absmax_max = 0;
  double mean_abs_median = 0, mean_abs_max = 0;
  int64_t worst_channel = 0;  // argmax of the mean_abs drift
  bool flagged = false;
};

struct DriftReport {
  std::vector<SiteDrift> sites;  // in CalibrationStats::sites() order
  double score = 0;              // mean over sites of mean_abs_median
  double absmax_score = 0;       // mean over sites of absmax_median
  double threshold = 0;
  bool flagged = false;
};

// 0.15: on the reference model with 8 windows of 256 tokens per text, two halves of calib.txt
// score 0.062, calib.txt against heldout.txt 0.066, against a text of numbers 0.263
// (calq_cli_diag_test); more windows lower the same-distribution scores further.
inline constexpr double kDefaultDriftThreshold = 0.15;

struct DriftOptions {
  double threshold = kDefaultDriftThreshold;
};

// Relative difference |a − b| / max(|a|, |b|), 0 when both are 0.
double relative_drift(double a, double b);

DriftReport compare_activation_stats(const CalibrationStats& a, const CalibrationStats& b, const DriftOptions& options);

}  // namespace calq::calib
