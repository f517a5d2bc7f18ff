// qat-e2e — end-to-end training of the quantized model against the full-precision model's logits
// (quant/qat_e2e.h), once after the layer pass. Options: QatE2eOptions' recipe keys epochs, lr,
// lr_weights, batch, warmup, train_weights, cache_teacher, seed (defaults in qat_e2e.h). No
// identity setting: training moves the step sizes.
//
// Defaults: EfficientQAT's E2E-QP trains the step sizes alone (codes frozen) with AdamW at 2e-5
// over 4096 samples, one epoch, on 7B models; with the few samples of a calibration file (e.g.
// 32 × 512 tokens: 16 steps at 2 epochs of batch 4) a larger rate, 1e-4, is needed to move at all.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "quant/method_base.h"
#include "quant/qat_e2e.h"

namespace calq::quant {
namespace {

class QatE2e final : public MethodOf<QatE2eOptions> {
 public:
  QatE2e()
      : MethodOf({.name = "qat-e2e",
                  .stage = MethodStage::kModelReconstruction,
                  .summary = "end-to-end training (EfficientQAT E2E-QP): after all layers are quantized, train the "
                             "step sizes (codes frozen) against the float model's logits (KL divergence)",
                  .needs = calib::StatSet(),
                  .identity = std::nullopt},
                 {number_option("epochs", &QatE2eOptions::epochs, {1, 1000},
                                "passes over the calibration samples (default 2)"),
                  number_option("lr", &QatE2eOptions::lr, {0, 0.1, true},
                                "AdamW learning rate of the step sizes and zero points (default 1e-4)"),
                  number_option("lr_weights", &QatE2eOptions::lr_weights, {0, 0.1, true},
                                "AdamW learning rate of the latent weights, with train_weights (default 1e-5)"),
                  number_option("batch", &QatE2eOptions::batch, {1, 1 << 20},
                                "calibration samples per training step (default 4)"),
                  number_option("warmup", &QatE2eOptions::warmup, {0, 0.5},
                                "fraction of the steps with a linear learning-rate warmup (default 0)"),
                  bool_option("train_weights", &QatE2eOptions::train_weights,
                              "train latent weights and LSQ step sizes / zero points, rather than the step sizes "
                              "alone with the codes frozen (default false)"),
                  bool_option("cache_teacher", &QatE2eOptions::cache_teacher,
                              "keep the float model's logits of every sample rather than recompute them per batch "
                              "(default true)"),
                  number_option("seed", &QatE2eOptions::seed, {}, "seed of the sample order (default 0)")}) {}

  ModelReconstruction reconstruct_model(const ModelReconstructionTarget& t, const StepOptions& options,
                                        ThreadPool& pool) const override {
    QatE2eResult r = qat_e2e(t, typed(options), pool);
    ModelReconstruction out;
    out.weights = std::move(r.weights);
    out.event = layer_training_event(r.trained, r.trained_kept, r.loss_start, r.loss_trained, std::move(r.curve));
    return out;
  }

  // The whole model trained (grad::MemoryEstimateOptions::Scope::kWholeModel, AdamW, the batch's
  // teacher logits), beside the teacher's dense weights and, with cache_teacher, every sample's
  // teacher logits.
  std::optional<TrainingMemory> training_memory(const model::ModelConfig& config, const StepOptions& options,
                                                const TrainingShape& shape) const override {
    const QatE2eOptions& o = typed(options);
    TrainingMemory m;
    m.training = grad::estimate_training_memory(
        config, {.scope = grad::MemoryEstimateOptions::Scope::kWholeModel, .seq_len = shape.seq_len,
                 .batch = std::min(o.batch, std::max<int64_t>(shape.samples, 1)),
                 .optimizer_values_per_parameter = 2, .teacher_logits = true, .threads = shape.threads});
    m.extra.emplace_back("teacher weights", m.training.weights);
    if (o.cache_teacher) {
      m.extra.emplace_back("teacher cache",
                           sizeof(float) * static_cast<uint64_t>(shape.samples * shape.seq_len * config.vocab_size));
    }
    return m;
  }

  std::string event_text(const MethodEvent& e) const override {
    const char* what = e.value > 0    ? "trained model written"
                       : e.value == 0 ? "not lower than the start: kept the quantized model"
                                      : "nothing to train: kept the quantized model";
    return fmt::format("qat-e2e: KL on the calibration samples {:.5g} -> {:.5g}, {}, {} steps, {:.2f} s{}",
                       e.error_before, e.error_after, what, e.curve.size(), e.seconds, curve_text(e.curve));
  }
};

}  // namespace

MethodList make_qat_e2e_methods() {
  MethodList l;
  l.push_back(std::make_unique<QatE2e>());
  return l;
}

}  // namespace calq::quant
