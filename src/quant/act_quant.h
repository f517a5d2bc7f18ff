// Activation quantization of a whole model: setting model::ActivationQuant (linear_weight.h) on
// its linear weights, static per-tensor int8 scales from calibration statistics, and the
// per-layer counters linear_nt keeps (LLM.int8() outlier-column share) for `calq eval`.
//
// Contract:
//  * static_int8_scale: scale = clip_ratio × max_c absmax[c] / 127 over the site's channels
//    (clip_ratio in (0, 1]); a site never seen non-zero, or statistics without absmax, is a
//    kInvalidArgument Error naming the layer and site.
//  * set_activation_quant sets the spec on every decoder-layer linear weight (q, k, v, o, gate, up,
//    down), and on the output head when options.include_head (LLM.int8() and SmoothQuant keep the
//    head in float, hence the default). kInt8PerTensor reads each weight's input site from `stats`
//    (q/k/v share one scale, as do gate/up); the statistics must describe the model as it is
//    multiplied (after any smoothing or rotation). Every touched weight gets fresh counters.
//    kNone clears the spec. Options are checked before any weight changes (kInvalidArgument).
//  * activation_quant_counts lists, in forward order (layer by layer, roles q k v o gate up down,
//    the head last as layer −1), every weight with activation quantization on and its counters.
#pragma once

#include <cstdint>
#include <vector>

#include "calib/collectors.h"
#include "model/architecture.h"
#include "model/linear_weight.h"
#include "model/model.h"

namespace calq::quant {

struct ActQuantOptions {
  model::ActivationQuant::Kind kind = model::ActivationQuant::Kind::kInt8PerToken;
  float threshold = 6.0f;     // kLlmInt8: the outlier threshold (LLM.int8()'s default 6)
  float clip_ratio = 1.0f;    // kInt8PerTensor: the clip as a fraction of the calibrated absmax;
                              // per-token kinds: the ActivationQuant clip, in (0, 1]
  bool include_head = false;  // also the output head
};

// The per-tensor scale of one input site (see the contract above).
float static_int8_scale(const calib::CalibrationStats& stats, int64_t layer, model::InputSite site,
                        float clip_ratio = 1.0f);

// `stats` is read only for kInt8PerTensor (nullptr there is kInvalidArgument).
void set_activation_quant(model::Model& m, const ActQuantOptions& options,
                          const calib::CalibrationStats* stats = nullptr);

struct ActQuantLayerCounts {
  int64_t layer = 0;  // −1: the output head
  model::TensorRole role = model::TensorRole::kAttnQ;
  model::ActivationQuant spec;
  model::ActivationQuantCounts counts;
  // outlier_columns / columns (0 when no column was seen).
  double outlier_share() const;
};

std::vector<ActQuantLayerCounts> activation_quant_counts(const model::Model& m);
void reset_activation_quant_counts(const model::Model& m);

}  // namespace calq::quant
