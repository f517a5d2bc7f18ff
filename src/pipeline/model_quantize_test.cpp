#include "pipeline/model_quantize.h"
#include <filesystem>
#include <cstring>
#include "pipeline/layer_store.h"
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "model/forward.h"
#include "model/site_transform.h"
#include "model/tiny_model_testutil.h"
#include "pipeline/tensor_swap.h"
#include "support/shared_dir.h"
#include "support/error_of.h"

namespace calq::pipeline {
namespace {

using model::testutil::load_tiny_model;
using model::testutil::test_token_ids;

using calq::testing::error_of;

std::vector<std::vector<int32_t>> make_samples(int64_t n, int64_t seq, int64_t vocab) {
  const std::vector<int32_t> ids = test_token_ids(n * seq, vocab);
  std::vector<std::vector<int32_t>> out;
  for (int64_t s = 0; s < n; ++s) out.emplace_back(ids.begin() + s * seq, ids.begin() + (s + 1) * seq);
  return out;
}

const TensorAssignment& find(const std::vector<TensorAssignment>& plan, const std::string& name) {
  for (const auto& a : plan) {
    if (a.name == name) return a;
  }
  throw std::runtime_error("no tensor " + name);
}

TEST(TensorRule, Parsing) {
  const TensorRule r = parse_tensor_rule("attn_(q|k)=int8-pc-sym");
  EXPECT_EQ(r.pattern, "attn_(q|k)");
  EXPECT_EQ(r.format->name(), "int8-pc-sym");
  EXPECT_EQ(parse_tensor_rule("output=f32").format, nullptr);
  EXPECT_NE(error_of([] { parse_tensor_rule("attn_q"); }).find("REGEX=FORMAT"), std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_rule("attn_(q=q8_0"); }).find("invalid regular expression"), std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_rule("attn_q=int17"); }).find("int17"), std::string::npos);
}

TEST(ModelPlan, DefaultsRulesAndFallbacks) {
  ThreadPool pool(2);
  const model::Model m = load_tiny_model(testing::temp_dir("plan"), {.tied = false, .layers = 2}, pool);
  // hidden 32, intermediate 48: int4-g32 cannot store the down projection (rows of 48).
  ModelQuantizeOptions o{.format = &format_by_name("int4-g32-asym")};
  o.rules.push_back(parse_tensor_rule("blk\\.1\\.attn_v=int8-pc-sym"));
  o.rules.push_back(parse_tensor_rule("model\\.layers\\.0\\.self_attn\\.k_proj=f32"));
  const auto plan = plan_model_quantization(m, o);
  EXPECT_EQ(plan.size(), 2u + 2u * 7u);
  EXPECT_EQ(find(plan, "blk.1.attn_v.weight").format->name(), "int8-pc-sym");
  EXPECT_EQ(find(plan, "blk.1.attn_v.weight").rule, 0);
  EXPECT_EQ(find(plan, "blk.0.attn_k.weight").format, nullptr);
  EXPECT_EQ(find(plan, "blk.0.attn_k.weight").rule, 1);
  EXPECT_EQ(find(plan, "blk.0.attn_q.weight").format->name(), "int4-g32-asym");
  const TensorAssignment& down = find(plan, "blk.0.ffn_down.weight");
  EXPECT_TRUE(down.fell_back);
  ASSERT_NE(down.format, nullptr);
  EXPECT_EQ(down.format->name(), "f16");  // 48 fits neither q8_0's 32 nor int4-g32
  // The head and embedding get higher precision: q6_k needs rows of 256, q8_0 of 32.
  EXPECT_EQ(find(plan, "token_embd.weight").format->name(), "q8_0");
  EXPECT_EQ(find(plan, "output.weight").format->name(), "q8_0");
}

TEST(ModelPlan, RuleErrors) {
  ThreadPool pool(2);
  const model::Model m = load_tiny_model(testing::temp_dir("plan_err"), {.layers = 1}, pool);
  ModelQuantizeOptions o{.format = &format_by_name("int8-pc-sym")};
  o.rules.push_back(parse_tensor_rule("blk\\.7\\.=q8_0"));
  std::string msg = error_of([&] { plan_model_quantization(m, o); });
  EXPECT_NE(msg.find("matches no tensor"), std::string::npos) << msg;
  o.rules = {parse_tensor_rule("ffn_down=q8_0")};  // rows of 48
  msg = error_of([&] { plan_model_quantization(m, o); });
  EXPECT_NE(msg.find("cannot be stored"), std::string::npos) << msg;
  EXPECT_NE(msg.find("blk.0.ffn_down.weight"), std::string::npos) << msg;
}

TEST(ModelQuantize, ImportanceCalibratedAndDeterministic) {
  std::vector<std::vector<std::byte>> outputs;
  for (const size_t threads : {1u, 3u}) {
    ThreadPool pool(threads);
    model::Model m = load_tiny_model(testing::temp_dir("mq"), {.layers = 2}, pool);
    const auto samples = make_samples(4, 16, m.config.vocab_size);
    const std::unique_ptr<calib::Observer> obs = calib::make_observer("mse");
    const ModelQuantizeOptions o{.format = &format_by_name("int4-g32-asym"), .observer = obs.get()};
    const ModelQuantizeResult r = quantize_model(m, o, samples, {}, nullptr, nullptr, pool);
    ASSERT_TRUE(r.calibration.has_value());
    EXPECT_EQ(r.calibration->samples, 4);
    // Every tensor gets importance; the tied embedding gets the head input's.
    EXPECT_EQ(r.n_with_importance, static_cast<int64_t>(r.plan.size()));
    EXPECT_EQ(m.layers[0].wq.format_name(), "int4-g32-asym");
    EXPECT_TRUE(m.output.same_storage(m.embedding));
    std::vector<std::byte> all;
    for (const auto& l : m.layers) {
      const auto& b = l.wq.quantized().bytes;
      all.insert(all.end(), b.begin(), b.end());
    }
    const auto& e = m.embedding.quantized().bytes;
    all.insert(all.end(), e.begin(), e.end());
    outputs.push_back(all);
  }
  EXPECT_EQ(outputs[0], outputs[1]);
}

// A layer store (layer_store.h) changes where the finished layers' bytes live, not what they are:
// the same bytes and the same logits as a run in memory, each layer's bytes inside its file.
TEST(ModelQuantize, LayerStoreKeepsTheSameBytesInFiles) {
  ThreadPool pool(2);
  const auto dir = testing::temp_dir("mq_store");
  std::vector<model::Model> models;
  for (const bool stored : {false, true}) {
    model::Model m = load_tiny_model(dir / (stored ? "a" : "b"), {.layers = 2}, pool);
    const auto samples = make_samples(3, 12, m.config.vocab_size);
    ModelQuantizeOptions o{.format = &format_by_name("int4-pc-sym"), .recipe = quant::parse_method_chain("gptq"),
                           .act = ActivationScheme::kInt8PerToken};
    if (stored) o.layer_store = dir / "store";
    quantize_model(m, o, samples, {}, nullptr, nullptr, pool);
    models.push_back(std::move(m));
  }
  for (int64_t l = 0; l < 2; ++l) {
    const auto file = LayerStore(dir / "store").file(l);
    ASSERT_TRUE(std::filesystem::exists(file)) << file;
    const io::SafetensorsFile f = io::SafetensorsFile::open(file, {.quantized = true});
    EXPECT_EQ(f.metadata().at("calq.layer"), std::to_string(l));
    for (const model::TensorRole role : model::kLayerLinearRoles) {
      const QuantizedTensor& a = models[0].layers[static_cast<size_t>(l)].linear(role).quantized();
      const model::LinearWeight& bw = models[1].layers[static_cast<size_t>(l)].linear(role);
      const QuantizedTensor& b = bw.quantized();
      ASSERT_EQ(a.bytes.size(), b.bytes.size());
      EXPECT_EQ(0, std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size())) << l << model::role_name(role);
      const Tensor stored = f.tensor(model::role_name(role));
      ASSERT_EQ(stored.bytes().size(), a.bytes.size());
      EXPECT_EQ(0, std::memcmp(stored.bytes().data(), a.bytes.data(), a.bytes.size()));
      EXPECT_EQ(f.metadata().at(std::string(model::role_name(role)) + ".format"), "int4-pc-sym");
      // The activation scheme set during the layer's pass is still there.
      EXPECT_EQ(bw.act_quant().kind, ActivationScheme::kInt8PerToken);
    }
  }
  const auto ids = test_token_ids(20, models[0].config.vocab_size);
  const Tensor la = model::forward(models[0], ids, pool);
  const Tensor lb = model::forward(models[1], ids, pool);
  EXPECT_EQ(0, std::memcmp(la.f32(), lb.f32(), la.numel() * sizeof(float)));
}

TEST(ModelQuantize, StatsFromAFileMatchTheModel) {
  ThreadPool pool(2);
  model::Model m = load_tiny_model(testing::temp_dir("mq_stats"), {.layers = 2}, pool);
  model::Model other = load_tiny_model(testing::temp_dir("mq_stats2"), {.layers = 1}, pool);
  const auto samples = make_samples(2, 8, m.config.vocab_size);
  const SequentialResult r = run_layer_sequential(other, samples, {}, nullptr, pool);
  const std::string msg = error_of([&] { check_stats_match(r.stats, m, "stats.gguf"); });
  EXPECT_NE(msg.find("stats.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer 1"), std::string::npos) << msg;
  const SequentialResult good = run_layer_sequential(m, samples, {}, nullptr, pool);
  EXPECT_NO_THROW(check_stats_match(good.stats, m, "stats.gguf"));
}

TEST(RequiredStats, UnionOfTheMethodsNeeds) {
  using calib::StatKind;
  const calib::StatSet base = calib::StatSet().with(StatKind::kAbsMax).with(StatKind::kMeanSq);
  EXPECT_EQ(required_stats(quant::parse_method_chain("rtn")), base);
  EXPECT_EQ(required_stats(quant::parse_method_chain("gptq")), base.with(StatKind::kHessian));
  EXPECT_EQ(required_stats(quant::parse_method_chain("awq")),
            base.with(StatKind::kMeanAbs).with(StatKind::kHessian));
  EXPECT_EQ(required_stats(quant::parse_method_chain("rotate+smoothquant+int8-tensor")), base);
}

// An activation scheme in the method chain does what the same scheme given apart does.
TEST(ModelQuantize, ActivationSchemeInTheChainEqualsTheOption) {
  ThreadPool pool(2);
  const auto run = [&](const quant::Recipe& recipe, ActivationScheme act) {
    model::Model m = load_tiny_model(testing::temp_dir("mq_act"), {.layers = 1}, pool);
    const auto samples = make_samples(2, 16, m.config.vocab_size);
    ModelQuantizeOptions o{.format = &format_by_name("int8-pc-sym"), .recipe = recipe, .act = act,
                           .llm_int8_threshold = 4.5f};
    const ModelQuantizeResult r = quantize_model(m, o, samples, {}, nullptr, nullptr, pool);
    EXPECT_EQ(r.events.size(), 3u);  // smoothquant on attn_in, mlp_in, mlp_down (o: heads share kv heads)
    return m;
  };
  const model::Model a = run(quant::recipe_from_json(nlohmann::json::parse(
                                 R"([{"method": "smoothquant"}, {"method": "llm-int8", "threshold": 4.5}])"),
                                                     "test"),
                             ActivationScheme::kNone);
  const model::Model b = run(quant::parse_method_chain("smoothquant"), ActivationScheme::kLlmInt8);
  for (const model::TensorRole role : model::kLayerLinearRoles) {
    const model::LinearWeight& wa = a.layers[0].linear(role);
    const model::LinearWeight& wb = b.layers[0].linear(role);
    EXPECT_EQ(wa.act_quant(), wb.act_quant());
    EXPECT_EQ(wa.act_quant().kind, model::ActivationQuant::Kind::kLlmInt8);
    EXPECT_EQ(wa.act_quant().threshold, 4.5f);
    ASSERT_EQ(wa.quantized().bytes.size(), wb.quantized().bytes.size());
    EXPECT_TRUE(std::equal(wa.quantized().bytes.begin(), wa.quantized().bytes.end(), wb.quantized().bytes.begin()));
  }
  // Given twice, it is an error naming both.
  model::Model m = load_tiny_model(testing::temp_dir("mq_act2"), {.layers = 1}, pool);
  const ModelQuantizeOptions o{.format = &format_by_name("int8-pc-sym"),
                               .recipe = quant::parse_method_chain("rtn+int8-token"),
                               .act = ActivationScheme::kInt8PerTensor};
  const std::string msg = error_of([&] { quantize_model(m, o, make_samples(1, 8, 61), {}, nullptr, nullptr, pool); });
  EXPECT_NE(msg.find("int8-token"), std::string::npos) << msg;
  EXPECT_NE(msg.find("int8-tensor"), std::string::npos) << msg;
  EXPECT_EQ(parse_activation_scheme("llm-int8"), ActivationScheme::kLlmInt8);
  EXPECT_NE(error_of([] { parse_activation_scheme("int4"); }).find("activation scheme 'int4': expected none, int8-token"),
            std::string::npos);
}

}  // namespace
}  // namespace calq::pipeline

namespace calq::pipeline {
namespace {

// gptq+qat-block through the pipeline: the reconstruction runs on every layer after gptq (its
// events in layer order), writes a trained layer only when it lowers the layer's output error,
// and is deterministic across thread counts. Without calibration samples, or with float
// inputs, it is an Error before any work.
TEST(ModelQuantize, LayerReconstructionAfterTheWeightQuantizer) {
  const auto run = [](size_t threads) {
    ThreadPool pool(threads);
    model::Model m = load_tiny_model(testing::temp_dir("qat_pipeline"), {.tied = true, .layers = 2}, pool);
    // The tiny model's weights need larger rates than the defaults' (sized for real models).
    const nlohmann::json steps = nlohmann::json::parse(
        R"([{"method": "gptq"}, {"method": "qat-block", "epochs": 6, "lr_weights": 2e-3, "lr_quant": 2e-3}])");
    ModelQuantizeOptions o{.format = &format_by_name("int3-g32-asym"),
                           .recipe = quant::recipe_from_json(steps, "test")};
    o.rules.push_back(parse_tensor_rule("ffn_down=int3-pc-asym"));  // rows of 48
    const ModelQuantizeResult r = quantize_model(m, o, make_samples(4, 12, 61), {}, nullptr, nullptr, pool);
    std::vector<const MethodEvent*> qat;
    int64_t trained = 0;
    for (const MethodEvent& e : r.events) {
      if (e.step != "qat-block") continue;
      qat.push_back(&e);
      // value 1: the trained layer, whose error is below the start's; 0: the start kept.
      EXPECT_EQ(e.value == 1.0, e.error_after < e.error_before) << e.layer;
      EXPECT_GT(e.error_before, 0.0);
      trained += e.value == 1.0 ? 1 : 0;
    }
    EXPECT_GE(trained, 1);
    EXPECT_EQ(qat.size(), 2u);
    for (size_t l = 0; l < qat.size(); ++l) EXPECT_EQ(qat[l]->layer, static_cast<int64_t>(l));
    std::vector<std::byte> bytes;
    for (const auto& layer : m.layers)
      for (const auto role : model::kLayerLinearRoles) {
        const auto& q = layer.linear(role).quantized();
        bytes.insert(bytes.end(), q.bytes.begin(), q.bytes.end());
      }
    return bytes;
  };
  EXPECT_EQ(run(1), run(2));

  ThreadPool pool(2);
  model::Model m = load_tiny_model(testing::temp_dir("qat_pipeline_err"), {.tied = true, .layers = 1}, pool);
  ModelQuantizeOptions o{.format = &format_by_name("int3-g32-asym"),
                         .recipe = quant::parse_method_chain("qat-block")};
  std::string e = error_of([&] { quantize_model(m, o, {}, {}, nullptr, nullptr, pool); });
  EXPECT_NE(e.find("needs calibration samples"), std::string::npos) << e;
  e = error_of([&] { quantize_model(m, o, make_samples(2, 8, 61), {.true_sequential = false}, nullptr, nullptr, pool); });
  EXPECT_NE(e.find("needs true-sequential calibration"), std::string::npos) << e;
}

// gptq+qat-block+qat-e2e through the pipeline: qat-e2e runs once, last (event layer −1 after the
// layers' qat-block events), both report every optimizer step through on_training and carry their
// loss curve in their events; the same bytes for 1 and 2 threads. Without samples it is an Error
// before any work.
TEST(ModelQuantize, ModelReconstructionAfterTheLayerPass) {
  const auto run = [](size_t threads) {
    ThreadPool pool(threads);
    model::Model m = load_tiny_model(testing::temp_dir("qat_e2e_pipeline"), {.tied = true, .layers = 2}, pool);
    const nlohmann::json steps = nlohmann::json::parse(
        R"([{"method": "gptq"}, {"method": "qat-block", "epochs": 2, "batch": 4, "lr_weights": 2e-3, "lr_quant": 2e-3},
            {"method": "qat-e2e", "epochs": 3, "lr": 5e-3, "batch": 2}])");
    ModelQuantizeOptions o{.format = &format_by_name("int3-g32-asym"),
                           .recipe = quant::recipe_from_json(steps, "test")};
    o.rules.push_back(parse_tensor_rule("ffn_down=int3-pc-asym"));  // rows of 48
    std::vector<std::pair<std::string, int64_t>> progress;  // (step, done)
    o.on_training = [&](const quant::TrainingProgress& p) {
      EXPECT_GT(p.total, 0);
      EXPECT_TRUE(std::isfinite(p.loss) && p.eta_seconds >= 0);
      progress.emplace_back(std::string(p.step), p.done);
    };
    const ModelQuantizeResult r = quantize_model(m, o, make_samples(4, 12, 61), {}, nullptr, nullptr, pool);
    EXPECT_FALSE(r.events.empty());
    const MethodEvent& last = r.events.back();
    EXPECT_EQ(last.step, "qat-e2e");
    EXPECT_EQ(last.layer, -1);
    EXPECT_EQ(last.curve.size(), 6u);  // 3 epochs of 2 steps
    EXPECT_EQ(last.value == 1.0, last.error_after < last.error_before);
    int64_t block_steps = 0, e2e_steps = 0;
    for (const auto& [step, done] : progress) (step == "qat-e2e" ? e2e_steps : block_steps) += 1;
    EXPECT_EQ(e2e_steps, 6);
    EXPECT_EQ(block_steps, 2 * 2);  // 2 layers × 2 epochs of 1 step (4 samples, batch 4)
    for (const MethodEvent& e : r.events) {
      if (e.step == "qat-block") {
        EXPECT_FALSE(e.curve.empty()) << e.layer;
      }
    }
    std::vector<std::byte> bytes;
    for (const auto& layer : m.layers)
      for (const auto role : model::kLayerLinearRoles) {
        const auto& q = layer.linear(role).quantized();
        bytes.insert(bytes.end(), q.bytes.begin(), q.bytes.end());
      }
    return bytes;
  };
  EXPECT_EQ(run(1), run(2));

  ThreadPool pool(2);
  model::Model m = load_tiny_model(testing::temp_dir("qat_e2e_pipeline_err"), {.tied = true, .layers = 1}, pool);
  ModelQuantizeOptions o{.format = &format_by_name("int3-g32-asym"), .recipe = quant::parse_method_chain("qat-e2e")};
  const std::string e = error_of([&] { quantize_model(m, o, {}, {}, nullptr, nullptr, pool); });
  EXPECT_NE(e.find("qat-e2e trains on calibration samples"), std::string::npos) << e;
}

}  // namespace
}  // namespace calq::pipeline

namespace calq::pipeline {
namespace {

// A format outside the registry with no fake-quantization path (every registered format has one:
// grad/fake_quant_test.cpp), as a rule could give a linear.
class NoFakeQuantFormat final : public RowFormat {
 public:
  const FormatTraits& traits() const override { return traits_; }

 protected:
  void quantize_row(const float*, int64_t, const float*, std::byte*) const override {}
  void dequantize_row(const std::byte*, int64_t, float*) const override {}

 private:
  FormatTraits traits_{.name = "odd8", .family = "odd", .block_size = 1, .block_bytes = 1};
};

// A training step with such a format is refused when the plan is made, before any calibration;
// without a training step the plan takes it.
TEST(ModelPlan, TrainingNeedsAFakeQuantPathForEveryQuantizedLinear) {
  ThreadPool pool(1);
  const model::Model m = model::testutil::load_tiny_model(testing::temp_dir("plan_fq"), {.layers = 1}, pool);
  const NoFakeQuantFormat odd;
  for (const std::string chain : {"gptq+qat-block", "gptq+qat-e2e"}) {
    ModelQuantizeOptions o{.format = &format_by_name("int4-g32-asym"), .recipe = quant::parse_method_chain(chain)};
    o.rules.push_back(parse_tensor_rule("attn_v=q8_0"));
    o.rules.back().text = "attn_v=odd8";
    o.rules.back().format = &odd;
    ErrorKind kind{};
    const std::string e = calq::testing::error_of([&] { plan_model_quantization(m, o); }, &kind);
    EXPECT_EQ(kind, ErrorKind::kUnsupported) << e;
    EXPECT_NE(e.find(chain.substr(5) + ": tensor blk.0.attn_v.weight: format odd8 has no fake-quantization path"),
              std::string::npos)
        << e;
    o.recipe = quant::parse_method_chain("gptq");
    const std::vector<TensorAssignment> plan = plan_model_quantization(m, o);
    EXPECT_TRUE(std::any_of(plan.begin(), plan.end(), [&](const TensorAssignment& a) { return a.format == &odd; }));
  }
}

// A layer transform is refused before any work with a non-int layer format or a training step
// after it.
TEST(ModelPlan, FlatQuantNeedsIntFormatsAndNoTrainingAfterIt) {
  ThreadPool pool(1);
  const model::Model m = model::testutil::load_tiny_model(testing::temp_dir("plan_fq2"), {.layers = 1}, pool);
  ModelQuantizeOptions o{.format = &format_by_name("int4-pc-asym"),
                         .recipe = quant::parse_method_chain("flatquant+gptq")};
  EXPECT_EQ(plan_model_quantization(m, o).size(), 1u + 7u);
  for (const std::string chain : {"flatquant+gptq+qat-block", "flatquant+autoround", "flatquant+qat-e2e"}) {
    o.recipe = quant::parse_method_chain(chain);
    ErrorKind kind{};
    const std::string e = calq::testing::error_of([&] { plan_model_quantization(m, o); }, &kind);
    EXPECT_EQ(kind, ErrorKind::kUnsupported) << e;
    EXPECT_NE(e.find("flatquant leaves online input transforms, which " + chain.substr(chain.rfind('+') + 1)),
              std::string::npos)
        << e;
  }
  o.recipe = quant::parse_method_chain("flatquant+gptq");
  o.rules.push_back(parse_tensor_rule("attn_v=f16"));
  const std::string e = calq::testing::error_of([&] { plan_model_quantization(m, o); });
  EXPECT_NE(e.find("flatquant: tensor blk.0.attn_v.weight: format f16 is not an int format"), std::string::npos) << e;
}

// Integer activations with a weight whose codes are not integers are refused when the plan is
// made, whichever way the scheme is given; float weights and no scheme are accepted.
TEST(ModelPlan, IntegerActivationsNeedIntegerWeightCodes) {
  ThreadPool pool(1);
  const model::Model m = model::testutil::load_tiny_model(testing::temp_dir("plan_act"), {.layers = 1}, pool);
  const size_t tensors = 1 + 7;  // the (tied) embedding and one layer's linears
  for (const std::string format : {"fp8-e4m3", "mxfp4"}) {
    ModelQuantizeOptions o{.format = &format_by_name("int4-g32-asym"), .act = ActivationScheme::kInt4PerToken};
    o.rules.push_back(parse_tensor_rule("attn_v=" + format));
    ErrorKind kind{};
    std::string e = calq::testing::error_of([&] { plan_model_quantization(m, o); }, &kind);
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument) << e;
    EXPECT_NE(e.find("activation scheme int4-token: tensor blk.0.attn_v.weight has format " + format), std::string::npos)
        << e;
    o.act = ActivationScheme::kNone;
    o.recipe = quant::parse_method_chain("gptq+int8-token");
    e = calq::testing::error_of([&] { plan_model_quantization(m, o); });
    EXPECT_NE(e.find("activation scheme int8-token: tensor blk.0.attn_v.weight"), std::string::npos) << e;
    o.recipe = quant::parse_method_chain("gptq");
    EXPECT_EQ(plan_model_quantization(m, o).size(), tensors);
  }
  for (const std::string format : {"f16", "f32", "q8_0", "int8-pc-sym"}) {
    ModelQuantizeOptions o{.format = &format_by_name("int4-g32-asym"), .act = ActivationScheme::kInt4PerToken};
    o.rules.push_back(parse_tensor_rule("attn_v=" + format));
    EXPECT_EQ(plan_model_quantization(m, o).size(), tensors) << format;
  }
}

// A model with online input transforms (model/site_transform.h) calibrates and quantizes like any
// other: the statistics are those of the transformed inputs the stored weights multiply (layer 0's
// attn_in input is exactly the norm output times T, whatever produced it), and GPTQ on the folded
// weights loses about as much as on the plain model (the transforms here are random, not trained).
TEST(ModelQuantize, ModelWithOnlineTransforms) {
  ThreadPool pool(2);
  const model::Model plain = load_tiny_model(testing::temp_dir("mq_kron"), {.layers = 2}, pool);
  model::Model transformed = plain;
  std::mt19937 gen(5);
  for (int64_t l = 0; l < plain.config.num_layers; ++l) {
    for (const model::InputSite site : {model::InputSite::kAttnIn, model::InputSite::kAttnOut,
                                        model::InputSite::kMlpIn, model::InputSite::kMlpDown}) {
      const int64_t width = model::site_width(*model::find_site(model::block_topology(plain.config), site), plain.config);
      const model::KronShape s = model::kron_factors(width);
      const auto factor = [&](int64_t n) {
        Tensor f = Tensor::zeros(DType::kF32, {n, n});
        std::normal_distribution<float> d(0.0f, 0.3f / std::sqrt(static_cast<float>(n)));
        for (int64_t i = 0; i < n * n; ++i) f.mutable_f32()[i] = d(gen) + (i % (n + 1) == 0 ? 1.0f : 0.0f);
        return f;
      };
      model::set_site_transform(transformed, l, site, model::KronTransform::make(factor(s.n1), factor(s.n2), "t"),
                                pool);
    }
  }
  const auto samples = make_samples(4, 16, plain.config.vocab_size);

  // Statistics: Σx² of layer 0's attn_in over the samples — the plain model's norm output (from
  // its hook) times T, by hand.
  model::Model stats_plain = plain, stats_t = transformed;
  const SequentialResult rp = run_layer_sequential(stats_plain, samples, {}, nullptr, pool);
  const SequentialResult rt = run_layer_sequential(stats_t, samples, {}, nullptr, pool);
  const calib::SiteStats* sp = rp.stats.find(0, model::InputSite::kAttnIn);
  const calib::SiteStats* st = rt.stats.find(0, model::InputSite::kAttnIn);
  ASSERT_NE(sp, nullptr);
  ASSERT_NE(st, nullptr);
  const int64_t hs = plain.config.hidden_size;
  std::vector<double> want(static_cast<size_t>(hs), 0.0);
  for (const auto& sample : samples) {
    std::vector<float> x;
    const model::LinearHook capture = [&](const model::LinearInput& in) {
      if (in.layer == 0 && in.role == model::TensorRole::kAttnQ) x.assign(in.x, in.x + in.rows * in.cols);
    };
    model::forward(plain, sample, pool, &capture);
    const auto rows = static_cast<int64_t>(sample.size());
    transformed.layers[0].transform(model::InputSite::kAttnIn)->apply_rows(x.data(), rows, pool);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < hs; ++c) {
        const auto v = static_cast<double>(x[static_cast<size_t>(r * hs + c)]);
        want[static_cast<size_t>(c)] += v * v;
      }
    }
  }
  double max_rel = 0, moved = 0;
  for (size_t c = 0; c < want.size(); ++c) {
    max_rel = std::max(max_rel, std::fabs(st->sum_sq()[c] - want[c]) / want[c]);
    moved = std::max(moved, std::fabs(sp->sum_sq()[c] - want[c]) / want[c]);
  }
  EXPECT_LT(max_rel, 1e-12);  // the same float rows, summed in double
  EXPECT_GT(moved, 1e-2);     // and not the untransformed statistics

  // GPTQ after the fold.
  const auto ids = test_token_ids(40, plain.config.vocab_size);
  const Tensor ref = model::forward(plain, ids, pool);
  const auto quantized_error = [&](model::Model m) {
    // Per-channel: the tiny model's 48 intermediate columns fit no 32-wide group.
    const ModelQuantizeOptions o{.format = &format_by_name("int4-pc-asym"),
                                 .recipe = quant::parse_method_chain("gptq")};
    quantize_model(m, o, samples, {}, nullptr, nullptr, pool);
    EXPECT_TRUE(m.layers[1].w_down.is_quantized());
    const Tensor out = model::forward(m, ids, pool);
    double max_abs = 0, max_diff = 0;
    for (int64_t i = 0; i < out.numel(); ++i) {
      EXPECT_TRUE(std::isfinite(out.f32()[i]));
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(ref.f32()[i])));
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(out.f32()[i]) - ref.f32()[i]));
    }
    return max_diff / max_abs;
  };
  const double err_plain = quantized_error(plain);
  const double err_t = quantized_error(transformed);
  std::printf("gptq int4-pc-asym: max |Δlogit| / max |logit| plain %.4f, with transforms %.4f\n", err_plain, err_t);
  EXPECT_GT(err_t, 1e-4);
  EXPECT_LT(err_t, 2.0 * err_plain);

  // Single tensors do not move between a transformed and a plain model.
  const std::string e = error_of([&] { check_same_layout(plain, transformed); });
  EXPECT_NE(e.find("blk.0.calq_kron.attn_in"), std::string::npos) << e;
}

}  // namespace
}  // namespace calq::pipeline
