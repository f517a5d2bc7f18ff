#include "calib/activation_stats.h"

#include <cassert>
#include <cmath>

namespace calq::calib {

ActivationAccumulator& ActivationObserver::slot(int64_t layer, model::TensorRole role, int64_t cols) {
  const auto key = std::make_pair(layer, static_cast<int>(role));
  const auto it = index_.find(key);
  if (it != index_.end()) {
    ActivationAccumulator& a = inputs_[it->second];
    assert(a.cols == cols && "a linear input changed width");
    return a;
  }
  index_.emplace(key, inputs_.size());
  ActivationAccumulator& a = inputs_.emplace_back();
  a.layer = layer;
  a.role = role;
  a.cols = cols;
  a.absmax.assign(static_cast<size_t>(cols), 0.0f);
  a.sum_abs.assign(static_cast<size_t>(cols), 0.0);
  a.above.assign(static_cast<size_t>(cols), 0);
  return a;
}

void ActivationObserver::observe(const model::LinearInput& in) {
  ActivationAccumulator& a = slot(in.layer, in.role, in.cols);
  ++calls_;
  a.rows += in.rows;
  const auto thr = static_cast<float>(threshold_);
  float* mx = a.absmax.data();
  double* sum = a.sum_abs.data();
  int64_t* above = a.above.data();
  for (int64_t r = 0; r < in.rows; ++r) {
    const float* x = in.x + r * in.cols;
    for (int64_t c = 0; c < in.cols; ++c) {
      const float v = std::abs(x[c]);
      mx[c] = std::max(mx[c], v);
      sum[c] += static_cast<double>(v);
      above[c] += v > thr ? 1 : 0;
    }
  }
}

model::LinearHook ActivationObserver::hook() {
  return [this](const model::LinearInput& in) { observe(in); };
}

void ActivationObserver::merge(const ActivationObserver& other) {
  assert(other.threshold_ == threshold_);
  calls_ += other.calls_;
  for (const ActivationAccumulator& o : other.inputs_) {
    ActivationAccumulator& a = slot(o.layer, o.role, o.cols);
    a.rows += o.rows;
    for (size_t c = 0; c < a.absmax.size(); ++c) {
      a.absmax[c] = std::max(a.absmax[c], o.absmax[c]);
      a.sum_abs[c] += o.sum_abs[c];
      a.above[c] += o.above[c];
    }
  }
}

ActivationStats summarize_activations(const ActivationObserver& observer, size_t top_channels) {
  ActivationStats out;
  out.threshold = observer.threshold();
  for (const ActivationAccumulator& a : observer.inputs()) {
    LinearInputStats s;
    s.layer = a.layer;
    s.role = a.role;
    s.cols = a.cols;
    s.rows = a.rows;
    s.channel_absmax = a.absmax;
    s.channel_above = a.above;
    s.channel_mean_abs.resize(a.sum_abs.size());
    double total_abs = 0.0;
    int64_t total_above = 0;
    for (size_t c = 0; c < a.sum_abs.size(); ++c) {
      s.channel_mean_abs[c] = a.rows > 0 ? a.sum_abs[c] / static_cast<double>(a.rows) : 0.0;
      total_abs += a.sum_abs[c];
      total_above += a.above[c];
    }
    const double n_values = static_cast<double>(a.rows) * static_cast<double>(a.cols);
    s.mean_abs = n_values > 0 ? total_abs / n_values : 0.0;
    s.values_above_share = n_values > 0 ? static_cast<double>(total_above) / n_values : 0.0;
    s.channels = summarize_channels(std::span<const float>(a.absmax), top_channels);
    s.channels_above_threshold = static_cast<int64_t>(channels_above(a.absmax, observer.threshold()).size());
    out.inputs.push_back(std::move(s));
  }
  return out;
}

}  // namespace calq::calib
