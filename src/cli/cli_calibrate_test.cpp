// `calq calibrate` and `calq quantize --format` end to end: statistics files, quantized GGUFs,
// byte-identical output for --threads 1 and 2, and every bad input the calibration issue lists
// (empty / too short / mostly unknown calibration text, NaN/Inf activations, a rule matching
// nothing, an existing output, an unwritable folder) exiting non-zero with a clear message and
// leaving no output behind.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

std::string bytes_of(const std::filesystem::path& p) { return read_text_file(p); }

class CliCalibrate : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = calq::testing::temp_dir("cli_calibrate");
    model_ = (calq::testing::shared_dir() / "models/calq-ref-llama").string();
    calib_ = (calq::testing::shared_dir() / "data/calib.txt").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Small calibration so each run takes a second or two.
  std::string quantize(const std::filesystem::path& out, const std::string& extra) const {
    return "quantize --model " + model_ + " --calib " + calib_ + " --samples 6 --seq-len 64 --out " + out.string() +
           " " + extra;
  }
  std::filesystem::path write_text(const std::string& name, const std::string& text) const {
    const auto p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  bool no_outputs_in_dir() const { return testing::no_outputs_in_dir(dir_); }

  std::filesystem::path dir_;
  std::string model_, calib_;
};

TEST_F(CliCalibrate, StatisticsFileAndMerge) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto a = dir_ / "a.gguf";
  const auto b = dir_ / "b.gguf";
  const std::string common = "calibrate --model " + model_ + " --calib " + calib_ + " --samples 4 --seq-len 32 ";
  RunResult r = run_calq(common + "--seed 1 --out " + a.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("below 128"), std::string::npos) << r.output;  // the small-sample warning
  EXPECT_NE(r.output.find("mlp_down"), std::string::npos) << r.output;
  r = run_calq(common + "--seed 2 --out " + b.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(bytes_of(a), bytes_of(b));  // other samples
  const auto m = dir_ / "m.gguf";
  r = run_calq("calibrate --merge " + a.string() + " " + b.string() + " --out " + m.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("8 samples"), std::string::npos) << r.output;
  // The merged statistics quantize the model.
  const auto q = dir_ / "q.gguf";
  r = run_calq("quantize --model " + model_ + " --stats " + m.string() + " --format q4_k --out " + q.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("with importance"), std::string::npos) << r.output;
}

TEST_F(CliCalibrate, QuantizedBytesDoNotDependOnThreads) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  for (const std::string extra : {"--format q4_k", "--format int4-g128-asym --observer kl",
                                  "--format int3-g128-asym --observer percentile --float-inputs"}) {
    const auto one = dir_ / "one.gguf";
    const auto two = dir_ / "two.gguf";
    RunResult r = run_calq(quantize(one, extra + " --threads 1 -q --force"));
    ASSERT_EQ(r.status, 0) << r.output;
    r = run_calq(quantize(two, extra + " --threads 2 -q --force"));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(bytes_of(one), bytes_of(two)) << extra;
    const io::GgufFile f = io::GgufFile::open(one);
    const std::string recipe = f.get("calq.recipe").as_string("calq.recipe");
    EXPECT_NE(recipe.find("method=rtn"), std::string::npos) << recipe;
    EXPECT_NE(recipe.find("samples=6"), std::string::npos) << recipe;
    EXPECT_EQ(f.get("calq.calib_sha256").as_string("sha").size(), 64u);
  }
}

TEST_F(CliCalibrate, EmptyCalibrationFile) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto calib = write_text("empty.txt", "\n\n  \n");
  const RunResult r = run_calq("quantize --model " + model_ + " --calib " + calib.string() +
                               " --format q4_k --out " + (dir_ / "o.gguf").string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("empty"), std::string::npos) << r.output;
  EXPECT_TRUE(no_outputs_in_dir());
}

TEST_F(CliCalibrate, TooShortCalibrationFile) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto calib = write_text("short.txt", "The kernel schedules tasks.\n\nPython has modules.\n");
  const RunResult r = run_calq("calibrate --model " + model_ + " --calib " + calib.string() + " --out " +
                               (dir_ / "s.gguf").string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("too short"), std::string::npos) << r.output;
  EXPECT_TRUE(no_outputs_in_dir());
}

TEST_F(CliCalibrate, MostlyUnknownTokens) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "\xe9\xbe\x98\xe9\xbd\x89 ";
  const auto calib = write_text("cjk.txt", text);
  const RunResult r = run_calq(quantize(dir_ / "o.gguf", "--format q4_k").replace(
      quantize(dir_ / "o.gguf", "--format q4_k").find(calib_), calib_.size(), calib.string()));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("unknown"), std::string::npos) << r.output;
  EXPECT_TRUE(no_outputs_in_dir());
}

TEST_F(CliCalibrate, RuleMatchingNothing) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const RunResult r = run_calq(quantize(dir_ / "o.gguf", "--format q4_k --rule 'blk\\.99\\.=q8_0'"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("matches no tensor"), std::string::npos) << r.output;
  EXPECT_TRUE(no_outputs_in_dir());
}

TEST_F(CliCalibrate, ExistingOutputNeedsForce) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto out = write_text("exists.gguf", "precious");
  const RunResult r = run_calq(quantize(out, "--format q4_k"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("force option"), std::string::npos) << r.output;
  EXPECT_EQ(bytes_of(out), "precious");
}

TEST_F(CliCalibrate, UnwritableOutputFolder) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  // sysfs refuses new files even to root (a chmod'ed folder would not stop root).
  if (!std::filesystem::is_directory("/sys")) GTEST_SKIP() << "no /sys";
  RunResult r = run_calq(quantize("/sys/calq-test-out.gguf", "--format q4_k"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("not writable"), std::string::npos) << r.output;
  r = run_calq(quantize(dir_ / "missing" / "o.gguf", "--format q4_k"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
}

// A tiny model whose second MLP norm is 1e30: finite weights (the loader accepts them) whose
// activations overflow to Inf inside layer 1. Its tokenizer is a one-character-per-token BPE.
TEST_F(CliCalibrate, InfiniteActivationsAreNamed) {
  const auto folder = dir_ / "tiny";
  model::testutil::write_tiny_model(folder, {.dtype = DType::kF32, .layers = 2});
  {
    const auto st = folder / "model.safetensors";
    const io::SafetensorsFile f = io::SafetensorsFile::open(st);
    const io::TensorInfo* norm = f.find("model.layers.1.post_attention_layernorm.weight");
    ASSERT_NE(norm, nullptr);
    std::string bytes = read_text_file(st);
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), 8);
    const float big = 1e30f;
    for (uint64_t o = norm->begin; o < norm->end; o += 4) std::memcpy(&bytes[8 + header + o], &big, 4);
    std::ofstream(st, std::ios::binary) << bytes;
  }
  nlohmann::json vocab = nlohmann::json::object();
  vocab["<unk>"] = 0;
  int id = 1;
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = id++;
  vocab[" "] = id++;
  nlohmann::json doc = {{"version", "1.0"}, {"added_tokens", nlohmann::json::array()}, {"normalizer", nullptr},
                        {"pre_tokenizer", nullptr}, {"post_processor", nullptr}, {"decoder", nullptr}};
  doc["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                  {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab},
                  {"merges", nlohmann::json::array()}};
  std::ofstream(folder / "tokenizer.json") << doc.dump();
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog\n\n";
  const auto calib = write_text("tiny.txt", text);
  const auto out = dir_ / "tiny-q.gguf";
  const RunResult r = run_calq("quantize --model " + folder.string() + " --calib " + calib.string() +
                               " --samples 4 --seq-len 16 --format int8-pc-sym --out " + out.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("non-finite activation"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("layer 1"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace calq
