// End-to-end checks of the `calq` executable: bad inputs give a clear message naming the file
// (and tensor/key) on stderr and exit status 2 — never a crash.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "model/tiny_model_testutil.h"
#include "cli/cli_test_util.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

class CliErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("cli");
    model_ = dir_ / "model";
    model::testutil::write_tiny_model(model_, {.tied = true});
    write_text(text_ = dir_ / "text.txt", "hello world");
    // A minimal valid tokenizer so that model errors, not tokenizer errors, are what fails.
    write_text(model_ / "tokenizer.json", R"({"version": "1.0", "added_tokens": [], "normalizer": null,
      "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [], "byte_fallback": false,
                "fuse_unk": false, "unk_token": null, "dropout": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null}})");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs `calq eval` on the tiny model and expects exit 2 with every needle in the output.
  void expect_eval_error(std::initializer_list<std::string> needles) {
    const RunResult r = run_calq("eval --quiet --model " + model_.string() + " --text " + text_.string() + " --ctx 4");
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("calq: error:"), std::string::npos) << r.output;
    for (const auto& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << "missing '" << n << "' in: " << r.output;
  }

  std::filesystem::path dir_, model_, text_;
};

TEST_F(CliErrors, TruncatedSafetensors) {
  const auto path = model_ / "model.safetensors";
  std::filesystem::resize_file(path, 5);
  expect_eval_error({"model.safetensors"});
}

TEST_F(CliErrors, HeaderLengthBeyondFile) {
  const auto path = model_ / "model.safetensors";
  const uint64_t huge = 1u << 30;
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.write(reinterpret_cast<const char*>(&huge), 8);
  f.close();
  expect_eval_error({"model.safetensors", "header length"});
}

TEST_F(CliErrors, MalformedHeaderJson) {
  const std::string header = "{\"a\": [1, 2";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  write_text(model_ / "model.safetensors", bytes + header);
  expect_eval_error({"model.safetensors"});
}

TEST_F(CliErrors, MissingTensor) {
  auto st = io::SafetensorsFile::open(model_ / "model.safetensors");
  std::vector<std::vector<std::byte>> copies;
  std::vector<io::TensorToWrite> keep;
  for (const auto& t : st.tensors()) {
    if (t.name == "model.layers.1.mlp.up_proj.weight") continue;
    auto b = st.tensor(t.name).bytes();
    copies.emplace_back(b.begin(), b.end());
  }
  size_t i = 0;
  for (const auto& t : st.tensors()) {
    if (t.name != "model.layers.1.mlp.up_proj.weight") keep.push_back({t.name, t.dtype, t.shape, copies[i++]});
  }
  io::write_safetensors(model_ / "model.safetensors", keep);
  expect_eval_error({"model.layers.1.mlp.up_proj.weight", "not found"});
}

TEST_F(CliErrors, UnsupportedModelType) {
  write_text(model_ / "config.json", R"({"model_type": "mamba", "vocab_size": 61})");
  expect_eval_error({"config.json", "mamba", "llama"});
}

TEST_F(CliErrors, MissingModelType) {
  write_text(model_ / "config.json", R"({"vocab_size": 61})");
  expect_eval_error({"config.json", "model_type"});
}

TEST_F(CliErrors, UnknownTokenizerComponent) {
  write_text(model_ / "tokenizer.json", R"({"added_tokens": [], "normalizer": {"type": "Frobnicate"},
      "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  expect_eval_error({"tokenizer.json", "Frobnicate"});
}

TEST_F(CliErrors, MissingTextFile) {
  const RunResult r = run_calq("eval --quiet --model " + model_.string() + " --text " + (dir_ / "nope.txt").string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("nope.txt"), std::string::npos) << r.output;
}

TEST_F(CliErrors, TextShorterThanOneWindow) {
  const RunResult r = run_calq("eval --quiet --model " + model_.string() + " --text " + text_.string() + " --ctx 512");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("fewer than one window"), std::string::npos) << r.output;
}

TEST_F(CliErrors, BadFlagsExitTwo) {
  EXPECT_EQ(run_calq("eval --model x").status, 2);                 // missing --text
  EXPECT_EQ(run_calq("eval --model x --text y --ctx 1").status, 2);  // out of range
  EXPECT_EQ(run_calq("frobnicate").status, 2);
  EXPECT_EQ(run_calq("--help").status, 0);
}

TEST_F(CliErrors, InspectListsTensorsOfTinyModel) {
  const RunResult r = run_calq("inspect " + model_.string() + " --json " + (dir_ / "i.json").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[32, 48]"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_ / "i.json"));
}

TEST(CliReference, EvalJsonMatchesTransformersOnTwoWindows) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
  const auto dir = testing::temp_dir("cli_ref");
  const auto shared = testing::shared_dir();
  const auto out = dir / "r.json";
  const RunResult r = run_calq("eval --model " + (shared / "models/calq-ref-llama").string() + " --text " +
                               (shared / "data/heldout.txt").string() + " --ctx 512 --max-windows 2 --json " +
                               out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("progress:"), std::string::npos) << r.output;  // progress on stderr
  const std::string json = read_text_file(out);
  const std::string ref = read_text_file(shared / "refs/calq-ref-llama/heldout/ppl_ctx512.json");
  const auto sha_of = [](const std::string& s) {
    const auto p = s.find("\"token_ids_sha256\"");
    return s.substr(s.find('"', p + 19) + 1, 64);
  };
  EXPECT_EQ(sha_of(json), sha_of(ref));
  for (const char* key : {"\"ppl\"", "\"n_tokens\"", "\"n_windows\"", "\"seconds\"", "\"tokens_per_second\""}) {
    EXPECT_NE(json.find(key), std::string::npos) << key;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq
