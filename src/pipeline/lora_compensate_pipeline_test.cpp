// lora-compensate through the layer-sequential pipeline on a tiny model: the adapters land on
// every targeted linear, lower the logits' error against the float model below rtn's, are the same
// bytes for any thread count, survive a GGUF round trip, count in bits per weight; and the
// combinations that would drop or strand adapters are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/tiny_model_testutil.h"
#include "pipeline/model_quantize.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

using calq::testing::error_of;
using model::testutil::load_tiny_model;
using model::testutil::test_token_ids;

std::vector<std::vector<int32_t>> samples(int64_t n, int64_t seq, int64_t vocab) {
  const std::vector<int32_t> ids = test_token_ids(n * seq + 5, vocab);
  std::vector<std::vector<int32_t>> out;
  for (int64_t s = 0; s < n; ++s) out.emplace_back(ids.begin() + 5 + s * seq, ids.begin() + 5 + (s + 1) * seq);
  return out;
}

ModelQuantizeOptions options(const std::string& chain) {
  ModelQuantizeOptions o{.format = &format_by_name("int3-g32-asym"), .recipe = quant::parse_method_chain(chain)};
  o.rules.push_back(parse_tensor_rule("ffn_down=int3-pc-asym"));  // rows of 48
  return o;
}

model::Model quantized(const std::string& chain, size_t threads, const std::string& dir,
                       std::vector<MethodEvent>* events = nullptr) {
  ThreadPool pool(threads);
  model::Model m = load_tiny_model(testing::temp_dir(dir), {.tied = true, .layers = 2}, pool);
  const ModelQuantizeResult r = quantize_model(m, options(chain), samples(6, 16, m.config.vocab_size), {}, nullptr,
                                               nullptr, pool);
  if (events != nullptr) *events = r.events;
  return m;
}

double logits_mse(const model::Model& a, const model::Model& b, ThreadPool& pool) {
  const std::vector<int32_t> ids = test_token_ids(40, a.config.vocab_size);
  const Tensor x = model::forward(a, ids, pool), y = model::forward(b, ids, pool);
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double d = static_cast<double>(x.f32()[i]) - y.f32()[i];
    s += d * d;
  }
  return s / static_cast<double>(x.numel());
}

std::vector<std::byte> adapter_bytes(const model::Model& m) {
  std::vector<std::byte> out;
  for (const auto& layer : m.layers)
    for (const auto role : model::kLayerLinearRoles)
      if (const model::LoraAdapter* a = layer.adapter(role))
        for (const Tensor* t : {&a->a(), &a->b()}) out.insert(out.end(), t->bytes().begin(), t->bytes().end());
  return out;
}

TEST(LoraCompensatePipeline, LowersTheErrorDeterministicallyAndRoundTrips) {
  ThreadPool pool(2);
  const model::Model fp = load_tiny_model(testing::temp_dir("lc_fp"), {.tied = true, .layers = 2}, pool);
  const model::Model rtn = quantized("rtn", 2, "lc_rtn");
  std::vector<MethodEvent> events;
  const model::Model comp = quantized("rtn+lora-compensate", 2, "lc_comp", &events);
  // Every linear of both layers has a rank-16 adapter (the tiny layers allow 16: k and v are 16 × 32).
  int64_t n_events = 0;
  for (const MethodEvent& e : events) {
    if (e.step != "lora-compensate") continue;
    ++n_events;
    EXPECT_LT(e.error_after, e.error_before) << e.target;
    EXPECT_EQ(e.value, 16.0);
  }
  EXPECT_EQ(n_events, 14);
  for (const auto& layer : comp.layers)
    for (const auto role : model::kLayerLinearRoles) {
      ASSERT_NE(layer.adapter(role), nullptr);
      EXPECT_EQ(layer.adapter(role)->rank(), 16);
    }
  // The base weights are rtn's for layer 0 (same inputs); the adapters add bytes to bits per weight.
  const auto q_rtn = rtn.layers[0].linear(model::TensorRole::kAttnQ).quantized().bytes;
  const auto q_comp = comp.layers[0].linear(model::TensorRole::kAttnQ).quantized().bytes;
  EXPECT_TRUE(std::equal(q_rtn.begin(), q_rtn.end(), q_comp.begin(), q_comp.end()));
  EXPECT_EQ(comp.storage_bytes() - rtn.storage_bytes(), adapter_bytes(comp).size());
  EXPECT_GT(comp.bits_per_weight(), rtn.bits_per_weight());
  // Closer to the float model than rtn alone.
  const double e_rtn = logits_mse(fp, rtn, pool), e_comp = logits_mse(fp, comp, pool);
  EXPECT_LT(e_comp, 0.8 * e_rtn) << e_rtn << " " << e_comp;
  // The same bytes on one thread.
  EXPECT_EQ(adapter_bytes(quantized("rtn+lora-compensate", 1, "lc_comp1")), adapter_bytes(comp));

  // GGUF round trip: adapters bit-exact, logits the same bits.
  const auto dir = testing::temp_dir("lc_gguf");
  model::Model unsourced = comp;
  unsourced.source.clear();  // no tokenizer to carry
  model::write_gguf_model(unsourced, dir / "c.gguf", {}, pool);
  const model::Model back = model::load_gguf_model(dir / "c.gguf", pool);
  EXPECT_EQ(adapter_bytes(back), adapter_bytes(comp));
  EXPECT_EQ(back.storage_bytes(), comp.storage_bytes());
  const std::vector<int32_t> ids = test_token_ids(20, comp.config.vocab_size);
  const Tensor x = model::forward(back, ids, pool), y = model::forward(comp, ids, pool);
  ASSERT_EQ(x.nbytes(), y.nbytes());
  EXPECT_EQ(std::memcmp(x.f32(), y.f32(), x.nbytes()), 0);
  // A model carrying adapters is not quantized again (they belong to its weights).
  model::Model again = back;
  const std::string e = error_of([&] {
    quantize_model(again, options("rtn"), samples(2, 8, again.config.vocab_size), {}, nullptr, nullptr, pool);
  });
  EXPECT_NE(e.find("LoRA adapters"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

TEST(LoraCompensatePipeline, RolesThatMatchNoQuantizedLinearAreAnError) {
  ThreadPool pool(2);
  model::Model m = load_tiny_model(testing::temp_dir("lc_roles"), {.tied = true, .layers = 1}, pool);
  ModelQuantizeOptions o = options("rtn");
  o.recipe = quant::recipe_from_json(nlohmann::json::parse(R"([{"method": "lora-compensate", "roles": "down"}])"),
                                     "test");
  o.rules = {parse_tensor_rule("ffn_down=f32")};
  const std::string e = error_of([&] {
    quantize_model(m, o, samples(2, 8, m.config.vocab_size), {}, nullptr, nullptr, pool);
  });
  EXPECT_NE(e.find("made no adapter"), std::string::npos) << e;
  EXPECT_NE(e.find("down"), std::string::npos) << e;
}

}  // namespace
}  // namespace calq::pipeline
