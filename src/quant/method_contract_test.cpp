// Contract tests run over every registered method (see method.h), with no per-method code: each
// method runs, as a one-step recipe (rtn appended where the recipe rule appends it), on layer 0 of
// a tiny model with statistics from a forward pass, through the hook of its stage —
//  (a) 1 and 2 threads give the same weight bytes and activation specs (default options, and
//      every option changed);
//  (b) a recipe with every option set to a non-default value survives JSON -> Recipe -> JSON ->
//      Recipe, the typed options holding those values;
//  (c) an unknown key, a mistyped value and an out-of-range value are each an Error naming the
//      origin, the method and the key;
//  (d) where the method declares identity options, the recipe writes rtn's weight bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "model/architecture.h"
#include "model/fold.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "quant/method.h"
#include "quant/recipe.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;
using model::TensorRole;

// The tiny model (hidden 32, intermediate 48, 4 query heads sharing 2 key/value heads), loaded once.
const model::Model& tiny_model() {
  static const model::Model m = [] {
    ThreadPool pool(2);
    return model::testutil::load_tiny_model(calq::testing::temp_dir("method_contract"), {.tied = true, .layers = 1},
                                            pool);
  }();
  return m;
}

// A group format where the row length allows (q, k, v, o, gate, up: 32), per channel for down (48).
const Format& format_for(int64_t cols) {
  const Format& g32 = format_by_name("int4-g32-asym");
  return g32.can_store(1, cols) ? g32 : format_by_name("int4-pc-asym");
}

// Statistics of layer 0's input sites, every kind the methods read.
calib::CalibrationStats layer0_stats(const model::Model& m, ThreadPool& pool) {
  calib::CalibrationStats stats(calib::StatSet()
                                    .with(calib::StatKind::kAbsMax)
                                    .with(calib::StatKind::kMeanAbs)
                                    .with(calib::StatKind::kMeanSq)
                                    .with(calib::StatKind::kHessian));
  const model::LinearHook hook = [&](const model::LinearInput& in) {
    if (in.layer != 0) return;
    const model::InputSite site = calib::input_site(in.role);
    if (calib::site_roles(site)[0] == in.role) stats.observe(0, site, in.x, in.rows, in.cols);
  };
  model::forward(m, model::testutil::test_token_ids(48, m.config.vocab_size), pool, &hook);
  return stats;
}

struct Output {
  std::vector<std::byte> weights;      // layer 0's quantized linears, in role order
  std::vector<std::byte> activations;  // their activation specs, when the recipe has a scheme
};

template <class T>
void append(std::vector<std::byte>& out, const T& v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

// Runs `recipe` on layer 0 through each step's stage hook, as the pipeline does.
Output run(const Recipe& recipe, ThreadPool& pool) {
  model::Model m = tiny_model();  // transforms and folds write new tensors, never shared ones
  for (const MethodStep& step : recipe.steps)
    if (step.stage() == MethodStage::kModelTransform) step.method->transform_model(m, step.options, pool);
  const calib::CalibrationStats stats = layer0_stats(m, pool);
  std::map<model::InputSite, InputStats> sites;
  for (const auto site : {model::InputSite::kAttnIn, model::InputSite::kAttnOut, model::InputSite::kMlpIn,
                          model::InputSite::kMlpDown})
    sites.emplace(site, InputStats(stats.find(0, site)));
  model::LayerWeights& w = m.layers[0];
  // Layer 0's streams for a reconstruction step: two samples of 24 tokens, the embedding in, the
  // float layer's output as the target (the float stream's layer 0 sees the same input).
  const int64_t seq = 24, samples = 2, hs = m.config.hidden_size;
  const std::vector<int32_t> ids = model::testutil::test_token_ids(seq * samples, m.config.vocab_size);
  std::vector<float> inputs(static_cast<size_t>(samples * seq * hs)), targets;
  for (int64_t s = 0; s < samples; ++s)
    model::embed_tokens(m, std::span(ids).subspan(static_cast<size_t>(s * seq), static_cast<size_t>(seq)),
                        &inputs[static_cast<size_t>(s * seq * hs)]);
  targets = inputs;
  model::LayerScratch scratch(m.config, seq);
  for (int64_t s = 0; s < samples; ++s)
    model::decoder_layer_forward(m.config, w, 0, &targets[static_cast<size_t>(s * seq * hs)], seq, scratch, pool);
  model::LayerWeights original;
  model::Model teacher;  // the float model before the weight quantizer (model reconstruction)
  Output out;
  for (const MethodStep& step : recipe.steps) {
    switch (step.stage()) {
      case MethodStage::kModelTransform: break;
      case MethodStage::kScaleMigration:
        // o is not a group here: its heads share key/value heads. down before gate (its fold
        // rescales up's rows).
        for (const TensorRole group : {TensorRole::kAttnQ, TensorRole::kMlpDown, TensorRole::kMlpGate}) {
          InputStats& site = sites.at(calib::input_site(group));
          const std::vector<TensorRole> roles = model::input_consumers(group);
          std::vector<const Tensor*> consumers;
          for (const TensorRole r : roles) consumers.push_back(&w.linear(r).dense());
          Migration mg = step.method->migrate({.layer = 0, .group = model::site_name(calib::input_site(group)),
                                               .consumers = consumers, .format = &format_for(site.cols),
                                               .tensor_name = "blk.0", .stats = &site,
                                               .importance = site.mean_sq.data()},
                                              step.options, pool);
          model::fold_input_scales(w, m.config, 0, group, mg.scales);
          for (size_t k = 0; k < mg.weights.size(); ++k) w.linear(roles[k]) = std::move(mg.weights[k]);
          site.divide_inputs(mg.scales);
          if (!mg.importance.empty()) site.mean_sq = mg.importance;
        }
        break;
      case MethodStage::kLayerTransform: {
        // As the pipeline applies it: smoothing folded into the producers, the consumers replaced.
        std::vector<ReconstructionLinear> linears;
        for (const TensorRole role : model::kLayerLinearRoles)
          linears.push_back({.role = role, .format = &format_for(w.linear(role).cols()), .name = "blk.0.weight"});
        const model::BlockTopology& block = model::block_topology(m.config);
        std::vector<TransformSite> ts;
        for (const model::MigrationGroup& mg : model::migration_groups(block, m.config))
          ts.push_back({.site = mg.site->site, .consumers = mg.site->consumers, .foldable = mg.foldable,
                        .stats = &sites.at(mg.site->site)});
        model::ActivationQuant act;
        if (const MethodStep* a = recipe.activation()) act = a->method->activation({.layer = 0}, a->options);
        LayerTransform lt = step.method->transform_layer(
            {.layer = 0, .config = &m.config, .weights = &w, .linears = linears, .sites = ts, .activation = act,
             .samples = samples, .seq_len = seq, .inputs = inputs, .targets = targets},
            step.options, pool);
        for (auto& [role, t] : lt.weights) w.linear(role) = std::move(t);
        for (const SiteTransform& st : lt.sites)
          if (!st.smoothing.empty()) model::fold_into_producer(w, m.config, 0, st.site, st.smoothing);
        break;
      }
      case MethodStage::kLayerReconstruction: {
        std::vector<ReconstructionLinear> linears;
        for (const TensorRole role : model::kLayerLinearRoles)
          linears.push_back({.role = role, .format = &format_for(w.linear(role).cols()), .name = "blk.0.weight"});
        Reconstruction rec = step.method->reconstruct(
            {.layer = 0, .config = &m.config, .original = &original, .quantized = &w, .linears = linears,
             .samples = samples, .seq_len = seq, .inputs = inputs, .targets = targets},
            step.options, pool);
        out.weights.clear();
        for (const TensorRole role : model::kLayerLinearRoles) {
          for (auto& [r, t] : rec.weights)
            if (r == role) w.linear(role) = std::move(t);
          const QuantizedTensor& q = w.linear(role).quantized();
          out.weights.insert(out.weights.end(), q.bytes.begin(), q.bytes.end());
        }
        break;
      }
      case MethodStage::kModelReconstruction: {
        std::vector<ModelReconstructionLinear> linears;
        for (const TensorRole role : model::kLayerLinearRoles)
          linears.push_back({.layer = 0, .role = role, .format = &format_for(w.linear(role).cols()),
                             .name = "blk.0.weight"});
        const std::vector<std::vector<int32_t>> seqs = {
            {ids.begin(), ids.begin() + seq}, {ids.begin() + seq, ids.end()}};
        ModelReconstruction rec = step.method->reconstruct_model(
            {.teacher = &teacher, .quantized = &m, .linears = linears, .samples = seqs}, step.options, pool);
        out.weights.clear();
        for (const TensorRole role : model::kLayerLinearRoles) {
          for (auto& rw : rec.weights)
            if (rw.layer == 0 && rw.role == role) w.linear(role) = std::move(rw.tensor);
          const QuantizedTensor& q = w.linear(role).quantized();
          out.weights.insert(out.weights.end(), q.bytes.begin(), q.bytes.end());
        }
        break;
      }
      case MethodStage::kErrorCompensation: {
        // Every linear with its format (all quantized by the step before); the adapters' bytes
        // join the weights'.
        std::vector<CompensationLinear> linears;
        for (const TensorRole role : model::kLayerLinearRoles) {
          const model::LinearWeight& q = w.linear(role);
          linears.push_back({.role = role, .name = "blk.0.weight", .rows = q.rows(), .cols = q.cols(),
                             .original = original.linear(role).dense().f32(), .quantized = &q,
                             .stats = &sites.at(calib::input_site(role))});
        }
        LayerCompensation c = step.method->compensate({.layer = 0, .linears = linears}, step.options, pool);
        EXPECT_FALSE(c.adapters.empty()) << step.name();
        for (const CompensationAdapter& a : c.adapters) {
          append(out.weights, a.role);
          for (const Tensor* t : {&a.adapter.a(), &a.adapter.b()})
            out.weights.insert(out.weights.end(), t->bytes().begin(), t->bytes().end());
        }
        break;
      }
      case MethodStage::kWeightQuantizer:
        original = w;
        teacher = m;
        for (const TensorRole role : model::kLayerLinearRoles) {
          const InputStats& site = sites.at(calib::input_site(role));
          const Tensor& dense = w.linear(role).dense();
          QuantizedWeight q = step.method->quantize(
              {.layer = 0, .group = model::site_name(calib::input_site(role)), .format = &format_for(dense.dim(1)),
               .name = "blk.0.weight", .rows = dense.dim(0), .cols = dense.dim(1), .weights = dense.f32(),
               .stats = &site, .importance = site.mean_sq.data()},
              step.options, pool);
          out.weights.insert(out.weights.end(), q.tensor.bytes.begin(), q.tensor.bytes.end());
          w.linear(role) = std::move(q.tensor);
        }
        break;
      case MethodStage::kActivation:
        for (const TensorRole role : model::kLayerLinearRoles) {
          const model::ActivationQuant spec = step.method->activation(
              {.layer = 0, .group = model::site_name(calib::input_site(role)),
               .stats = &sites.at(calib::input_site(role))},
              step.options);
          EXPECT_TRUE(spec.enabled() && spec.valid()) << step.name();
          append(out.activations, spec.kind);
          append(out.activations, spec.scale);
          append(out.activations, spec.threshold);
        }
        break;
    }
  }
  EXPECT_FALSE(out.weights.empty());
  return out;
}

// A value of each key other than its default, within its range.
nlohmann::json non_default(const OptionSpec& s) {
  switch (s.type) {
    case OptionType::kBool: return !s.default_value.get<bool>();
    case OptionType::kString: return s.choices[0] != s.default_value.get<std::string>() ? s.choices[0] : s.choices[1];
    case OptionType::kNumber: {
      const double d = s.default_value.get<double>();
      // Halfway to the far end: towards max, or towards min for a default at the top (clip 1).
      if (std::isfinite(s.max) && d == s.max) return (d + s.min) / 2;
      return std::isfinite(s.max) ? (d + s.max) / 2 : d * 2 + 1;
    }
    case OptionType::kInteger: {
      const double d = s.default_value.get<double>();
      return static_cast<int64_t>(d + 1 <= s.max ? d + 1 : d - 1);
    }
  }
  return {};
}

nlohmann::json non_default_options(const Method& m) {
  nlohmann::json j = nlohmann::json::object();
  for (const OptionSpec& s : m.options()) j[s.key] = non_default(s);
  return j;
}

// Values just outside each finite end of a numeric key's range.
std::vector<nlohmann::json> out_of_range(const OptionSpec& s) {
  std::vector<nlohmann::json> v;
  if (s.type == OptionType::kBool || s.type == OptionType::kString) return v;
  const auto number = [&](double x) {
    return s.type == OptionType::kInteger ? nlohmann::json(static_cast<int64_t>(x)) : nlohmann::json(x);
  };
  if (std::isfinite(s.min) && s.min > -9e18) v.push_back(number(s.min_exclusive ? s.min : s.min - 1));
  if (std::isfinite(s.max) && s.max < 9e18) v.push_back(number(s.max + 1));
  return v;
}

Recipe one_step(const Method& m, const nlohmann::json& options) {
  nlohmann::json step = options;
  step["method"] = m.name();
  return recipe_from_json(nlohmann::json::array({step}), "contract.json");
}

class MethodContract : public ::testing::TestWithParam<const Method*> {};

TEST_P(MethodContract, TraitsAreConsistent) {
  const Method& m = *GetParam();
  EXPECT_FALSE(m.name().empty());
  EXPECT_EQ(find_method(m.name()), &m);
  EXPECT_EQ(&method_by_name(m.name()), &m);
  EXPECT_FALSE(m.traits().summary.empty());
  for (const OptionSpec& s : m.options()) {
    EXPECT_FALSE(s.doc.empty()) << m.name() << " " << s.key;
    EXPECT_EQ(s.default_value.is_boolean(), s.type == OptionType::kBool) << m.name() << " " << s.key;
  }
  // Its events read as a line naming it.
  const MethodEvent e{.layer = 3, .step = m.name(), .target = "attn_in", .value = 0.5, .seconds = 0.25};
  EXPECT_NE(m.event_text(e).find(m.name()), std::string::npos) << m.event_text(e);
}

TEST_P(MethodContract, ThreadCountDoesNotMatter) {
  const Method& m = *GetParam();
  for (const nlohmann::json& options : {nlohmann::json::object(), non_default_options(m)}) {
    const Recipe r = one_step(m, options);
    ThreadPool one(1), two(2);
    const Output a = run(r, one);
    const Output b = run(r, two);
    EXPECT_EQ(a.weights, b.weights) << m.name() << " " << options.dump();
    EXPECT_EQ(a.activations, b.activations) << m.name() << " " << options.dump();
    EXPECT_EQ(a.activations.empty(), m.stage() != MethodStage::kActivation) << m.name();
  }
}

TEST_P(MethodContract, RecipeJsonRoundTrip) {
  const Method& m = *GetParam();
  const nlohmann::json options = non_default_options(m);
  const Recipe r1 = one_step(m, options);
  const nlohmann::json j1 = r1.to_json();
  const Recipe r2 = recipe_from_json(j1, "again");
  EXPECT_EQ(r2.to_json(), j1);
  EXPECT_EQ(r2.to_string(), r1.to_string());
  const MethodStep* step = r2.find(m.name());
  ASSERT_NE(step, nullptr);
  nlohmann::json written = options;
  written["method"] = m.name();
  EXPECT_TRUE(std::find(j1["steps"].begin(), j1["steps"].end(), written) != j1["steps"].end()) << j1.dump();
  // The typed options hold the values, every one of which differs from its default.
  const nlohmann::json typed = m.options_json(step->options, true);
  const nlohmann::json defaults = m.options_json(m.parse_options(nlohmann::json::object(), "defaults"), true);
  EXPECT_EQ(typed, options);
  for (const OptionSpec& s : m.options()) EXPECT_NE(typed[s.key], defaults[s.key]) << m.name() << " " << s.key;
  EXPECT_EQ(defaults.size(), m.options().size());
}

TEST_P(MethodContract, BadOptionsAreErrorsNamingTheKey) {
  const Method& m = *GetParam();
  const auto expect_error = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json options = nlohmann::json::object();
    options[key] = value;
    const std::string e = error_of([&] { one_step(m, options); });
    EXPECT_NE(e.find("contract.json"), std::string::npos) << e;
    EXPECT_NE(e.find(m.name()), std::string::npos) << e;
    EXPECT_NE(e.find("'" + key + "'"), std::string::npos) << m.name() << " " << value.dump() << ": " << e;
  };
  expect_error("no_such_option", 1);
  for (const OptionSpec& s : m.options()) {
    expect_error(s.key, "x");
    expect_error(s.key, nlohmann::json::array());
    for (const nlohmann::json& v : out_of_range(s)) expect_error(s.key, v);
  }
}

TEST_P(MethodContract, IdentityOptionsGiveRtnBytes) {
  const Method& m = *GetParam();
  if (!m.traits().identity) GTEST_SKIP() << m.name() << " declares no identity setting";
  ThreadPool pool(2);
  const Output rtn = run(parse_method_chain("rtn"), pool);
  const Output same = run(one_step(m, *m.traits().identity), pool);
  EXPECT_EQ(same.weights, rtn.weights) << m.name() << " " << m.traits().identity->dump();
}

std::string method_test_name(const ::testing::TestParamInfo<const Method*>& info) {
  std::string s = info.param->name();
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

INSTANTIATE_TEST_SUITE_P(AllMethods, MethodContract, ::testing::ValuesIn(all_methods()), method_test_name);

TEST(MethodRegistry, EveryStageHasAMethodAndUnknownNamesListKnownOnes) {
  for (const MethodStage stage : {MethodStage::kModelTransform, MethodStage::kScaleMigration,
                                  MethodStage::kLayerTransform, MethodStage::kWeightQuantizer,
                                  MethodStage::kLayerReconstruction, MethodStage::kErrorCompensation,
                                  MethodStage::kModelReconstruction, MethodStage::kActivation})
    EXPECT_FALSE(method_names(stage).empty()) << stage_name(stage);
  EXPECT_EQ(method_names(MethodStage::kWeightQuantizer), "rtn, gptq");
  const std::string e = error_of([] { (void)method_by_name("gtpq"); });
  EXPECT_NE(e.find("unknown method 'gtpq'"), std::string::npos) << e;
  EXPECT_NE(e.find("gptq"), std::string::npos) << e;
}

// The identity settings are not the defaults: with its defaults AWQ moves the weights.
TEST(MethodRegistry, AwqDefaultsDifferFromRtn) {
  ThreadPool pool(2);
  EXPECT_NE(run(parse_method_chain("awq"), pool).weights, run(parse_method_chain("rtn"), pool).weights);
}

}  // namespace
}  // namespace calq::quant
