#include "api/quantize_json.h"

#include <nlohmann/json.hpp>

namespace calq::api {
namespace {

using Json = nlohmann::ordered_json;

Json tensors_json(const std::vector<TensorReport>& tensors) {
  Json list = Json::array();
  for (const TensorReport& t : tensors) {
    list.push_back({{"name", t.name},
                    {"shape", t.shape},
                    {"from_type", t.from_type},
                    {"type", t.type},
                    {"quantized", t.quantized},
                    {"fell_back", t.fell_back},
                    {"used_importance", t.used_importance},
                    {"seconds", t.seconds}});
  }
  return list;
}

Json training_json(const QuantizeReport& r) {
  Json list = Json::array();
  for (const TrainingRecord& t : r.training) {
    list.push_back({{"method", t.method},
                    {"layer", t.layer},
                    {"steps", t.steps},
                    {"loss_start", t.loss_start},
                    {"loss_written", t.loss_written},
                    {"trained", t.trained},
                    {"kept", t.kept},
                    {"seconds", t.seconds},
                    {"curve", t.curve}});
  }
  return list;
}

Json training_memory_json(const QuantizeReport& r) {
  Json list = Json::array();
  for (const TrainingMemoryReport& m : r.training_memory) {
    Json parts = Json::object();
    for (const auto& [what, bytes] : m.parts) parts[what] = bytes;
    list.push_back({{"method", m.method}, {"bytes", m.bytes}, {"parts", parts}});
  }
  return list;
}

}  // namespace

std::string quantize_report_json(const QuantizeReport& r) {
  Json j;
  j["out"] = r.out;
  j["form"] = r.form;
  j["description"] = r.description;
  j["recipe"] = r.recipe;
  j["bits_per_weight"] = r.bits_per_weight;
  j["bytes_in"] = r.bytes_in;
  j["bytes_out"] = r.bytes_out;
  j["n_tensors"] = r.n_tensors;
  j["n_quantized"] = r.n_quantized;
  j["n_with_importance"] = r.n_with_importance;
  j["n_fallback"] = r.n_fallback;
  j["tensors"] = tensors_json(r.tensors);
  j["method_events"] = r.method_events;
  j["calibration"] = r.calibration ? Json(*r.calibration) : Json(nullptr);
  j["predicted_kld"] = r.predicted_kld;
  if (r.verify) {
    const VerifyReport& v = *r.verify;
    j["verify"] = {{"windows", v.windows},
                   {"ctx", v.ctx},
                   {"predicted_kld", v.predicted_kld},
                   {"measured_kld", v.measured_kld},
                   {"measured_kld_ci", Json::array({v.measured_kld_lo, v.measured_kld_hi})}};
  } else {
    j["verify"] = nullptr;
  }
  j["seconds"] = r.seconds;
  j["seconds_encode"] = r.seconds_encode;
  j["seconds_convert"] = r.seconds_convert;
  j["seconds_write"] = r.seconds_write;
  j["peak_rss_mib"] = r.peak_rss_mib;
  j["threads"] = r.threads;
  j["warnings"] = r.warnings;
  j["training_memory"] = training_memory_json(r);
  j["training"] = training_json(r);
  return j.dump(2) + "\n";
}

}  // namespace calq::api
