#include "formats/range.h"

#include <cassert>

namespace calq {
namespace {

float stored(float scale, const QuantGrid& g) { return g.store_scale != nullptr ? g.store_scale(scale) : scale; }

void min_max(std::span<const float> x, float& lo, float& hi) {
  lo = 0.0f;
  hi = 0.0f;
  for (float v : x) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
}

}  // namespace

QuantParams params_for_range(float lo, float hi, const QuantGrid& g) {
  assert(lo <= 0.0f && hi >= 0.0f && g.qmax > g.qmin);
  QuantParams p;
  if (g.symmetric) {
    p.scale = stored(std::max(-lo, hi) / static_cast<float>(g.qmax), g);
    return p;
  }
  p.scale = stored((hi - lo) / static_cast<float>(g.qmax - g.qmin), g);
  if (p.scale > 0.0f) {
    // The zero point puts lo on code qmin as nearly as an integer can.
    const float z = static_cast<float>(g.qmin) - std::nearbyint(lo / p.scale);
    p.zero_point = static_cast<int32_t>(std::clamp(z, static_cast<float>(g.qmin), static_cast<float>(g.qmax)));
  } else {
    p.zero_point = g.qmin;
  }
  return p;
}

double weighted_squared_error(const RangeInput& in, const QuantParams& p, const QuantGrid& g) {
  const float inv = inverse_scale(p);
  double sum = 0;
  for (size_t i = 0; i < in.x.size(); ++i) {
    const float y = dequantize_value(quantize_value(in.x[i], inv, p, g), p);
    const double d = static_cast<double>(in.x[i]) - y;
    const double w = in.weights != nullptr ? in.weights[i % in.weight_period] : 1.0;
    sum += w * d * d;
  }
  return sum;
}

QuantParams MinMaxRange::choose(const RangeInput& in, const QuantGrid& grid) const {
  float lo, hi;
  min_max(in.x, lo, hi);
  return params_for_range(lo, hi, grid);
}

QuantParams MseGridRange::choose(const RangeInput& in, const QuantGrid& grid) const {
  float lo, hi;
  min_max(in.x, lo, hi);
  QuantParams best = params_for_range(lo, hi, grid);
  if (lo == 0.0f && hi == 0.0f) return best;
  double best_err = weighted_squared_error(in, best, grid);
  for (int percent = 99; percent >= min_percent_; --percent) {
    const float r = static_cast<float>(percent) / 100.0f;
    const QuantParams p = params_for_range(lo * r, hi * r, grid);
    const double err = weighted_squared_error(in, p, grid);
    if (err < best_err) {
      best_err = err;
      best = p;
    }
  }
  return best;
}

const RangeChooser& min_max_range() {
  static const MinMaxRange r;
  return r;
}

const RangeChooser& mse_grid_range() {
  static const MseGridRange r;
  return r;
}

}  // namespace calq
