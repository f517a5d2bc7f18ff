#include "api/training.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "eval/synthetic.h"
#include "model/block_topology.h"
#include "pipeline/layer_methods.h"

namespace calq::api {

std::string format_bytes(uint64_t bytes) {
  constexpr double kKiB = 1024.0, kMiB = kKiB * 1024.0, kGiB = kMiB * 1024.0;
  const auto b = static_cast<double>(bytes);
  if (b >= kGiB) return fmt::format("{:.2f} GiB", b / kGiB);
  if (b >= kMiB) return fmt::format("{:.1f} MiB", b / kMiB);
  if (b >= kKiB) return fmt::format("{:.1f} KiB", b / kKiB);
  return fmt::format("{} bytes", bytes);
}

namespace {

// The layer-sequential pipeline's statistics of the layer being quantized (pipeline/sequential.h):
// with a Hessian-reading step in the recipe, each site's [cols × cols] doubles, once (one total per
// site, moved into the layer's methods); a mixture-of-experts layer's experts' sites too. The
// per-channel vectors are small beside them and not counted.
uint64_t layer_statistics_bytes(const quant::Recipe& recipe, const model::Model& model) {
  if (!pipeline::required_stats(recipe).contains(calib::StatKind::kHessian) || model.layers.empty()) return 0;
  uint64_t bytes = 0;
  for (const model::SiteWiring& site : model::block_topology(model.config).layer_sites) {
    const auto cols = static_cast<uint64_t>(model::site_width(site, model.config));
    bytes += cols * cols * sizeof(double);
  }
  for (const model::ExpertWeights& e : model.layers[0].experts) {
    for (const model::LinearWeight* w : {&e.w_gate, &e.w_down}) {
      const auto cols = static_cast<uint64_t>(w->cols());
      bytes += cols * cols * sizeof(double);
    }
  }
  return bytes;
}

// The widest site's [cols × cols] (GPTQ's working copy of its Hessian in double and its float
// inverse factor), 0 without a gptq step.
uint64_t gptq_working_bytes(const quant::Recipe& recipe, const model::Model& model) {
  bool gptq = false;
  for (const quant::MethodStep& step : recipe.steps) gptq = gptq || step.name() == "gptq";
  if (!gptq || model.layers.empty()) return 0;
  uint64_t widest = 0;
  for (const model::SiteWiring& site : model::block_topology(model.config).layer_sites)
    widest = std::max<uint64_t>(widest, static_cast<uint64_t>(model::site_width(site, model.config)));
  for (const model::ExpertWeights& e : model.layers[0].experts)
    widest = std::max<uint64_t>(widest, static_cast<uint64_t>(e.w_down.cols()));
  return widest * widest * (sizeof(double) + sizeof(float));
}

std::string parts_text(const std::vector<std::pair<std::string, uint64_t>>& parts) {
  std::string out;
  for (const auto& [what, bytes] : parts) out += fmt::format("{}{} {}", out.empty() ? "" : ", ", what, format_bytes(bytes));
  return out;
}

}  // namespace

std::vector<TrainingMemoryReport> estimate_training_memory(const quant::Recipe& recipe, const model::Model& model,
                                                           const CalibrationData& calibration, int64_t threads) {
  // generate:N draws N samples; a text, `samples` windows (fewer is an error of the text later).
  const std::optional<eval::SyntheticSpec> generated = eval::parse_synthetic_spec(calibration.text);
  const quant::TrainingShape shape{.samples = generated ? generated->sequences : calibration.samples,
                                   .seq_len = calibration.seq_len, .threads = threads};
  std::vector<TrainingMemoryReport> out;
  for (const quant::MethodStep& step : recipe.steps) {
    const std::optional<quant::TrainingMemory> m = step.method->training_memory(model.config, step.options, shape);
    if (!m) continue;
    TrainingMemoryReport r{.method = step.name()};
    r.parts = {{"weights", m->training.weights},
               {"gradients", m->training.gradients},
               {"optimizer", m->training.optimizer},
               {"activations", m->training.activations}};
    r.parts.insert(r.parts.end(), m->extra.begin(), m->extra.end());
    // A per-layer step trains while its layer's statistics are held; a whole-model one after them.
    const quant::MethodStage stage = step.method->stage();
    const uint64_t stats = stage == quant::MethodStage::kLayerReconstruction || stage == quant::MethodStage::kLayerTransform
                               ? layer_statistics_bytes(recipe, model) : 0;
    if (stats > 0) r.parts.emplace_back("layer statistics", stats);
    r.parts.emplace_back("model", model.storage_bytes());
    for (const auto& part : r.parts) r.bytes += part.second;
    r.text = fmt::format("{}: estimated peak {} ({})", r.method, format_bytes(r.bytes), parts_text(r.parts));
    out.push_back(std::move(r));
  }
  return out;
}

TrainingMemoryReport estimate_layer_pass_memory(const quant::Recipe& recipe, const model::Model& model,
                                                const CalibrationData& calibration, int64_t threads) {
  const std::optional<eval::SyntheticSpec> generated = eval::parse_synthetic_spec(calibration.text);
  const auto samples = static_cast<uint64_t>(calibration.text.empty() ? 0
                                             : generated          ? generated->sequences
                                                                  : calibration.samples);
  const model::ModelConfig& c = model.config;
  uint64_t layer_params = 0;
  if (!model.layers.empty()) {
    for (const model::TensorRole role : model::layer_linear_roles(c))
      layer_params += static_cast<uint64_t>(model.layers[0].linear(role).numel());
    for (const model::ExpertWeights& e : model.layers[0].experts)
      layer_params += static_cast<uint64_t>(e.w_gate.numel() + e.w_up.numel() + e.w_down.numel());
  }
  uint64_t widest = static_cast<uint64_t>(std::max(c.hidden_size, c.intermediate_size));
  if (c.moe) widest = std::max<uint64_t>(widest, static_cast<uint64_t>(c.moe->expert_intermediate));
  const uint64_t seq = static_cast<uint64_t>(calibration.seq_len);
  // Every sample's hidden state (twice with the float stream of a reconstruction step), and per
  // worker one sample's copy and inputs of the sites.
  const uint64_t hidden = samples * seq * static_cast<uint64_t>(c.hidden_size) * sizeof(float) *
                          (pipeline::needs_float_stream(recipe) ? 2 : 1);
  const uint64_t per_worker = samples > 0 ? static_cast<uint64_t>(threads) * seq * (widest + 4 * c.hidden_size) *
                                                sizeof(float) * 2 : 0;
  TrainingMemoryReport r{.method = "layer pass"};
  r.parts = {{"one layer in float32", layer_params * sizeof(float)},
             {"its statistics", layer_statistics_bytes(recipe, model)},
             {"gptq's working copies", gptq_working_bytes(recipe, model)},
             {"hidden states", hidden + per_worker},
             {"program", uint64_t{256} << 20}};
  uint64_t layer_phase = 0;
  for (const auto& part : r.parts) layer_phase += part.second;
  // After the layers: the output head (the embedding too when untied) in float32 while it is quantized.
  const uint64_t head = static_cast<uint64_t>(c.vocab_size) * static_cast<uint64_t>(c.hidden_size) * sizeof(float);
  r.bytes = std::max(layer_phase, head + (uint64_t{256} << 20) + hidden);
  r.text = fmt::format("layer pass: estimated peak {} (the larger of {} for a layer — {} — and {} for the output "
                       "head in float32 with the hidden states); finished layers are kept in files, not memory",
                       format_bytes(r.bytes), format_bytes(layer_phase), parts_text(r.parts),
                       format_bytes(head + (uint64_t{256} << 20) + hidden));
  return r;
}

void check_available_memory(const TrainingMemoryReport& estimate) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    // "MemAvailable:   12345678 kB"
    if (!line.starts_with("MemAvailable:")) continue;
    const uint64_t available = std::strtoull(line.c_str() + std::strlen("MemAvailable:"), nullptr, 10) * 1024;
    if (available == 0) return;  // unreadable: no check
    if (estimate.bytes > available) {
      fail(ErrorKind::kInvalidArgument, "{}: more than the {} this machine has available (MemAvailable); nothing was "
           "done", estimate.text, format_bytes(available));
    }
    return;
  }
}

void check_max_memory(const std::vector<TrainingMemoryReport>& estimates, uint64_t max_memory) {
  if (max_memory == 0) return;
  for (const TrainingMemoryReport& e : estimates) {
    if (e.bytes <= max_memory) continue;
    const std::string breakdown = e.text.substr(e.text.find('('));
    fail(ErrorKind::kInvalidArgument, "{} needs an estimated {} {}, more than max_memory {} ({} bytes)", e.method,
         format_bytes(e.bytes), breakdown, format_bytes(max_memory), max_memory);
  }
}

std::vector<TrainingRecord> training_records(const std::vector<quant::MethodEvent>& events) {
  std::vector<TrainingRecord> out;
  for (const quant::MethodEvent& e : events) {
    const quant::MethodStage stage = quant::method_by_name(e.step).stage();
    if (stage != quant::MethodStage::kLayerReconstruction && stage != quant::MethodStage::kModelReconstruction &&
        stage != quant::MethodStage::kLayerTransform)
      continue;
    // The training methods' event values: 1 trained and written, 0 trained and not kept, −1 nothing to train.
    out.push_back({.method = e.step, .layer = e.layer, .steps = static_cast<int64_t>(e.curve.size()),
                   .loss_start = e.error_before, .loss_written = e.error_after, .trained = e.value >= 0,
                   .kept = e.value > 0, .seconds = e.seconds, .curve = e.curve});
  }
  return out;
}

}  // namespace calq::api
