// RangeChooser — how an integer format picks the scale and zero point of one group of values
// (a group of 32..256 weights, a row, or a whole tensor).
//
// Contract:
//  * The grid is integer codes q in [qmin, qmax]; a value decodes as x̂ = scale · (q − zero_point).
//    Symmetric grids have qmin = −qmax and zero_point 0; asymmetric grids have qmin = 0.
//  * The scale a chooser returns is already rounded the way the format stores it
//    (grid.store_scale: fp16 or fp32), and the zero point is an integer in [qmin, qmax], so the
//    error a chooser measures is the error the stored tensor will have.
//  * choose() is deterministic and single-threaded: the same input gives the same parameters.
//  * Element i of `x` has weight weights[i % weight_period] (the caller passes the importance of
//    the columns the elements sit in), or 1 when weights is nullptr. Min-max ignores weights.
// The calibration layer adds further choosers (percentile, KL) through this interface.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace calq {

struct QuantGrid {
  int32_t qmin = 0;
  int32_t qmax = 0;
  bool symmetric = true;
  float (*store_scale)(float) = nullptr;  // the scale as the format stores it; nullptr = fp32 as is
};

struct QuantParams {
  float scale = 0;  // as stored; 0 means the group decodes to zeros
  int32_t zero_point = 0;
};

struct RangeInput {
  std::span<const float> x;
  const float* weights = nullptr;  // nullptr or weights[i % weight_period] for element i
  size_t weight_period = 1;
};

class RangeChooser {
 public:
  virtual ~RangeChooser() = default;
  virtual std::string_view name() const = 0;
  virtual QuantParams choose(const RangeInput& in, const QuantGrid& grid) const = 0;
};

// ---- The shared arithmetic (formats and choosers use exactly these, so errors match) ----

// Parameters whose grid covers the clip range [lo, hi] (lo <= 0 <= hi; symmetric grids use
// max(|lo|, |hi|)). The scale is rounded as stored; the zero point is rounded to nearest.
QuantParams params_for_range(float lo, float hi, const QuantGrid& grid);

// 1/scale, or 0 for a zero scale (every value then encodes to the zero point).
inline float inverse_scale(const QuantParams& p) { return p.scale == 0.0f ? 0.0f : 1.0f / p.scale; }

// Code of x: nearest (ties to even) of x·inv + zero_point, clamped to the grid.
inline int32_t quantize_value(float x, float inv, const QuantParams& p, const QuantGrid& g) {
  const float q = std::nearbyint(x * inv) + static_cast<float>(p.zero_point);
  return static_cast<int32_t>(std::clamp(q, static_cast<float>(g.qmin), static_cast<float>(g.qmax)));
}

inline float dequantize_value(int32_t q, const QuantParams& p) {
  return p.scale * static_cast<float>(q - p.zero_point);
}

// Σ w·(x − x̂)² of the input under params (double, in element order).
double weighted_squared_error(const RangeInput& in, const QuantParams& p, const QuantGrid& g);

// ---- Choosers ----

// The full range: [min(x, 0), max(x, 0)] (asymmetric) or max|x| (symmetric). The default.
class MinMaxRange final : public RangeChooser {
 public:
  std::string_view name() const override { return "minmax"; }
  QuantParams choose(const RangeInput& in, const QuantGrid& grid) const override;
};

// Clips the min-max range by ratios 1.00, 0.99, ..., min_ratio (exact hundredths) and keeps the
// one with the least Σ w·(x − x̂)² under the stored scale; ties keep the larger ratio, so it never
// does worse than min-max on its own objective.
class MseGridRange final : public RangeChooser {
 public:
  explicit MseGridRange(int min_ratio_percent = 50) : min_percent_(min_ratio_percent) {}
  std::string_view name() const override { return "mse"; }
  QuantParams choose(const RangeInput& in, const QuantGrid& grid) const override;

 private:
  int min_percent_;
};

const RangeChooser& min_max_range();
const RangeChooser& mse_grid_range();

}  // namespace calq
