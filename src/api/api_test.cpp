// The public API (include/calq/) on a tiny model written here: quantize() gives the same bytes as
// for any thread count and reports each tensor through the progress callback; a callback
// returning false cancels with ErrorKind::kCancelled and leaves no output; errors name options,
// never CLI flags; formats round-trip arrays; calibrate() writes statistics quantize() reuses;
// evaluate() compares against the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "calq/calq.h"
#include "calib/collectors.h"
#include "calib/stats_drift.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

class Api : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("api");
    ThreadPool pool(1);
    // A tiny model with a real byte-level tokenizer, so that the GGUF writer can embed it.
    CALQ_REQUIRE_SHARED("tokenizers/bytelevel-16k/tokenizer.json");
    CALQ_REQUIRE_SHARED("data/calib.txt");
    const auto tokenizer = testing::shared_dir() / "tokenizers/bytelevel-16k/tokenizer.json";
    model::testutil::write_tiny_model(dir_ / "hf", {.tied = false, .dtype = DType::kF32, .vocab_size = 16384});
    std::filesystem::copy_file(tokenizer, dir_ / "hf/tokenizer.json");
    text_ = testing::shared_dir() / "data/calib.txt";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  QuantizeJob job(const std::string& out) const {
    return {.model = (dir_ / "hf").string(), .out = (dir_ / out).string(), .format = "q8_0", .threads = 1};
  }

  std::filesystem::path dir_, text_;
};

using testing::error_of;

TEST_F(Api, QuantizeIsDeterministicAcrossThreadsAndReportsTensors) {
  QuantizeJob one = job("one.gguf");
  std::vector<std::string> stages;
  one.progress = [&](const Progress& p) {
    stages.emplace_back(p.stage);
    return true;
  };
  const QuantizeReport r1 = quantize(one);
  QuantizeJob two = job("two.gguf");
  two.threads = 2;
  const QuantizeReport r2 = quantize(two);
  EXPECT_EQ(read_text_file(dir_ / "one.gguf"), read_text_file(dir_ / "two.gguf"));
  EXPECT_EQ(r1.form, "format");
  EXPECT_GT(r1.n_quantized, 0);
  EXPECT_EQ(r1.tensors.size(), static_cast<size_t>(r1.n_tensors));
  EXPECT_EQ(std::count(stages.begin(), stages.end(), "tensor"), r1.n_tensors);
  EXPECT_NE(r1.recipe.find("method=rtn;format=q8_0"), std::string::npos) << r1.recipe;
  EXPECT_GT(r1.bits_per_weight, 8.0);
  EXPECT_LT(r1.bits_per_weight, 9.5);
}

TEST_F(Api, CancellingLeavesNoOutput) {
  QuantizeJob j = job("cancelled.gguf");
  int calls = 0;
  j.progress = [&](const Progress& p) { return !(p.stage == "tensor" && ++calls == 2); };
  ErrorKind kind{};
  const std::string msg = error_of([&] { quantize(j); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kCancelled) << msg;
  EXPECT_NE(msg.find("cancelled"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "cancelled.gguf"));
}

TEST_F(Api, ErrorsNameOptionsNotFlags) {
  QuantizeJob j = job("x.gguf");
  j.method_options.push_back({"gptq", "damp", "0.02"});
  std::string msg = error_of([&] { quantize(j); });
  EXPECT_NE(msg.find("damp"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gptq"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--"), std::string::npos) << msg;

  quantize(job("exists.gguf"));
  msg = error_of([&] { quantize(job("exists.gguf")); });
  EXPECT_NE(msg.find("force"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--"), std::string::npos) << msg;

  QuantizeJob t = job("t.gguf");
  t.format.clear();
  t.target.bits_per_weight = 4.5;
  msg = error_of([&] { quantize(t); });
  EXPECT_NE(msg.find("candidates"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--"), std::string::npos) << msg;

  QuantizeJob bad = job("bad.gguf");
  bad.format = "q4_kk";
  EXPECT_NE(error_of([&] { quantize(bad); }).find("q4_kk"), std::string::npos);
}

TEST_F(Api, CalibrateThenQuantizeWithTheStatistics) {
  const CalibrateReport c = calibrate({.model = (dir_ / "hf").string(), .out = (dir_ / "stats.gguf").string(),
                                       .data = {.text = text_.string(), .samples = 4, .seq_len = 16},
                                       .stats = "absmax,mean_sq,hessian", .threads = 1});
  EXPECT_EQ(c.samples, 4);
  EXPECT_FALSE(c.sites.empty());
  QuantizeJob j = job("gptq.gguf");
  j.format = "int4-pc-asym";
  j.method = "gptq";
  j.stats = (dir_ / "stats.gguf").string();
  const QuantizeReport r = quantize(j);
  // Every quantized weight but the token embedding (a lookup, no input) had its input's E[x²].
  EXPECT_EQ(r.n_with_importance, r.n_quantized - 1);
  EXPECT_FALSE(r.method_events.empty());
  EXPECT_NE(r.method_events.front().find("gptq"), std::string::npos);
}

TEST_F(Api, CalibrateOnSamplesGeneratedByTheModel) {
  // Data-free calibration: "generate:N" samples N sequences from the model itself.
  const auto run = [&](const std::string& out, size_t threads, std::vector<std::string>* stages) {
    return calibrate({.model = (dir_ / "hf").string(), .out = (dir_ / out).string(),
                      .data = {.text = "generate:3,top_k=50", .samples = 128, .seq_len = 12, .seed = 4},
                      .stats = "absmax,mean_sq", .threads = threads,
                      .progress = [stages](const Progress& p) {
                        if (stages != nullptr) stages->emplace_back(p.stage);
                        return true;
                      }});
  };
  std::vector<std::string> stages;
  const CalibrateReport a = run("gen1.gguf", 1, &stages);
  EXPECT_EQ(a.samples, 3);  // N, not `samples`
  EXPECT_EQ(a.seq_len, 12);
  EXPECT_EQ(a.n_documents, 0);
  EXPECT_NE(std::find(stages.begin(), stages.end(), "generate"), stages.end());
  run("gen2.gguf", 2, nullptr);
  EXPECT_EQ(read_text_file(dir_ / "gen1.gguf"), read_text_file(dir_ / "gen2.gguf"));
  const calib::CalibrationStats s = calib::read_stats_file(dir_ / "gen1.gguf");
  EXPECT_EQ(s.samples, 3);
  EXPECT_EQ(s.seed, 4);
  EXPECT_EQ(s.calib_sha256, (std::vector<std::string>{"generated:n=3,seq_len=12,seed=4,bos=none,greedy=3,top_k=50"}));
  // Another seed, other samples, other statistics.
  calibrate({.model = (dir_ / "hf").string(), .out = (dir_ / "gen3.gguf").string(),
             .data = {.text = "generate:3,top_k=50", .seq_len = 12, .seed = 5}, .stats = "absmax,mean_sq",
             .threads = 1});
  EXPECT_NE(read_text_file(dir_ / "gen1.gguf"), read_text_file(dir_ / "gen3.gguf"));

  for (const char* bad : {"generate:0", "generate:x"}) {
    const std::string msg = error_of([&] {
      calibrate({.model = (dir_ / "hf").string(), .out = (dir_ / "bad.gguf").string(), .data = {.text = bad}});
    });
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    EXPECT_NE(msg.find("number of sequences"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("--"), std::string::npos) << msg;
  }
}

TEST_F(Api, EvaluateComparesWithTheReference) {
  quantize(job("q8.gguf"));
  const EvalReport e = evaluate({.reference = (dir_ / "hf").string(), .models = {(dir_ / "q8.gguf").string()},
                                 .text = text_.string(), .ctx = 16, .max_windows = 4, .threads = 1});
  ASSERT_EQ(e.models.size(), 1u);
  EXPECT_EQ(e.n_windows, 4);
  EXPECT_GT(e.models[0].kld_mean, 0.0);
  EXPECT_LT(e.models[0].kld_mean, 0.05);
  EXPECT_GT(e.models[0].top1_agreement, 0.5);
  EXPECT_GT(e.ppl_ref, 1.0);
}

TEST_F(Api, EvaluateRunsTasksAndWritesItsJson) {
  std::ofstream(dir_ / "mc.jsonl") << R"({"ctx": "The cat", "endings": [" sat", " ran", " is", " was"], "label": 0}
{"ctx": "A dog", "endings": [" barks", " flies", " swims", " sings"], "label": 1}
)";
  const EvalReport e = evaluate({.models = {(dir_ / "hf").string()}, .text = text_.string(), .ctx = 16,
                                 .max_windows = 3, .hellaswag = (dir_ / "mc.jsonl").string(),
                                 .generate = {"Hello"}, .max_new_tokens = 3,
                                 .json_out = (dir_ / "e.json").string(), .threads = 2});
  EXPECT_TRUE(e.has_text);
  EXPECT_EQ(e.models.at(0).nll_per_window.size(), 3u);
  ASSERT_TRUE(e.multiple_choice.has_value());
  EXPECT_EQ(e.multiple_choice->n_items, 2);
  EXPECT_EQ(e.multiple_choice->models.at(0).chosen.size(), 2u);
  EXPECT_FALSE(e.multiple_choice->models.at(0).agreement.has_value());  // no reference
  ASSERT_EQ(e.generations.size(), 1u);
  EXPECT_LE(e.generations[0].outputs.at(0).ids.size(), 3u);
  EXPECT_EQ(read_text_file(dir_ / "e.json"), e.json);
  // Nothing to do, several models without a reference: errors naming options, before any work.
  std::string msg = error_of([&] { evaluate({.models = {(dir_ / "hf").string()}}); });
  EXPECT_NE(msg.find("nothing to evaluate"), std::string::npos) << msg;
  msg = error_of([&] { evaluate({.models = {"a", "b"}, .text = text_.string()}); });
  EXPECT_NE(msg.find("reference"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--"), std::string::npos) << msg;
}

TEST_F(Api, CheckBisectAndCalibCheck) {
  quantize(job("q8.gguf"));
  const CheckReport c = check((dir_ / "q8.gguf").string());
  EXPECT_TRUE(c.ok) << c.json;
  EXPECT_EQ(c.errors, 0);
  const CheckReport bad = check(text_.string());  // not a GGUF file: an error finding, no throw
  EXPECT_FALSE(bad.ok);
  EXPECT_GT(bad.errors, 0);

  const BisectReport b = bisect({.model = (dir_ / "hf").string(), .quantized = (dir_ / "q8.gguf").string(),
                                 .eval_text = text_.string(), .ctx = 16, .max_windows = 4,
                                 .json_out = (dir_ / "b.json").string(), .threads = 2});
  EXPECT_FALSE(b.candidates.empty());
  EXPECT_GT(b.kld_q, 0.0);
  EXPECT_TRUE(b.found);
  EXPECT_LE(b.kld, b.goal);
  EXPECT_EQ(b.steps.size(), static_cast<size_t>(b.evaluations));
  EXPECT_EQ(read_text_file(dir_ / "b.json"), b.json);
  std::string msg = error_of([&] {
    bisect({.model = (dir_ / "hf").string(), .quantized = (dir_ / "q8.gguf").string(), .eval_text = text_.string(),
            .tolerance = 0.0});
  });
  EXPECT_NE(msg.find("tolerance"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--"), std::string::npos) << msg;

  const CalibCheckJob defaults;
  EXPECT_EQ(defaults.threshold, calib::kDefaultDriftThreshold);
  const CalibCheckReport d = calib_check({.model = (dir_ / "hf").string(), .calib = text_.string(),
                                          .eval_text = text_.string(), .samples = 2, .seq_len = 16, .threads = 2});
  EXPECT_FALSE(d.sites.empty());
  EXPECT_FALSE(d.flagged);  // the same text on both sides
  EXPECT_EQ(d.score, 0.0);
}

TEST_F(Api, InspectListsTheModelAndItsStatistics) {
  const InspectReport r = inspect({.model = (dir_ / "hf").string(), .weights = true, .activations = true,
                                   .text = text_.string(), .samples = 2, .ctx = 16, .threads = 2});
  EXPECT_EQ(r.format, "hf");
  EXPECT_EQ(r.architecture, "llama");
  EXPECT_NE(r.text.find("model.layers.0.self_attn.q_proj.weight"), std::string::npos) << r.text;
  const nlohmann::json j = nlohmann::json::parse(r.json);
  EXPECT_FALSE(j["weight_stats"].empty());
  EXPECT_EQ(j["activation_stats"]["samples"], 2);
  const std::string msg = error_of([&] { inspect({.model = (dir_ / "hf").string(), .activations = true}); });
  EXPECT_NE(msg.find("need a text"), std::string::npos) << msg;
}

TEST_F(Api, SensitivityMapDrivesATargetAllocation) {
  const std::string map = (dir_ / "map.json").string();
  const SensitivityReport s = sensitivity({.model = (dir_ / "hf").string(), .eval_text = text_.string(),
                                           .formats = {"int3-pc-asym", "int8-pc-sym"}, .ctx = 16, .max_windows = 2,
                                           .json_out = map, .threads = 1});
  ASSERT_FALSE(s.entries.empty());
  ASSERT_EQ(s.written, std::vector<std::string>{map});
  double k3 = 0, k8 = 0;
  for (const auto& e : s.entries) {
    ASSERT_EQ(e.kld.size(), 2u);
    k3 += e.kld[0];
    k8 += e.kld[1];
  }
  EXPECT_GT(k3, k8) << "3-bit weights cost more KLD than 8-bit ones";
  QuantizeJob j = job("target.gguf");
  j.format.clear();
  j.target = {.bits_per_weight = 6.0, .candidates = {"int3-pc-asym", "int8-pc-sym"}, .sensitivity = map};
  const QuantizeReport r = quantize(j);
  EXPECT_EQ(r.form, "target");
  EXPECT_LE(r.bits_per_weight, 6.0);
  EXPECT_NE(r.allocation.find("int8-pc-sym"), std::string::npos) << r.allocation;
  EXPECT_NE(r.allocation.find("int3-pc-asym"), std::string::npos) << r.allocation;
}

TEST_F(Api, OpenAndTokenize) {
  const Model m = Model::open((dir_ / "hf").string());
  EXPECT_EQ(m.info().format, "hf");
  EXPECT_EQ(m.info().architecture, "llama");
  EXPECT_GT(m.info().n_params, 0);
  EXPECT_NE(error_of([&] { Model::open((dir_ / "missing").string()); }).find("missing"), std::string::npos);
}

TEST(ApiFormats, RoundTripAndErrors) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(4 * 256);
  for (float& v : x) v = n(rng);
  const std::vector<std::byte> q = formats::quantize("q4_k", x, 4, 256);
  EXPECT_EQ(q.size(), static_cast<size_t>(4 * 144));
  const std::vector<float> y = formats::dequantize("q4_k", q, 4, 256);
  double err = 0, norm = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (x[i] - y[i]) * (x[i] - y[i]);
    norm += x[i] * x[i];
  }
  EXPECT_LT(std::sqrt(err / norm), formats::info("q4_k").bits_per_weight > 4 ? 0.15 : 0.0);
  EXPECT_NE(error_of([&] { formats::quantize("nope", x, 4, 256); }).find("nope"), std::string::npos);
  EXPECT_NE(error_of([&] { formats::quantize("q4_k", x, 4, 100); }).find("elements"), std::string::npos);
  x[7] = std::nanf("");
  EXPECT_FALSE(error_of([&] { formats::quantize("q4_k", x, 4, 256); }).empty());
}

}  // namespace
}  // namespace calq
