#include "api/training.h"

#include <fmt/format.h>

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
// with a Hessian-reading step in the recipe, each site's [cols × cols] doubles, held by each worker,
// merged, and copied once more for the layer's methods (quant::InputStats). The per-channel
// vectors are small beside them and not counted.
uint64_t layer_statistics_bytes(const quant::Recipe& recipe, const model::Model& model, int64_t threads) {
  if (!pipeline::required_stats(recipe).contains(calib::StatKind::kHessian) || model.layers.empty()) return 0;
  uint64_t per_copy = 0;
  for (const model::SiteWiring& site : model::block_topology(model.config).layer_sites) {
    const auto cols = static_cast<uint64_t>(model.layers[0].linear(site.consumers[0]).cols());
    per_copy += cols * cols * sizeof(double);
  }
  return per_copy * static_cast<uint64_t>(threads + 2);
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
                               ? layer_statistics_bytes(recipe, model, threads) : 0;
    if (stats > 0) r.parts.emplace_back("layer statistics", stats);
    r.parts.emplace_back("model", model.storage_bytes());
    std::string parts;
    for (const auto& [what, bytes] : r.parts) {
      r.bytes += bytes;
      parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", what, format_bytes(bytes));
    }
    r.text = fmt::format("{}: estimated peak {} ({})", r.method, format_bytes(r.bytes), parts);
    out.push_back(std::move(r));
  }
  return out;
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
