#include "quant/act_quant.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace calq::quant {
namespace {

using model::ActivationQuant;
using model::TensorRole;

constexpr std::array<TensorRole, 7> kLayerRoles = {TensorRole::kAttnQ,   TensorRole::kAttnK,    TensorRole::kAttnV,
                                                   TensorRole::kAttnOut, TensorRole::kMlpGate,  TensorRole::kMlpUp,
                                                   TensorRole::kMlpDown};

std::string site_label(int64_t layer, model::InputSite site) {
  return layer < 0 ? fmt::format("the output head's input ({})", model::site_name(site))
                   : fmt::format("layer {} {} input", layer, model::site_name(site));
}

// Calls fn(layer, role, weight) for every linear weight in forward order, the head last (layer −1)
// when `head` is set.
template <typename M, typename Fn>
void each_linear(M& m, bool head, Fn&& fn) {
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (const TensorRole r : kLayerRoles) fn(static_cast<int64_t>(l), r, m.layers[l].linear(r));
  }
  if (head) fn(int64_t{-1}, TensorRole::kOutput, m.output);
}

}  // namespace

float static_int8_scale(const calib::CalibrationStats& stats, int64_t layer, model::InputSite site,
                        float clip_ratio) {
  if (!(clip_ratio > 0.0f && clip_ratio <= 1.0f)) {
    fail(ErrorKind::kInvalidArgument, "activation clip ratio {} is outside (0, 1]", clip_ratio);
  }
  if (!stats.kinds().contains(calib::StatKind::kAbsMax)) {
    fail(ErrorKind::kInvalidArgument, "static int8 activation scales need 'absmax' calibration statistics");
  }
  const calib::SiteStats* s = stats.find(layer, site);
  if (s == nullptr) {
    fail(ErrorKind::kInvalidArgument, "no calibration statistics for {}", site_label(layer, site));
  }
  const std::span<const float> absmax = s->absmax();
  const float peak = absmax.empty() ? 0.0f : *std::max_element(absmax.begin(), absmax.end());
  if (!(peak > 0.0f)) {
    fail(ErrorKind::kInvalidArgument, "{} was never non-zero in calibration: no int8 scale to derive",
         site_label(layer, site));
  }
  return clip_ratio * peak / 127.0f;
}

void set_activation_quant(model::Model& m, const ActQuantOptions& options, const calib::CalibrationStats* stats) {
  ActivationQuant spec{.kind = options.kind, .threshold = options.threshold};
  if (spec.per_token()) spec.clip = options.clip_ratio;
  if (options.kind == ActivationQuant::Kind::kLlmInt8 && !spec.valid()) {
    fail(ErrorKind::kInvalidArgument, "LLM.int8() outlier threshold {} must be positive and finite",
         options.threshold);
  }
  if (spec.per_token() && !spec.valid()) {
    fail(ErrorKind::kInvalidArgument, "activation clip ratio {} is outside (0, 1]", options.clip_ratio);
  }
  // Compute every scale first, so that an error leaves the model untouched.
  std::vector<ActivationQuant> specs;
  each_linear(std::as_const(m), options.include_head, [&](int64_t layer, TensorRole role, const model::LinearWeight&) {
    ActivationQuant s = spec;
    if (options.kind == ActivationQuant::Kind::kInt8PerTensor) {
      if (stats == nullptr) {
        fail(ErrorKind::kInvalidArgument, "per-tensor int8 activations need calibration statistics (absmax)");
      }
      s.scale = static_int8_scale(*stats, layer, calib::input_site(role), options.clip_ratio);
    }
    specs.push_back(s);
  });
  size_t i = 0;
  each_linear(m, options.include_head,
              [&](int64_t, TensorRole, model::LinearWeight& w) { w.set_act_quant(specs[i++]); });
}

double ActQuantLayerCounts::outlier_share() const {
  return counts.columns == 0 ? 0.0
                             : static_cast<double>(counts.outlier_columns) / static_cast<double>(counts.columns);
}

std::vector<ActQuantLayerCounts> activation_quant_counts(const model::Model& m) {
  std::vector<ActQuantLayerCounts> out;
  each_linear(m, true, [&](int64_t layer, TensorRole role, const model::LinearWeight& w) {
    if (w.act_quant().enabled()) out.push_back({layer, role, w.act_quant(), w.act_quant_counts()});
  });
  return out;
}

void reset_activation_quant_counts(const model::Model& m) {
  each_linear(m, true, [](int64_t, TensorRole, const model::LinearWeight& w) { w.reset_act_quant_counts(); });
}

}  // namespace calq::quant
