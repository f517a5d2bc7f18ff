// rotate — Hadamard rotation of the residual stream (model/rotate.h), a transform of the whole
// float model before calibration: its statistics must come from calibrating the rotated model.
// Options: model::RotateOptions' seed and rotate_down (defaults in rotate.h). No identity setting.
#include "model/architecture.h"
#include "model/rotate.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Every weight as dense float32 (rotation rewrites them all); tied embeddings stay one tensor.
void make_dense(model::Model& m, ThreadPool& pool) {
  const bool tied = m.output.same_storage(m.embedding);
  m.embedding = m.embedding.to_dense(pool);
  m.output = tied ? m.embedding : m.output.to_dense(pool);
  for (auto& layer : m.layers) {
    for (const model::TensorRole role : model::kLayerLinearRoles) layer.linear(role) = layer.linear(role).to_dense(pool);
  }
}

class Rotate final : public MethodOf<model::RotateOptions> {
 public:
  Rotate()
      : MethodOf({.name = "rotate",
                  .stage = MethodStage::kModelTransform,
                  .summary = "randomized Hadamard rotation of the residual stream (QuaRot-style), before calibration",
                  .needs = calib::StatSet(),
                  .identity = std::nullopt},
                 {number_option("seed", &model::RotateOptions::seed, {0, kInf},
                                "seed of the random Hadamard signs (default 0)"),
                  bool_option("rotate_down", &model::RotateOptions::rotate_down,
                              "also rotate the MLP intermediate online, before the down projection (default false)")}) {}

  void transform_model(model::Model& m, const StepOptions& options, ThreadPool& pool) const override {
    make_dense(m, pool);
    model::rotate_model(m, typed(options), pool);
  }
};

}  // namespace

MethodList make_rotate_methods() {
  MethodList l;
  l.push_back(std::make_unique<Rotate>());
  return l;
}

}  // namespace calq::quant
