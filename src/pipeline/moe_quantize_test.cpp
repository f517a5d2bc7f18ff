// Mixture-of-experts models through the quantization pipeline: the plan names every expert,
// calibration gathers statistics per expert with the router's token counts ("natural" and "all
// experts"), the weight quantizer runs per expert (GPTQ on each expert's Hessian), rarely routed
// experts fall back to RTN under "rtn-fallback", the statistics file keeps it all, training
// steps are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "calib/collectors.h"
#include "core/error.h"
#include "formats/format.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "pipeline/bit_alloc.h"
#include "pipeline/kld_eval.h"
#include "pipeline/model_quantize.h"
#include "pipeline/sensitivity.h"
#include "pipeline/tensor_swap.h"
#include "pipeline/sequential.h"
#include "quant/method.h"
#include "quant/recipe.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

using calq::testing::error_of;
using model::TensorRole;

std::vector<std::vector<int32_t>> samples(int64_t n, int64_t seq, int64_t vocab) {
  const std::vector<int32_t> ids = model::testutil::test_token_ids(n * seq, vocab);
  std::vector<std::vector<int32_t>> out;
  for (int64_t s = 0; s < n; ++s) out.emplace_back(ids.begin() + s * seq, ids.begin() + (s + 1) * seq);
  return out;
}

model::Model tiny_moe(ThreadPool& pool, const std::string& type = "qwen2_moe") {
  return model::testutil::load_tiny_model(testing::temp_dir("moe_q"), {.model_type = type}, pool);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

TEST(MoePlan, EveryExpertIsPlannedRouterAndGatesStayFloat) {
  ThreadPool pool(2);
  const model::Model m = tiny_moe(pool);
  ModelQuantizeOptions o{.format = &format_by_name("int4-g32-asym")};
  o.rules.push_back(parse_tensor_rule("blk\\.1\\.ffn_down_exps=q8_0"));
  const auto plan = plan_model_quantization(m, o);
  int64_t experts = 0;
  for (const auto& a : plan) {
    EXPECT_NE(a.role, TensorRole::kMoeRouter);
    EXPECT_NE(a.role, TensorRole::kSharedExpertGate);
    if (a.expert < 0) continue;
    ++experts;
    const bool ruled = a.layer == 1 && a.role == TensorRole::kExpertDown;
    EXPECT_EQ(a.format->name(), ruled ? "q8_0" : "int4-g32-asym") << a.name << " expert " << a.expert;
  }
  EXPECT_EQ(experts, 2 * 4 * 3);  // layers x experts x (gate, up, down)
  // A training step does not run on expert layers.
  o.recipe = quant::parse_method_chain("gptq+qat-block");
  o.rules.clear();
  const std::string msg = error_of([&] { plan_model_quantization(m, o); });
  EXPECT_NE(msg.find("qat-block does not run on this 'qwen2_moe' model"), std::string::npos) << msg;
}

TEST(MoeCalibration, ExpertStatisticsFollowTheRouterOrEveryToken) {
  ThreadPool pool(2);
  model::Model m = tiny_moe(pool, "qwen3_moe");
  const auto data = samples(3, 16, m.config.vocab_size);
  const int64_t tokens = 3 * 16;
  SequentialResult natural = run_layer_sequential(m, data, {}, nullptr, pool);
  SequentialResult all = run_layer_sequential(m, data, {.all_experts = true}, nullptr, pool);
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    const std::vector<int64_t>& routed = natural.stats.routed_tokens.at(l);
    ASSERT_EQ(routed.size(), 4u);
    int64_t sum = 0;
    for (int64_t e = 0; e < 4; ++e) {
      sum += routed[static_cast<size_t>(e)];
      const calib::SiteStats* in = natural.stats.find_expert({l, e, model::InputSite::kExpertIn});
      if (routed[static_cast<size_t>(e)] == 0) {
        EXPECT_EQ(in, nullptr);
      } else {
        ASSERT_NE(in, nullptr);
        EXPECT_EQ(in->rows(), routed[static_cast<size_t>(e)]);
      }
      // All experts: every expert saw every token; the router's counts are the natural ones.
      const calib::SiteStats* all_in = all.stats.find_expert({l, e, model::InputSite::kExpertIn});
      ASSERT_NE(all_in, nullptr);
      EXPECT_EQ(all_in->rows(), tokens);
      EXPECT_EQ(all.stats.find_expert({l, e, model::InputSite::kExpertDown})->rows(), tokens);
    }
    EXPECT_EQ(all.stats.routed_tokens.at(l), routed);
    EXPECT_EQ(sum, tokens * m.config.moe->experts_per_token);
    EXPECT_EQ(natural.stats.find_expert({l, -1, model::InputSite::kMoeIn})->rows(), tokens);
  }
  // The statistics file keeps the expert sites and the counts.
  const auto path = testing::temp_dir("moe_stats") / "s.gguf";
  std::filesystem::create_directories(path.parent_path());
  calib::write_stats_file(natural.stats, path);
  const calib::CalibrationStats back = calib::read_stats_file(path);
  EXPECT_TRUE(back == natural.stats);
  std::filesystem::remove_all(path.parent_path());
}

TEST(MoeQuantize, GptqPerExpertIsDeterministicAndBeatsRtn) {
  ThreadPool pool(3), one(1);
  const model::Model fp = tiny_moe(pool);
  const auto data = samples(4, 32, fp.config.vocab_size);
  const auto eval = model::testutil::test_token_ids(48, fp.config.vocab_size);
  const Tensor ref = model::forward(fp, eval, pool);
  const auto run = [&](const char* chain, ExpertPolicy policy, ThreadPool& p, ModelQuantizeResult* out = nullptr) {
    model::Model m = fp;
    ModelQuantizeOptions o{.format = &format_by_name("int3-g32-asym"), .recipe = quant::parse_method_chain(chain),
                           .expert_policy = policy, .expert_min_tokens = 1000000};
    ModelQuantizeResult r = quantize_model(m, o, data, {}, nullptr, nullptr, p);
    if (out != nullptr) *out = std::move(r);
    for (const auto& l : m.layers) {
      EXPECT_FALSE(l.router.is_quantized());
      EXPECT_FALSE(l.shared_expert_gate.is_quantized());
      for (const auto& e : l.experts) EXPECT_EQ(e.w_down.format_name(), "int3-g32-asym");
    }
    return m;
  };
  const auto mse = [&](const model::Model& m) {
    const Tensor q = model::forward(m, eval, pool);
    double s = 0;
    for (int64_t i = 0; i < q.numel(); ++i) s += std::pow(q.f32()[i] - ref.f32()[i], 2);
    return s / static_cast<double>(q.numel());
  };
  ModelQuantizeResult gptq_report;
  const model::Model gptq = run("gptq", ExpertPolicy::kNatural, pool, &gptq_report);
  const model::Model gptq_1 = run("gptq", ExpertPolicy::kNatural, one);
  EXPECT_TRUE(same_bits(gptq.layers[1].experts[2].w_up.to_dense(pool), gptq_1.layers[1].experts[2].w_up.to_dense(pool)));
  EXPECT_TRUE(same_bits(model::forward(gptq, eval, pool), model::forward(gptq_1, eval, pool)));
  bool gptq_on_expert = false;
  for (const auto& e : gptq_report.events) gptq_on_expert = gptq_on_expert || (e.step == "gptq" && e.target.find("(expert") != std::string::npos);
  EXPECT_TRUE(gptq_on_expert);
  const model::Model rtn = run("rtn", ExpertPolicy::kNatural, pool);
  EXPECT_LT(mse(gptq), mse(rtn));
  // rtn-fallback with a threshold above every count: every expert rounds to nearest with the
  // layer's input importance; the events say so; the weights differ from GPTQ's.
  ModelQuantizeResult fb_report;
  const model::Model fb = run("gptq", ExpertPolicy::kRtnFallback, pool, &fb_report);
  int64_t fallbacks = 0;
  for (const auto& e : fb_report.events) {
    fallbacks += e.step == "rtn" && e.target.find("fallback:") != std::string::npos;
    EXPECT_NO_THROW(quant::method_by_name(e.step));  // reports look the event text up by step name
  }
  EXPECT_EQ(fallbacks, 2 * 4 * 3);
  EXPECT_FALSE(same_bits(fb.layers[0].experts[0].w_gate.to_dense(pool), gptq.layers[0].experts[0].w_gate.to_dense(pool)));
}

}  // namespace
}  // namespace calq::pipeline

namespace calq::pipeline {
namespace {

// Sensitivity per expert group: the experts of one layer and role are one entry (one stacked GGUF
// tensor), whose KLD is that of swapping all of them at once.
TEST(MoeSensitivity, ExpertsOfOneRoleAreOneEntry) {
  ThreadPool pool(2);
  const model::Model fp = model::testutil::load_tiny_model(testing::temp_dir("moe_sens"), {.model_type = "mixtral"}, pool);
  model::Model q = fp;
  ModelQuantizeOptions o{.format = &format_by_name("int2-g32-asym")};
  quantize_model(q, o, {}, {}, nullptr, nullptr, pool);
  const std::vector<WeightRef> refs = weight_refs(fp);
  int64_t expert_refs = 0;
  for (const WeightRef& r : refs) expert_refs += r.expert >= 0;
  EXPECT_EQ(expert_refs, 2 * 3 * 4);
  KldEvaluator ev(fp, model::testutil::test_token_ids(16 * 2, fp.config.vocab_size), {.ctx = 16}, pool);
  const QuantizedVariant variants[] = {{&format_by_name("int2-g32-asym"), &q}};
  const SensitivityMap map = measure_sensitivity(fp, variants, {.include_head = false}, ev);
  const SensitivityEntry* down = nullptr;
  for (const SensitivityEntry& e : map.entries) {
    if (e.tensor == "blk.1.ffn_down_exps.weight") down = &e;
  }
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->role, "ffn_down_exps");
  EXPECT_EQ(down->params, 4 * fp.layers[1].experts[0].w_down.numel());
  // Its KLD is the hybrid with every expert's down of layer 1 swapped, not one expert's.
  std::vector<WeightRef> group;
  for (const WeightRef& r : refs) {
    if (r.name == "blk.1.ffn_down_exps.weight") group.push_back(r);
  }
  ASSERT_EQ(group.size(), 4u);
  EXPECT_EQ(down->kld[0], ev.evaluate(hybrid_model(fp, q, group)));
  EXPECT_NE(down->kld[0], ev.evaluate(hybrid_model(fp, q, std::span(group).subspan(0, 1))));
  // 2 layers x (4 attention linears + 3 expert groups).
  EXPECT_EQ(map.entries.size(), 2u * 7u);

  // The allocator spends bits per expert group: one choice per stacked tensor, all its experts'
  // bytes, and the quantized model follows it (every expert of a group in the chosen format).
  const model::Model q8 = [&] {
    model::Model m = fp;
    ModelQuantizeOptions o8{.format = &format_by_name("int8-pc-sym")};
    quantize_model(m, o8, {}, {}, nullptr, nullptr, pool);
    return m;
  }();
  const QuantizedVariant two[] = {{&format_by_name("int2-g32-asym"), &q}, {&format_by_name("int8-pc-sym"), &q8}};
  const SensitivityMap map2 = measure_sensitivity(fp, two, {.include_head = false}, ev);
  const SensitivityFile file = sensitivity_file_from_map(map2, "test", "tiny", "ids", "rtn");
  ModelQuantizeOptions base{.format = &format_by_name("int8-pc-sym")};
  const TargetAllocation alloc = allocate_to_target(
      fp, base, file,
      {.target_bpw = 7.0, .candidates = {&format_by_name("int2-g32-asym"), &format_by_name("int8-pc-sym")},
       .allocate_head = false});
  size_t groups = 0;
  for (const TensorChoice& t : alloc.tensors) {
    if (t.name.find("_exps") == std::string::npos) continue;
    ++groups;
    EXPECT_EQ(t.bytes, 4 * t.format->tensor_bytes(t.rows, t.cols)) << t.name;
  }
  EXPECT_EQ(groups, 6u);
  EXPECT_LE(alloc.predicted_bpw(), 7.0);
  model::Model target = fp;
  ModelQuantizeOptions with_rules = base;
  for (const std::string& rule : alloc.rule_texts()) with_rules.rules.push_back(parse_tensor_rule(rule));
  quantize_model(target, with_rules, {}, {}, nullptr, nullptr, pool);
  for (const TensorChoice& t : alloc.tensors) {
    if (t.name != "blk.0.ffn_up_exps.weight") continue;
    for (const auto& e : target.layers[0].experts) EXPECT_EQ(e.w_up.format_name(), t.format->name());
  }
}

}  // namespace
}  // namespace calq::pipeline
