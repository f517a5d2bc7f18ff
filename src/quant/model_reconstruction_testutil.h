// Test fixture of the model-reconstruction methods (qat-e2e, zeroqat): the 2-layer tiny model
// (hidden 32, intermediate 48) as teacher, every layer's linears rounded to nearest in int3 (groups
// of 32 where the row allows, per channel otherwise) as the student, and 4 samples of 16 tokens.
#pragma once

#include <string>
#include <vector>

#include "formats/format.h"
#include "model/architecture.h"
#include "model/tiny_model_testutil.h"
#include "quant/method.h"
#include "support/shared_dir.h"

namespace calq::quant::e2e_testutil {

inline constexpr int64_t kSeq = 16, kSamples = 4;

inline const model::Model& tiny_model() {
  static const model::Model m = [] {
    ThreadPool pool(2);
    return model::testutil::load_tiny_model(calq::testing::temp_dir("model_reconstruction"),
                                            {.tied = true, .layers = 2}, pool);
  }();
  return m;
}

struct Problem {
  model::Model teacher, quantized;
  std::vector<ModelReconstructionLinear> linears;
  std::vector<std::string> names;
  std::vector<std::vector<int32_t>> samples;

  ModelReconstructionTarget target() const {
    return {.teacher = &teacher, .quantized = &quantized, .linears = linears, .samples = samples};
  }
};

inline Problem make_problem(ThreadPool& pool) {
  Problem p{.teacher = tiny_model(), .quantized = tiny_model()};
  const Format& g = format_by_name("int3-g32-asym");
  const Format& pc = format_by_name("int3-pc-asym");
  p.names.reserve(14);
  for (int64_t l = 0; l < 2; ++l) {
    for (const model::TensorRole role : model::kLayerLinearRoles) {
      model::LinearWeight& w = p.quantized.layers[static_cast<size_t>(l)].linear(role);
      const Format& f = g.can_store(w.rows(), w.cols()) ? g : pc;
      p.names.push_back(model::gguf_tensor_name(*p.teacher.arch, role, l));
      p.linears.push_back({.layer = l, .role = role, .format = &f, .name = p.names.back()});
      w = QuantizedTensor::quantize(pool, f, w.dense().f32(), w.rows(), w.cols());
    }
  }
  const std::vector<int32_t> ids = model::testutil::test_token_ids(kSeq * kSamples, p.teacher.config.vocab_size);
  for (int64_t s = 0; s < kSamples; ++s) p.samples.emplace_back(ids.begin() + s * kSeq, ids.begin() + (s + 1) * kSeq);
  return p;
}

}  // namespace calq::quant::e2e_testutil
