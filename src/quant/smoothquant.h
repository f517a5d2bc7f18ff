// SmoothQuant (Xiao et al. 2022) — migrates activation outliers into the weights with a per-input-
// channel scale, before both are quantized (W8A8-style schemes).
//
// For one group of linears sharing an input x (model/fold.h names the groups):
//   s_j = max|X_j|^α / max_k,i |W_k[i, j]|^(1−α)
// over all consumers W_k. Folding s (model/fold.h: fold_input_scales) multiplies the weights'
// column j by s_j and divides the activation by s_j, so with α = 0.5 the activation range and the
// weight column range become equal: max|X_j| / s_j = max_k,i |W_k[i, j]| · s_j.
// Guards: a channel whose activation absmax or weight column max is zero gets s = 1; every s is
// clamped to [1e-5, 1e5].
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace calq::quant {

// consumers: dense float32 [out_k, in], in == absmax.size(); absmax: per-input-column max|x| from
// calibration (finite, >= 0); alpha in [0, 1]. Errors (calq::Error naming tensor_name) on any
// other input.
std::vector<float> smoothquant_scales(std::span<const Tensor* const> consumers, std::span<const float> absmax,
                                      double alpha = 0.5, std::string_view tensor_name = "<tensor>");

}  // namespace calq::quant
