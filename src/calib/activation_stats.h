// Activation outlier statistics: an observer that, attached to the forward pass through a
// model::LinearHook, accumulates per input channel of every linear layer the max |x|, the mean |x|
// and how many values exceed a threshold (LLM.int8()'s 6.0 by default: Dettmers et al. 2022 keep
// feature dimensions with any |x| >= 6 in 16 bits).
//
// Contract:
//  * One accumulator per (layer, role) the hook reports, kept in the order first seen (forward
//    order: layer 0 q, k, v, o, gate, up, down, ..., then the output head with layer -1). Roles
//    that share an input (q/k/v, gate/up) get identical accumulators.
//  * observe() runs serially over the rows in row order (sums of |x| in double); merge() adds
//    another observer's accumulators. Merging per-window observers in window order therefore gives
//    the same bits whatever the thread count (max and integer counts are exact in any order).
//  * A (layer, role) reported again with a different width is a programming error (asserted).
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "calib/channel_summary.h"
#include "model/forward.h"

namespace calq::calib {

// LLM.int8()'s outlier threshold on activation magnitudes.
inline constexpr double kLlmInt8Threshold = 6.0;

struct ActivationAccumulator {
  int64_t layer = 0;
  model::TensorRole role = model::TensorRole::kAttnQ;
  int64_t cols = 0;
  int64_t rows = 0;                // rows (tokens) seen
  std::vector<float> absmax;       // [cols] max |x|
  std::vector<double> sum_abs;     // [cols] sum of |x|
  std::vector<int64_t> above;      // [cols] count of |x| > threshold
};

class ActivationObserver {
 public:
  explicit ActivationObserver(double threshold = kLlmInt8Threshold) : threshold_(threshold) {}

  void observe(const model::LinearInput& input);
  // A hook that calls observe(); the observer must outlive it and be used from one thread.
  model::LinearHook hook();
  // Adds `other` (same threshold, asserted) into this observer.
  void merge(const ActivationObserver& other);

  double threshold() const { return threshold_; }
  const std::vector<ActivationAccumulator>& inputs() const { return inputs_; }
  int64_t calls() const { return calls_; }  // hook calls seen (merged ones included)

 private:
  ActivationAccumulator& slot(int64_t layer, model::TensorRole role, int64_t cols);

  double threshold_;
  std::vector<ActivationAccumulator> inputs_;
  std::map<std::pair<int64_t, int>, size_t> index_;
  int64_t calls_ = 0;
};

// The report of one linear input.
struct LinearInputStats {
  int64_t layer = 0;
  model::TensorRole role = model::TensorRole::kAttnQ;
  int64_t cols = 0;
  int64_t rows = 0;
  std::vector<float> channel_absmax;
  std::vector<double> channel_mean_abs;
  std::vector<int64_t> channel_above;  // values above the threshold, per channel
  ChannelSummary channels;             // of channel_absmax: max, median, max/median, top channels
  int64_t channels_above_threshold = 0;  // channels whose absmax > threshold
  double values_above_share = 0.0;       // share of all values with |x| > threshold
  double mean_abs = 0.0;                 // over all values
};

struct ActivationStats {
  double threshold = kLlmInt8Threshold;
  std::vector<LinearInputStats> inputs;  // the observer's order
};

ActivationStats summarize_activations(const ActivationObserver& observer, size_t top_channels = 8);

}  // namespace calq::calib
