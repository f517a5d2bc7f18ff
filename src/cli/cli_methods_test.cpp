// `calq quantize --method` end to end on the reference model with a small calibration: every
// method chain writes byte-identical files for --threads 1 and 2, records its recipe, and bad
// method input (unknown method, wrong order, a flag for a step not in the chain, a format GPTQ
// cannot target, a statistics file without the Hessian) exits 2 with a clear message and no output.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

class CliMethods : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = calq::testing::temp_dir("cli_methods");
    model_ = (calq::testing::shared_dir() / "models/calq-ref-llama").string();
    calib_ = (calq::testing::shared_dir() / "data/calib.txt").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Small calibration, only layer 0 quantized (the rule keeps the others float) and a q8_0 head
  // (no importance search over the 16k-row embedding), so a run takes a few seconds; the methods
  // still run on real weights and statistics.
  std::string quantize(const std::filesystem::path& out, const std::string& extra) const {
    return "quantize --model " + model_ + " --calib " + calib_ + " --samples 4 --seq-len 64 --out " + out.string() +
           " -q --force --head-format q8_0 --rule '^blk\\.[1-5]\\.=f32' " + extra;
  }
  bool no_outputs_in_dir() const { return testing::no_outputs_in_dir(dir_); }

  std::filesystem::path dir_;
  std::string model_, calib_;
};

TEST_F(CliMethods, BytesDoNotDependOnThreads) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  for (const std::string extra :
       {"--format int4-g128-asym --method gptq --act-order",
        // AWQ on layer 0's attention group only (its MLP kept float: AWQ skips float groups), the
        // costly part of this test otherwise.
        "--format q4_k --method awq+gptq --rule '^blk\\.0\\.ffn_=f32'",
        "--format int3-g128-asym --method rotate+gptq --rotate-down",
        "--format int8-pc-sym --method smoothquant --sq-alpha 0.8 --act-quant int8-tensor"}) {
    const auto one = dir_ / "one.gguf";
    const auto two = dir_ / "two.gguf";
    RunResult r = run_calq(quantize(one, extra + " --threads 1"));
    ASSERT_EQ(r.status, 0) << r.output;
    r = run_calq(quantize(two, extra + " --threads 2"));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(read_text_file(one), read_text_file(two)) << extra;
    const io::GgufFile f = io::GgufFile::open(one);
    const std::string recipe = f.get("calq.recipe").as_string("calq.recipe");
    const std::string method = extra.substr(extra.find("--method ") + 9, extra.find(' ', extra.find("--method ") + 9) -
                                                                             extra.find("--method ") - 9);
    const std::string chain = method.find("gptq") == std::string::npos ? method + "+rtn" : method;
    EXPECT_NE(recipe.find("method=" + chain + ";"), std::string::npos) << recipe;
  }
}

TEST_F(CliMethods, RecipeFileEqualsMethodFlags) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto recipe = dir_ / "recipe.json";
  std::ofstream(recipe) << R"({"steps": [{"method": "awq", "grid": 10}, {"method": "gptq", "act_order": true}]})";
  const auto a = dir_ / "a.gguf";
  const auto b = dir_ / "b.gguf";
  RunResult r = run_calq(quantize(a, "--format int4-g128-asym --recipe " + recipe.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  std::ofstream(recipe) << R"([{"method": "awq", "grid": 10}, {"method": "gptq"}])";
  r = run_calq(quantize(b, "--format int4-g128-asym --recipe " + recipe.string() + " --act-order"));
  ASSERT_EQ(r.status, 0) << r.output;
  // The recipe text differs only in the file name; the tensor bytes are the same.
  const io::GgufFile fa = io::GgufFile::open(a);
  const io::GgufFile fb = io::GgufFile::open(b);
  ASSERT_EQ(fa.tensors().size(), fb.tensors().size());
  for (size_t i = 0; i < fa.tensors().size(); ++i) {
    const auto ta = fa.tensor_data(fa.tensors()[i]);
    const auto tb = fb.tensor_data(fb.tensors()[i]);
    ASSERT_EQ(ta.size(), tb.size());
    EXPECT_TRUE(std::equal(ta.begin(), ta.end(), tb.begin())) << fa.tensors()[i].name;
  }
}

TEST_F(CliMethods, BadMethodInput) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto out = dir_ / "o.gguf";
  const struct {
    std::string extra, message;
  } cases[] = {
      {"--format q4_k --method gptqq", "unknown method 'gptqq'"},
      {"--format q4_k --method gptq+awq", "comes after the weight quantizer"},
      {"--format q4_k --method awq+smoothquant", "use one of them"},
      {"--format q4_k --method awq --act-order", "'act_order' applies to the gptq step"},
      {"--format nf4-dq --method gptq", "gptq cannot target format nf4-dq"},
      {"--format q4_k --method rtn --act-quant int4", "activation scheme 'int4'"},
  };
  for (const auto& c : cases) {
    const RunResult r = run_calq(quantize(out, c.extra));
    EXPECT_EQ(r.status, 2) << c.extra << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.extra << "\n" << r.output;
    EXPECT_TRUE(no_outputs_in_dir()) << c.extra;
  }
  // A statistics file without the Hessian cannot drive GPTQ.
  const auto stats = dir_ / "stats.bin";
  RunResult r = run_calq("calibrate --model " + model_ + " --calib " + calib_ +
                         " --samples 2 --seq-len 32 -q --out " + stats.string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_calq("quantize --model " + model_ + " --stats " + stats.string() + " --format q4_k --method gptq --out " +
               out.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("hessian"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
  // Rotation needs calibration of the rotated model.
  r = run_calq("quantize --model " + model_ + " --stats " + stats.string() +
               " --format q4_k --method rotate+rtn --out " + out.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("rotate needs calibration data"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace calq
