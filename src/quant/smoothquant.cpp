#include "quant/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace calq::quant {

std::vector<float> smoothquant_scales(std::span<const Tensor* const> consumers, std::span<const float> absmax,
                                      double alpha, std::string_view tensor_name) {
  constexpr double kMinScale = 1e-5, kMaxScale = 1e5;
  const auto in = static_cast<int64_t>(absmax.size());
  if (!(alpha >= 0.0 && alpha <= 1.0)) {
    fail(ErrorKind::kInvalidArgument, "{}: SmoothQuant alpha {} is outside [0, 1]", tensor_name, alpha);
  }
  if (consumers.empty()) fail(ErrorKind::kInvalidArgument, "{}: SmoothQuant needs at least one weight", tensor_name);
  for (size_t j = 0; j < absmax.size(); ++j) {
    if (!std::isfinite(absmax[j]) || absmax[j] < 0.0f) {
      fail(ErrorKind::kInvalidArgument, "{}: SmoothQuant activation absmax of column {} is {} (must be finite, >= 0)",
           tensor_name, j, absmax[j]);
    }
  }
  // Column maxima over every consumer's rows.
  std::vector<float> wmax(absmax.size(), 0.0f);
  for (size_t k = 0; k < consumers.size(); ++k) {
    const Tensor* t = consumers[k];
    if (t == nullptr || t->dtype() != DType::kF32 || t->rank() != 2 || t->dim(1) != in) {
      fail(ErrorKind::kInvalidArgument, "{}: SmoothQuant weight {} must be float32 [rows, {}] (it is {})",
           tensor_name, k, in, t == nullptr ? std::string("null") : shape_string(t->shape()));
    }
    const float* w = t->f32();
    for (int64_t r = 0; r < t->dim(0); ++r) {
      for (int64_t j = 0; j < in; ++j) {
        const float v = std::abs(w[r * in + j]);
        if (!std::isfinite(v)) {
          fail(ErrorKind::kInvalidArgument, "{}: SmoothQuant weight {} has a non-finite value at [{}, {}]",
               tensor_name, k, r, j);
        }
        wmax[static_cast<size_t>(j)] = std::max(wmax[static_cast<size_t>(j)], v);
      }
    }
  }
  std::vector<float> s(absmax.size(), 1.0f);
  for (size_t j = 0; j < s.size(); ++j) {
    if (absmax[j] == 0.0f || wmax[j] == 0.0f) continue;  // nothing to balance: leave the channel alone
    const double v = std::pow(static_cast<double>(absmax[j]), alpha) /
                     std::pow(static_cast<double>(wmax[j]), 1.0 - alpha);
    s[j] = static_cast<float>(std::clamp(v, kMinScale, kMaxScale));
  }
  return s;
}

}  // namespace calq::quant
