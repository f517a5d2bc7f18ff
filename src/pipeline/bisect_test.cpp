// Bisection: the group-testing search on synthetic oracles (one culprit anywhere among n: found in
// ≤ 2·log2(n) + 2 evaluations; several culprits: a 1-minimal set), and on models — a damaged tensor
// planted into an otherwise good quantization is found, by name, within the bound.
#include "pipeline/bisect.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "model/tiny_model_testutil.h"
#include "pipeline/model_quantize.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

using model::testutil::load_tiny_model;
using model::testutil::test_token_ids;

// KLD = floor + Σ damage of the culprits not restored.
std::function<double(std::span<const size_t>)> additive(std::vector<std::pair<size_t, double>> culprits,
                                                        double floor = 0.001) {
  return [culprits, floor](std::span<const size_t> restored) {
    double k = floor;
    for (const auto& [i, d] : culprits) {
      if (std::find(restored.begin(), restored.end(), i) == restored.end()) k += d;
    }
    return k;
  };
}

double bound(size_t n) { return 2.0 * std::log2(static_cast<double>(n)) + 2.0; }

TEST(BisectSearch, OneCulpritAnywhereWithinTheBound) {
  for (size_t n = 1; n <= 70; ++n) {
    for (size_t p = 0; p < n; ++p) {
      const BisectSearchResult r = find_restore_set(n, additive({{p, 1.0}}), {});
      ASSERT_TRUE(r.found) << n << " " << p;
      ASSERT_EQ(r.set, std::vector<size_t>{p}) << n << " " << p;
      EXPECT_LE(static_cast<double>(r.evaluations), bound(n)) << n << " " << p;
      EXPECT_LE(r.evaluations, static_cast<int64_t>(std::ceil(std::log2(static_cast<double>(n)))) + 2);
      EXPECT_EQ(r.evaluations, static_cast<int64_t>(r.steps.size()));
      EXPECT_DOUBLE_EQ(r.kld_q, 1.001);
      EXPECT_DOUBLE_EQ(r.goal, 0.5005);  // default tolerance: half of KLD(Q)
      EXPECT_DOUBLE_EQ(r.kld, 0.001);
    }
  }
}

TEST(BisectSearch, SeveralCulpritsGiveAMinimalSet) {
  // Two equal culprits: neither alone reaches the goal (tolerance 0.5), both together do.
  for (const auto& [a, b] : {std::pair<size_t, size_t>{0, 1}, {3, 17}, {12, 30}, {5, 6}, {0, 31}}) {
    const BisectSearchResult r = find_restore_set(32, additive({{a, 1.0}, {b, 1.0}}), {.tolerance = 0.5});
    ASSERT_TRUE(r.found);
    EXPECT_EQ(r.set, (std::vector<size_t>{a, b}));
    EXPECT_LE(r.kld, 0.5);
    EXPECT_LT(r.evaluations, 32);  // far fewer than one at a time
  }
  // A small third defect within tolerance is left alone.
  const BisectSearchResult r = find_restore_set(40, additive({{4, 1.0}, {20, 2.0}, {33, 0.1}}), {.tolerance = 0.2});
  EXPECT_EQ(r.set, (std::vector<size_t>{4, 20}));
  // --target: restore until within 0.05 of a known-good level of 0.1 — all three go.
  const BisectSearchResult t =
      find_restore_set(40, additive({{4, 1.0}, {20, 2.0}, {33, 0.1}}), {.target = 0.0, .tolerance = 0.05});
  EXPECT_EQ(t.set, (std::vector<size_t>{4, 20, 33}));
}

TEST(BisectSearch, EdgeCasesAndErrors) {
  const BisectSearchResult good = find_restore_set(10, additive({}, 0.01), {.tolerance = 0.1});
  EXPECT_TRUE(good.found);
  EXPECT_TRUE(good.set.empty());
  EXPECT_EQ(good.evaluations, 1);
  const BisectSearchResult hopeless = find_restore_set(8, [](std::span<const size_t>) { return 5.0; }, {.tolerance = 1.0});
  EXPECT_FALSE(hopeless.found);
  EXPECT_EQ(hopeless.set.size(), 8u);
  EXPECT_NE(testing::error_of([] { find_restore_set(4, additive({}), {.tolerance = 0.0}); }).find("bisect tolerance"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] { find_restore_set(4, additive({}), {.tolerance = -1.0}); }).find("bisect tolerance"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] { find_restore_set(0, additive({}), {}); }).find("no candidate"), std::string::npos);
}

// A good quantization (int8 per channel everywhere) with one tensor damaged: 2 bits with a scale
// four times too large (the weights encoded as 4·W).
model::Model plant_damage(const model::Model& good, const std::string& name, ThreadPool& pool) {
  model::Model bad = good;
  for (const WeightRef& r : weight_refs(good)) {
    if (r.name != name) continue;
    const Tensor w = weight_at(good, r).to_dense(pool);
    std::vector<float> scaled(w.f32(), w.f32() + w.numel());
    for (float& v : scaled) v *= 4.0f;
    set_weight(bad, r,
               QuantizedTensor::quantize(pool, format_by_name("int2-pc-asym"), scaled.data(), w.dim(0), w.dim(1)));
    return bad;
  }
  throw std::runtime_error("no tensor " + name);
}

TEST(Bisect, FindsAPlantedDamagedTensorInATinyModel) {
  ThreadPool pool(2);
  const model::testutil::TinyModelOptions opts{.tied = true, .layers = 4};
  const model::Model fp = load_tiny_model(testing::temp_dir("bisect_fp"), opts, pool);
  model::Model good = load_tiny_model(testing::temp_dir("bisect_q"), opts, pool);
  quantize_model(good, {.format = &format_by_name("int8-pc-sym")}, {}, {}, nullptr, nullptr, pool);
  KldEvaluator ev(fp, test_token_ids(32 * 4, fp.config.vocab_size), {.ctx = 32}, pool);
  for (const std::string culprit : {"blk.2.ffn_down.weight", "blk.0.attn_q.weight", "blk.3.ffn_up.weight"}) {
    const model::Model bad = plant_damage(good, culprit, pool);
    std::vector<std::string> seen;
    const BisectResult r = bisect_restore(bad, fp, {.on_step = [&](const BisectStep& s) {
                                                      seen.push_back(std::to_string(s.restored.size()));
                                                    }},
                                          ev);
    ASSERT_EQ(r.candidates.size(), 4u * 7u + 1u);  // tied embedding/head is one tensor
    ASSERT_TRUE(r.search.found) << culprit;
    ASSERT_EQ(r.restored.size(), 1u) << culprit;
    EXPECT_EQ(r.restored[0].name, culprit);
    EXPECT_LE(static_cast<double>(r.search.evaluations), bound(r.candidates.size())) << culprit;
    EXPECT_EQ(seen.size(), static_cast<size_t>(r.search.evaluations));
    EXPECT_GT(r.search.kld_q, 10 * ev.evaluate(good));
    EXPECT_LE(r.search.kld, r.search.goal);
  }
  // Restoring to a higher-precision format instead of FP: the donor is FP requantized.
  model::Model q8 = load_tiny_model(testing::temp_dir("bisect_r"), opts, pool);
  quantize_model(q8, {.format = &format_by_name("int8-pc-sym"), .head_format = &format_by_name("int8-pc-sym")}, {}, {},
                 nullptr, nullptr, pool);
  const model::Model bad = plant_damage(good, "blk.1.attn_output.weight", pool);
  const BisectResult r = bisect_restore(bad, q8, {}, ev);
  ASSERT_EQ(r.restored.size(), 1u);
  EXPECT_EQ(r.restored[0].name, "blk.1.attn_output.weight");
  // Only the damaged tensor and the head differ from the int8 donor (the pipeline's head is q8_0 / f16).
  EXPECT_LE(r.candidates.size(), 2u);
}

TEST(Bisect, FindsAPlantedDamagedTensorInTheReferenceModel) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  ThreadPool pool(0);
  const auto dir = testing::shared_dir() / "models/calq-ref-llama";
  const model::Model fp = model::load_hf_model(dir, pool);
  model::Model good = model::load_hf_model(dir, pool);
  quantize_model(good, {.format = &format_by_name("q8_0")}, {}, {}, nullptr, nullptr, pool);
  const model::Model bad = plant_damage(good, "blk.3.attn_v.weight", pool);
  // Token ids spread over the vocabulary: any text gives the same ranking of so large a defect.
  KldEvaluator ev(fp, test_token_ids(64 * 2, fp.config.vocab_size), {.ctx = 64}, pool);
  const BisectResult r = bisect_restore(bad, fp, {}, ev);
  ASSERT_EQ(r.candidates.size(), 6u * 7u + 1u);
  ASSERT_EQ(r.restored.size(), 1u);
  EXPECT_EQ(r.restored[0].name, "blk.3.attn_v.weight");
  EXPECT_LE(static_cast<double>(r.search.evaluations), bound(r.candidates.size()));
  std::printf("reference model: KLD(Q) %.4g, after restoring %s %.4g, %lld evaluations\n", r.search.kld_q,
              r.restored[0].name.c_str(), r.search.kld, static_cast<long long>(r.search.evaluations));
}

}  // namespace
}  // namespace calq::pipeline
