// `calq sensitivity`, `calq bisect`, `calq calib-check` end to end: outputs and their keys on a
// tiny model, a tensor planted with 2-bit weights found by bisect, calibration drift on the
// reference model's texts, and bad inputs refused with exit status 2.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "model/gguf_export.h"
#include "model/model.h"
#include "pipeline/model_quantize.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

class CliDiag : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("cli_diag");
    model::testutil::write_tiny_model(dir_ / "hf", {.tied = false, .layers = 2});
    testing::write_letter_tokenizer(dir_ / "hf/tokenizer.json", "abcde");  // every letter is one token
    std::string text;
    for (int i = 0; i < 200; ++i) text += "abcde"[(i * i + 3 * i) % 5];
    std::ofstream(text_ = dir_ / "text.txt") << text;
    std::ofstream(dir_ / "empty.txt") << "\n  \n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The tiny model quantized to int8 per channel, `rule` overriding some tensors, as a GGUF without
  // tokenizer keys (the test tokenizer has no GGUF form, so `calq quantize` cannot write it).
  std::string quantized(const std::string& rule) const {
    ThreadPool pool(1);
    model::Model m = model::load_hf_model(dir_ / "hf", pool);
    pipeline::ModelQuantizeOptions o{.format = &format_by_name("int8-pc-sym")};
    if (!rule.empty()) o.rules.push_back(pipeline::parse_tensor_rule(rule));
    pipeline::quantize_model(m, o, {}, {}, nullptr, nullptr, pool);
    m.source.clear();
    const auto path = dir_ / "q.gguf";
    model::write_gguf_model(m, path, {}, pool);
    return path.string();
  }
  std::string hf() const { return (dir_ / "hf").string(); }
  std::filesystem::path dir_, text_;
};

TEST_F(CliDiag, SensitivityWritesTableJsonAndOneSvgPerFormat) {
  const RunResult r = run_calq("sensitivity -q --model " + hf() + " --eval-text " + text_.string() +
                               " --format int2-pc-asym,int8-pc-sym --ctx 16 --max-windows 4 --json " +
                               (dir_ / "s.json").string() + " --svg " + (dir_ / "map.svg").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("kld int2-pc-asym"), std::string::npos) << r.output;
  const nlohmann::json j = nlohmann::json::parse(read_text_file(dir_ / "s.json"));
  for (const char* key : {"model", "eval_text", "ctx", "windows", "granularity", "method", "formats", "entries"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["ctx"], 16);
  EXPECT_EQ(j["windows"], 4);
  EXPECT_EQ(j["granularity"], "tensor");
  EXPECT_EQ(j["method"], "rtn");
  ASSERT_EQ(j["entries"].size(), 2u * 7u + 2u);
  const auto& e = j["entries"][1];
  EXPECT_EQ(e["tensor"], "blk.0.attn_q.weight");
  EXPECT_EQ(e["layer"], 0);
  EXPECT_EQ(e["role"], "attn_q");
  EXPECT_EQ(e["params"], 32 * 32);
  EXPECT_GT(e["kld"]["int2-pc-asym"].get<double>(), e["kld"]["int8-pc-sym"].get<double>());
  EXPECT_GT(e["bytes"]["int8-pc-sym"].get<int64_t>(), e["bytes"]["int2-pc-asym"].get<int64_t>());
  for (const char* svg : {"map-int2-pc-asym.svg", "map-int8-pc-sym.svg"}) {
    ASSERT_TRUE(std::filesystem::exists(dir_ / svg)) << svg;
    EXPECT_NE(read_text_file(dir_ / svg).find("<svg"), std::string::npos);
  }
  const RunResult l = run_calq("sensitivity -q --model " + hf() + " --eval-text " + text_.string() +
                               " --format int4-pc-asym --granularity layer --no-head --ctx 16 --json " +
                               (dir_ / "l.json").string());
  ASSERT_EQ(l.status, 0) << l.output;
  const nlohmann::json lj = nlohmann::json::parse(read_text_file(dir_ / "l.json"));
  ASSERT_EQ(lj["entries"].size(), 2u);
  EXPECT_EQ(lj["entries"][1]["tensor"], "blk.1");
}

TEST_F(CliDiag, BisectFindsThePlantedTensor) {
  const std::string q = quantized("blk\\.1\\.ffn_up=int2-pc-asym");
  const RunResult r = run_calq("bisect -q --model " + hf() + " --quantized " + q + " --eval-text " + text_.string() +
                               " --ctx 16 --json " + (dir_ / "b.json").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("found       1 tensor(s): blk.1.ffn_up.weight"), std::string::npos) << r.output;
  const nlohmann::json j = nlohmann::json::parse(read_text_file(dir_ / "b.json"));
  EXPECT_EQ(j["restored"], nlohmann::json::array({"blk.1.ffn_up.weight"}));
  const auto n = j["candidates"].get<double>();
  EXPECT_EQ(n, 2 * 7 + 2);
  EXPECT_LE(j["evaluations"].get<double>(), 2 * std::log2(n) + 2);
  EXPECT_EQ(j["steps"].size(), j["evaluations"].get<size_t>());
  EXPECT_LE(j["kld"].get<double>(), j["goal"].get<double>());
}

TEST_F(CliDiag, BadInputsExitTwo) {
  const std::string common = " --model " + hf() + " --eval-text " + text_.string() + " --ctx 16";
  const std::string q = quantized("");
  model::testutil::write_tiny_model(dir_ / "deep", {.tied = false, .layers = 3});
  const struct {
    std::string args, needle;
  } cases[] = {
      {"sensitivity" + common + " --format int17", "int17"},
      {"sensitivity --model " + hf() + " --eval-text " + (dir_ / "empty.txt").string() + " --format int8-pc-sym", "empty"},
      {"sensitivity --model " + hf() + " --eval-text " + (dir_ / "missing.txt").string() + " --format int8-pc-sym",
       "missing.txt"},
      {"sensitivity" + common + " --format int8-pc-sym --granularity block", "granularity"},
      {"sensitivity" + common + " --format int8-pc-sym --method awq", "only weight quantizers (rtn, gptq)"},
      {"sensitivity" + common + " --format int8-pc-sym --json " + (dir_ / "nodir/x.json").string(), "does not exist"},
      {"bisect" + common + " --quantized " + q + " --tolerance 0", "tolerance"},
      {"bisect" + common + " --quantized " + q + " --tolerance -1", "tolerance"},
      {"bisect" + common, "quantized"},
      {"bisect --model " + (dir_ / "deep").string() + " --quantized " + q + " --eval-text " + text_.string(), "layers"},
      {"bisect" + common + " --quantized " + q + " --restore-format int17", "int17"},
      {"calib-check --model " + hf() + " --calib " + (dir_ / "missing.txt").string() + " --eval-text " + text_.string(),
       "missing.txt"},
  };
  for (const auto& c : cases) {
    const RunResult r = run_calq(c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
  }
}

// Calibration drift on the reference model: two halves of calib.txt agree, a text of digits does
// not; also reachable as `calq bisect --calib-check`.
TEST(CliCalibCheck, DigitsDriftMoreThanTwoHalvesOfOneText) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  const auto shared = testing::shared_dir();
  const auto dir = testing::temp_dir("cli_calib_check");
  const std::string calib = read_text_file(shared / "data/calib.txt");
  const size_t half = calib.find("\n\n", calib.size() / 2);
  std::ofstream(dir / "a.txt") << calib.substr(0, half);
  std::ofstream(dir / "b.txt") << calib.substr(half);
  std::string digits;
  for (int i = 0; i < 20000; ++i) digits += std::to_string((i * 7919) % 1000) + (i % 16 == 15 ? "\n" : " ");
  std::ofstream(dir / "digits.txt") << digits;
  const std::string model = (shared / "models/calq-ref-llama").string();
  const auto run = [&](const std::string& sub, const std::string& a, const std::string& b, const std::string& json) {
    const RunResult r = run_calq(sub + " -q --model " + model + " --calib " + a + " --eval-text " + b +
                                 " --samples 8 --seq-len 256 --json " + (dir / json).string());
    EXPECT_EQ(r.status, 0) << r.output;
    std::printf("%s", r.output.c_str());
    return nlohmann::json::parse(read_text_file(dir / json));
  };
  const nlohmann::json halves = run("calib-check", (dir / "a.txt").string(), (dir / "b.txt").string(), "h.json");
  const nlohmann::json other = run("bisect --calib-check", (dir / "a.txt").string(), (dir / "digits.txt").string(), "d.json");
  const nlohmann::json heldout = run("calib-check", (dir / "a.txt").string(), (shared / "data/heldout.txt").string(), "e.json");
  EXPECT_FALSE(halves["flagged"].get<bool>()) << halves["score"];
  EXPECT_TRUE(other["flagged"].get<bool>()) << other["score"];
  EXPECT_FALSE(heldout["flagged"].get<bool>()) << heldout["score"];
  EXPECT_GT(other["score"].get<double>(), 2 * halves["score"].get<double>());
  EXPECT_EQ(halves["sites"].size(), 6u * 4u + 1u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq
