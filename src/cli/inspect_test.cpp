// End-to-end checks of `calq inspect`: the GGUF listing of llama.cpp's own quantized files
// (cross-checked against io::GgufFile and against facts known about those files), the outlier
// report on a tiny model and on the reference model (cross-checked against the calib library),
// and clear errors for bad activation options.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "calib/calibration.h"
#include "calib/weight_stats.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/tiny_model_testutil.h"
#include "cli/cli_test_util.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

nlohmann::json read_json(const std::filesystem::path& p) { return nlohmann::json::parse(read_text_file(p)); }

std::string ne_text(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i > 0 ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// The stdout line of a table whose first column is exactly `name`.
std::string line_starting_with(const std::string& output, const std::string& name) {
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return line;
  }
  return {};
}

std::vector<std::filesystem::path> peer_quant_files() {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(testing::shared_dir() / "peer-tests/llama.cpp-quants")) {
    if (e.path().extension() == ".gguf") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(InspectGguf, EveryPeerQuantFileListsItsTensorsAndKeys) {
  CALQ_REQUIRE_SHARED("peer-tests/llama.cpp-quants/calq-ref-llama-Q8_0.gguf");
  const auto dir = testing::temp_dir("inspect_gguf");
  auto files = peer_quant_files();
  ASSERT_EQ(files.size(), 5u);
  files.push_back(testing::shared_dir() / "models/calq-ref-llama-f16.gguf");
  for (const auto& path : files) {
    SCOPED_TRACE(path.filename().string());
    const auto out = dir / "listing.json";
    const RunResult r = run_calq("inspect " + path.string() + " --json " + out.string());
    ASSERT_EQ(r.status, 0) << r.output;
    const io::GgufFile file = io::GgufFile::open(path);
    const nlohmann::json j = read_json(out);
    EXPECT_EQ(j["gguf_version"], file.version());
    ASSERT_EQ(j["tensors"].size(), file.tensors().size());
    for (size_t i = 0; i < file.tensors().size(); ++i) {
      const io::GgufTensorInfo& t = file.tensors()[i];
      const std::string type(io::ggml_type_info(t.type)->name);
      EXPECT_EQ(j["tensors"][i]["name"], t.name);
      EXPECT_EQ(j["tensors"][i]["type"], type);
      EXPECT_EQ(j["tensors"][i]["ne"].get<std::vector<int64_t>>(), t.ne);
      EXPECT_EQ(j["tensors"][i]["size_bytes"], t.size_bytes);
      const std::string line = line_starting_with(r.output, t.name);
      EXPECT_NE(line.find(" " + type + " "), std::string::npos) << t.name << ": " << line;
      EXPECT_NE(line.find(ne_text(t.ne)), std::string::npos) << t.name << ": " << line;
    }
    ASSERT_EQ(j["metadata"].size(), file.metadata().size());
    for (size_t i = 0; i < file.metadata().size(); ++i) {
      const auto& [key, value] = file.metadata()[i];
      EXPECT_EQ(j["metadata"][i]["key"], key);
      EXPECT_NE(line_starting_with(r.output, key), "") << key;
      if (value.type == io::GgufValueType::kArray) {
        EXPECT_EQ(j["metadata"][i]["length"], value.array_size()) << key;
      }
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(InspectGguf, KnownFactsOfTheQ8AndQ4KMFiles) {
  CALQ_REQUIRE_SHARED("peer-tests/llama.cpp-quants/calq-ref-llama-Q8_0.gguf");
  const auto dir = testing::temp_dir("inspect_facts");
  const auto quants = testing::shared_dir() / "peer-tests/llama.cpp-quants";
  const auto listing = [&](const std::string& name) {
    const RunResult r = run_calq("inspect " + (quants / name).string() + " --json " + (dir / "l.json").string());
    EXPECT_EQ(r.status, 0) << r.output;
    const nlohmann::json j = read_json(dir / "l.json");
    std::map<std::string, nlohmann::json> by_name;
    for (const auto& t : j["tensors"]) by_name[t["name"].get<std::string>()] = t;
    std::map<std::string, nlohmann::json> keys;
    for (const auto& m : j["metadata"]) keys[m["key"].get<std::string>()] = m;
    return std::make_tuple(r.output, by_name, keys);
  };

  {
    const auto [out, t, keys] = listing("calq-ref-llama-Q8_0.gguf");
    ASSERT_EQ(t.size(), 56u);  // 6 layers x 9 + token_embd + output_norm; the output head is tied
    EXPECT_EQ(t.count("output.weight"), 0u);
    EXPECT_EQ(t.at("token_embd.weight")["ne"], nlohmann::json::array({512, 16384}));
    EXPECT_EQ(t.at("token_embd.weight")["shape"], nlohmann::json::array({16384, 512}));
    EXPECT_EQ(t.at("token_embd.weight")["type"], "Q8_0");
    EXPECT_EQ(t.at("blk.0.attn_k.weight")["ne"], nlohmann::json::array({512, 128}));
    EXPECT_EQ(t.at("blk.5.ffn_down.weight")["ne"], nlohmann::json::array({1536, 512}));
    // Q8_0 blocks: 32 values in 34 bytes.
    EXPECT_EQ(t.at("token_embd.weight")["size_bytes"], 512 / 32 * 34 * 16384);
    int q8 = 0, f32 = 0;
    for (const auto& [name, info] : t) {
      if (info["type"] == "Q8_0") ++q8;
      if (info["type"] == "F32") ++f32;
    }
    EXPECT_EQ(q8, 43);
    EXPECT_EQ(f32, 13);
    EXPECT_EQ(t.at("output_norm.weight")["type"], "F32");
    EXPECT_EQ(keys.at("general.file_type")["value"], 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
    EXPECT_EQ(keys.at("llama.block_count")["value"], 6);
    EXPECT_EQ(keys.at("tokenizer.ggml.tokens")["length"], 16384);
    EXPECT_EQ(keys.at("tokenizer.ggml.tokens")["array_type"], "string");
    EXPECT_NE(line_starting_with(out, "tokenizer.ggml.tokens").find("[string x 16384]"), std::string::npos) << out;
  }
  {
    const auto [out, t, keys] = listing("calq-ref-llama-Q4_K_M.gguf");
    EXPECT_EQ(t.at("token_embd.weight")["type"], "Q6_K");
    EXPECT_EQ(t.at("blk.0.attn_q.weight")["type"], "Q4_K");
    EXPECT_EQ(t.at("blk.0.attn_q.weight")["ne"], nlohmann::json::array({512, 512}));
    // Q4_K super-blocks: 256 values in 144 bytes.
    EXPECT_EQ(t.at("blk.0.attn_q.weight")["size_bytes"], 512 * 512 / 256 * 144);
    EXPECT_EQ(keys.at("general.file_type")["value"], 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  }
  std::filesystem::remove_all(dir);
}

class InspectOutliers : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("inspect_outliers");
    model_ = dir_ / "model";
    model::testutil::write_tiny_model(model_, {.tied = true});
    // Each of "a" and "b" is one token: 40 characters are 40 tokens.
    std::ofstream(model_ / "tokenizer.json") << R"({"version": "1.0", "added_tokens": [], "normalizer": null,
      "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [], "byte_fallback": false,
                "fuse_unk": false, "unk_token": null, "dropout": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null}})";
    std::ofstream(text_ = dir_ / "text.txt") << std::string(20, 'a') + std::string(20, 'b');
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  RunResult inspect(const std::string& extra) {
    return run_calq("inspect " + model_.string() + " --quiet " + extra);
  }

  std::filesystem::path dir_, model_, text_;
};

TEST_F(InspectOutliers, WeightAndActivationTablesAndJson) {
  const auto out = dir_ / "o.json";
  const RunResult r =
      inspect("--weights --activations --text " + text_.string() + " --samples 3 --ctx 8 --json " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  // The plain listing is still there, then one weight row per tensor and one activation row per input.
  const std::string listed = line_starting_with(r.output, "model.layers.1.mlp.down_proj.weight");
  EXPECT_NE(listed.find(" F32 "), std::string::npos) << r.output;
  EXPECT_NE(listed.find("[32, 48]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.embed_tokens.weight (tied output)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("attn_q,attn_k,attn_v"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("3 windows x 8 tokens"), std::string::npos) << r.output;

  const nlohmann::json j = read_json(out);
  ASSERT_EQ(j["weight_stats"]["tensors"].size(), 2u * 7u + 1u);
  const auto& acts = j["activation_stats"]["inputs"];
  ASSERT_EQ(acts.size(), 2u * 7u + 1u);
  // 40 tokens = 5 windows of 8; 3 evenly spaced ones: 0, 1, 3.
  EXPECT_EQ(j["activation_stats"]["window_starts"], nlohmann::json::array({0, 8, 24}));
  for (const auto& a : acts) {
    EXPECT_EQ(a["tokens"], 24);
    EXPECT_EQ(a["channel_absmax"].size(), a["channels"].get<size_t>());
  }
  EXPECT_EQ(acts.back()["layer"], -1);
  EXPECT_EQ(acts[6]["channels"], 48);  // mlp down: intermediate width

  // The JSON holds exactly what the library computes.
  ThreadPool pool(1);
  const model::Model m = model::load_hf_model(model_, pool);
  const auto direct = calib::weight_stats(m.layers[1].w_down.dense(), {}, pool);
  const auto& row = j["weight_stats"]["tensors"][13];
  EXPECT_EQ(row["name"], "model.layers.1.mlp.down_proj.weight");
  EXPECT_EQ(row["std"].get<double>(), direct.std);
  EXPECT_EQ(row["excess_kurtosis"].get<double>(), direct.excess_kurtosis);
  EXPECT_EQ(row["channel_absmax"].get<std::vector<float>>(), direct.channel_absmax);
  const std::vector<int32_t> ids = io::Tokenizer::from_file(model_ / "tokenizer.json").encode(read_text_file(text_));
  const calib::ActivationObserver obs = calib::observe_activations(m, ids, {.ctx = 8, .samples = 3}, pool);
  for (size_t i = 0; i < obs.inputs().size(); ++i) {
    EXPECT_EQ(acts[i]["channel_absmax"].get<std::vector<float>>(), obs.inputs()[i].absmax) << i;
  }
}

TEST_F(InspectOutliers, BadActivationOptionsExitTwo) {
  const auto expect_error = [&](const std::string& args, const std::string& needle) {
    const RunResult r = inspect(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  };
  expect_error("--activations", "need a text");
  expect_error("--activations --text " + text_.string() + " --samples 0 --ctx 8", "samples must be at least 1");
  expect_error("--activations --text " + text_.string() + " --samples 6 --ctx 8", "samples 6 asks for more");
  expect_error("--activations --text " + text_.string() + " --samples 1 --ctx 64", "fewer than one window");
  expect_error("--activations --text " + (dir_ / "missing.txt").string() + " --samples 1", "missing.txt");
  expect_error("--text " + text_.string(), "--activations");  // --text without --activations
}

TEST(InspectReference, ActivationReportOnTheReferenceModel) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
  CALQ_REQUIRE_SHARED("data/calib.txt");
  const auto dir = testing::temp_dir("inspect_ref");
  const auto shared = testing::shared_dir();
  const RunResult r = run_calq("inspect " + (shared / "models/calq-ref-llama").string() + " --activations --text " +
                               (shared / "data/calib.txt").string() + " --samples 2 --ctx 128 --json " +
                               (dir / "r.json").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("progress:"), std::string::npos) << r.output;
  const nlohmann::json j = read_json(dir / "r.json");
  const auto& acts = j["activation_stats"]["inputs"];
  ASSERT_EQ(acts.size(), 6u * 7u + 1u);
  for (const auto& a : acts) {
    EXPECT_EQ(a["tokens"], 256);
    // The ratio and count columns are consistent with the per-channel vector they summarize.
    const auto ch = a["channel_absmax"].get<std::vector<float>>();
    const auto above = std::count_if(ch.begin(), ch.end(), [](float v) { return v > 6.0f; });
    EXPECT_EQ(a["channels_above_threshold"], above);
    EXPECT_EQ(a["absmax"].get<double>(), *std::max_element(ch.begin(), ch.end()));
  }
  // One table row per (layer, input): 4 per layer (q/k/v and gate/up share theirs) plus the head.
  for (const char* layer : {"0 ", "5 "}) {
    size_t rows = 0;
    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line)) rows += line.rfind(layer, 0) == 0 ? 1 : 0;
    EXPECT_EQ(rows, 4u) << layer << "\n" << r.output;
  }
  EXPECT_NE(line_starting_with(r.output, "head"), "") << r.output;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq
