// The KLD evaluator (agrees with eval::compare_models, same bits for any thread count and cache
// size), tensor swapping, and the sensitivity map on tiny models: more bits cost less, bytes are
// the format's, the JSON round-trips and the heat-map has a cell per tensor.
#include "pipeline/sensitivity.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/compare.h"
#include "model/tiny_model_testutil.h"
#include "pipeline/model_quantize.h"
#include "pipeline/sensitivity_report.h"
#include "pipeline/tensor_swap.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

using model::testutil::load_tiny_model;
using model::testutil::test_token_ids;

model::Model quantized_copy(const model::testutil::TinyModelOptions& o, const char* format, ThreadPool& pool) {
  model::Model m = load_tiny_model(testing::temp_dir("sens_q"), o, pool);
  // The head too, in the same format: its sensitivity is then measured in that format.
  quantize_model(m, {.format = &format_by_name(format), .head_format = &format_by_name(format)}, {}, {}, nullptr,
                 nullptr, pool);
  return m;
}

TEST(TensorSwap, RefsHybridsAndLayoutChecks) {
  ThreadPool pool(2);
  const model::Model tied = load_tiny_model(testing::temp_dir("swap_t"), {.tied = true, .layers = 2}, pool);
  const model::Model untied = load_tiny_model(testing::temp_dir("swap_u"), {.tied = false, .layers = 2}, pool);
  const std::vector<WeightRef> refs = weight_refs(untied);
  ASSERT_EQ(refs.size(), 2u * 7u + 2u);
  EXPECT_EQ(refs.front().name, "token_embd.weight");
  EXPECT_EQ(refs[1].name, "blk.0.attn_q.weight");
  EXPECT_EQ(refs[4].short_role, "attn_output");
  EXPECT_EQ(refs.back().name, "output.weight");
  EXPECT_EQ(weight_refs(tied).size(), 2u * 7u + 1u);

  const model::Model q = quantized_copy({.tied = true, .layers = 2}, "int8-pc-sym", pool);
  const std::vector<WeightRef> tr = weight_refs(tied);
  const model::Model h = hybrid_model(tied, q, std::span(tr).subspan(0, 2));  // embedding (tied) + blk.0.attn_q
  EXPECT_TRUE(h.embedding.is_quantized());
  EXPECT_TRUE(h.output.same_storage(h.embedding));  // still tied
  EXPECT_TRUE(h.layers[0].wq.is_quantized());
  EXPECT_FALSE(h.layers[0].wk.is_quantized());
  EXPECT_FALSE(tied.layers[0].wq.is_quantized());  // the base is untouched

  const std::string e = testing::error_of([&] { check_same_layout(tied, untied); });
  EXPECT_NE(e.find("tied"), std::string::npos) << e;
  const model::Model deeper = load_tiny_model(testing::temp_dir("swap_d"), {.tied = true, .layers = 3}, pool);
  EXPECT_NE(testing::error_of([&] { check_same_layout(tied, deeper); }).find("layers"), std::string::npos);
  // Scales folded into a norm (as awq/smoothquant do) make single weights incompatible.
  model::Model folded = tied;
  Tensor norm = folded.layers[1].mlp_norm.to_f32();
  norm.mutable_f32()[3] *= 2.0f;
  folded.layers[1].mlp_norm = norm;
  const std::string n = testing::error_of([&] { check_same_layout(tied, folded); });
  EXPECT_NE(n.find("blk.1.ffn_norm"), std::string::npos) << n;
  EXPECT_EQ(testing::error_of([&] { check_same_layout(tied, q); }), "");  // quantized weights, same norms
}

TEST(KldEvaluator, MatchesCompareModelsAndIsDeterministic) {
  ThreadPool pool(3);
  const model::Model fp = load_tiny_model(testing::temp_dir("kld_fp"), {.tied = false, .layers = 2}, pool);
  const model::Model q4 = quantized_copy({.tied = false, .layers = 2}, "int4-pc-asym", pool);
  const model::Model q8 = quantized_copy({.tied = false, .layers = 2}, "int8-pc-sym", pool);
  const std::vector<int32_t> ids = test_token_ids(16 * 5 + 3, fp.config.vocab_size);
  KldEvaluator ev(fp, ids, {.ctx = 16}, pool);
  EXPECT_EQ(ev.n_windows(), 5);
  const model::Model* both[] = {&q4, &q8, &fp};
  const std::vector<double> k = ev.evaluate(both);
  const model::Model* one[] = {&q4};
  const eval::CompareReport ref = eval::compare_models(fp, one, ids, {.ctx = 16}, pool);
  EXPECT_NEAR(k[0], ref.candidates[0].kld_mean, 1e-12 * (1 + k[0]));
  EXPECT_GT(k[0], k[1]);  // 4 bits hurt more than 8
  EXPECT_GT(k[1], 0.0);
  EXPECT_EQ(k[2], 0.0);   // the reference against itself

  // One thread, no cache (reference recomputed per chunk of one window), fewer windows.
  ThreadPool single(1);
  KldEvaluator ev1(fp, ids, {.ctx = 16, .cache_bytes = 0}, single);
  EXPECT_EQ(ev1.evaluate(both), k);
  KldEvaluator ev2(fp, ids, {.ctx = 16, .max_windows = 2}, pool);
  EXPECT_EQ(ev2.n_windows(), 2);
  EXPECT_NE(ev2.evaluate(q4), k[0]);

  EXPECT_NE(testing::error_of([&] { KldEvaluator(fp, test_token_ids(10, 61), {.ctx = 16}, pool); }).find("fewer than one window"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { KldEvaluator(fp, ids, {.ctx = 1}, pool); }).find("ctx must be at least 2"), std::string::npos);
}

TEST(Sensitivity, TensorAndLayerMaps) {
  ThreadPool pool(2);
  const model::testutil::TinyModelOptions opts{.tied = false, .layers = 2};
  const model::Model fp = load_tiny_model(testing::temp_dir("sens_fp"), opts, pool);
  const model::Model q2 = quantized_copy(opts, "int2-pc-asym", pool);
  const model::Model q8 = quantized_copy(opts, "int8-pc-sym", pool);
  KldEvaluator ev(fp, test_token_ids(16 * 4, fp.config.vocab_size), {.ctx = 16}, pool);
  const QuantizedVariant variants[] = {{&format_by_name("int2-pc-asym"), &q2}, {&format_by_name("int8-pc-sym"), &q8}};

  const SensitivityMap map = measure_sensitivity(fp, variants, {}, ev);
  ASSERT_EQ(map.entries.size(), 2u * 7u + 2u);
  EXPECT_EQ(map.formats, (std::vector<std::string>{"int2-pc-asym", "int8-pc-sym"}));
  EXPECT_EQ(map.evaluations, 2 * 16);
  EXPECT_EQ(map.windows, 4);
  double sum2 = 0, sum8 = 0;
  int more_for_two_bits = 0;
  for (const SensitivityEntry& e : map.entries) {
    ASSERT_EQ(e.kld.size(), 2u);
    sum2 += e.kld[0];
    sum8 += e.kld[1];
    more_for_two_bits += e.kld[0] > e.kld[1] ? 1 : 0;
    const WeightRef* ref = nullptr;
    const std::vector<WeightRef> refs = weight_refs(fp);
    for (const auto& r : refs) ref = r.name == e.tensor ? &r : ref;
    ASSERT_NE(ref, nullptr) << e.tensor;
    const model::LinearWeight& w = weight_at(fp, *ref);
    EXPECT_EQ(e.params, w.numel());
    EXPECT_EQ(e.bytes[0], format_by_name("int2-pc-asym").tensor_bytes(w.rows(), w.cols()));
    EXPECT_EQ(e.bytes[1], format_by_name("int8-pc-sym").tensor_bytes(w.rows(), w.cols()));
    EXPECT_EQ(e.stored_as[1], "int8-pc-sym");
  }
  EXPECT_GT(sum2, 20 * sum8);
  EXPECT_EQ(more_for_two_bits, static_cast<int>(map.entries.size()));
  // An entry is exactly the evaluator's KLD of the hybrid with that one tensor swapped.
  const SensitivityEntry& v1 = map.entries[1 + 7 + 2];
  EXPECT_EQ(v1.tensor, "blk.1.attn_v.weight");
  EXPECT_EQ(v1.role, "attn_v");
  EXPECT_EQ(v1.layer, 1);
  const std::vector<WeightRef> refs = weight_refs(fp);
  EXPECT_EQ(v1.kld[0], ev.evaluate(hybrid_model(fp, q2, std::span(refs).subspan(10, 1))));

  const SensitivityMap layers = measure_sensitivity(fp, variants, {.granularity = Granularity::kLayer}, ev);
  ASSERT_EQ(layers.entries.size(), 2u + 2u);
  EXPECT_EQ(layers.entries[1].tensor, "blk.0");
  EXPECT_EQ(layers.entries[1].role, "layer");
  EXPECT_EQ(layers.entries[1].params, fp.layers[0].wq.numel() * 2 + fp.layers[0].wk.numel() * 2 +
                                           fp.layers[0].w_gate.numel() * 3);
  EXPECT_EQ(layers.entries.back().tensor, "output.weight");
  const SensitivityMap no_head = measure_sensitivity(fp, variants, {.granularity = Granularity::kLayer, .include_head = false}, ev);
  EXPECT_EQ(no_head.entries.size(), 2u);

  // Reports: JSON round trip, table ranks, heat-map cells.
  const nlohmann::ordered_json j = sensitivity_json(map, {.model = "m", .eval_text = "t", .method = "rtn"});
  EXPECT_EQ(j["granularity"], "tensor");
  EXPECT_EQ(j["entries"][10]["tensor"], "blk.1.attn_v.weight");
  EXPECT_EQ(j["entries"][10]["kld"]["int2-pc-asym"].get<double>(), v1.kld[0]);
  const SensitivityMap back = sensitivity_from_json(nlohmann::json::parse(j.dump()), "j");
  ASSERT_EQ(back.entries.size(), map.entries.size());
  EXPECT_EQ(back.entries[10].kld, v1.kld);
  EXPECT_EQ(back.entries[10].bytes, v1.bytes);
  EXPECT_NE(testing::error_of([] { sensitivity_from_json(nlohmann::json::parse("{\"granularity\": \"tensor\"}"), "x.json"); })
                .find("x.json"),
            std::string::npos);
  const std::string table = sensitivity_table(map);
  EXPECT_NE(table.find("kld int8-pc-sym"), std::string::npos);
  const std::string svg = sensitivity_svg(map, 0, "calq sensitivity: int2-pc-asym");
  size_t cells = 0;
  for (size_t p = svg.find("<title>blk."); p != std::string::npos; p = svg.find("<title>blk.", p + 1)) ++cells;
  EXPECT_EQ(cells, 14u);
  EXPECT_NE(svg.find("calq sensitivity: int2-pc-asym"), std::string::npos);
  EXPECT_NE(svg.find(">ffn_down</text>"), std::string::npos);
  EXPECT_NE(svg.find("linearGradient"), std::string::npos);
  EXPECT_EQ(svg.rfind("</svg>\n"), svg.size() - 7);
}

}  // namespace
}  // namespace calq::pipeline
