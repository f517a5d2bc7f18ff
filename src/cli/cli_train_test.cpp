// `calq quantize` with training steps (qat-block, qat-e2e, autoround) on a tiny model: --max-memory refuses an
// estimate over it before any work and passes one under it; bad training options and sizes exit 2
// naming the option with no output left; --json carries one training record per layer and for
// the model, with the loss curves scripts/plot_loss.py draws; the per-step progress is throttled;
// a non-finite loss stops the run naming the step, the layer and the parameter, with no output.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

class CliTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    CALQ_REQUIRE_SHARED("tokenizers/bytelevel-16k/tokenizer.json");
    CALQ_REQUIRE_SHARED("data/calib.txt");
    dir_ = calq::testing::temp_dir("cli_train");
    // A tiny model with a real byte-level tokenizer (the GGUF writer embeds it).
    model::testutil::write_tiny_model(dir_ / "hf", {.tied = false, .dtype = DType::kF32, .vocab_size = 16384});
    std::filesystem::copy_file(calq::testing::shared_dir() / "tokenizers/bytelevel-16k/tokenizer.json",
                               dir_ / "hf/tokenizer.json");
    calib_ = (calq::testing::shared_dir() / "data/calib.txt").string();
    std::filesystem::create_directories(dir_ / "out");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // gptq (int4, groups of 32; per channel for ffn_down's rows of 48) then `method` on 4 samples of
  // 32 tokens; the embedding and the head kept float (the tiny head's 16k rows would dominate the time).
  std::string quantize(const std::string& method, const std::string& extra) const {
    return "quantize --model " + (dir_ / "hf").string() + " --calib " + calib_ +
           " --samples 4 --seq-len 32 --threads 1 --format int4-g32-asym --rule '^(token_embd|output)\\.=f32' --rule 'ffn_down=int4-pc-asym' --out " +
           out().string() + " --method " + method + " " + extra;
  }
  std::filesystem::path out() const { return dir_ / "out" / "o.gguf"; }
  bool no_outputs() const { return calq::testing::no_outputs_in_dir(dir_ / "out"); }
  std::string recipe(const std::string& text) const {
    const auto path = dir_ / "recipe.json";
    std::ofstream(path) << text;
    return path.string();
  }

  // Multiplies one tensor of the tiny model by `factor` (finite, enormous weights).
  void scale_tensor(const std::string& name, float factor) const {
    const auto path = dir_ / "hf" / "model.safetensors";
    std::vector<std::string> names;
    std::vector<Shape> shapes;
    std::vector<std::vector<float>> values;
    {
      const io::SafetensorsFile f = io::SafetensorsFile::open(path);
      for (const io::TensorInfo& t : f.tensors()) {
        const Tensor x = f.tensor(t.name);
        names.push_back(t.name);
        shapes.push_back(t.shape);
        values.emplace_back(x.f32(), x.f32() + x.numel());
        if (t.name == name)
          for (float& v : values.back()) v *= factor;
      }
    }
    ASSERT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
    std::vector<io::TensorToWrite> tensors;
    for (size_t i = 0; i < names.size(); ++i)
      tensors.push_back({names[i], DType::kF32, shapes[i], std::as_bytes(std::span<const float>(values[i]))});
    io::write_safetensors(path, tensors);
  }

  std::filesystem::path dir_;
  std::string calib_;
};

TEST_F(CliTrain, MaxMemoryRefusesBeforeAnyWork) {
  for (const std::string method : {"gptq+qat-block", "gptq+qat-e2e", "gptq+autoround"}) {
    // A calibration text that does not exist: the refusal comes before it is read.
    const std::string args = quantize(method, "--max-memory 64K");
    const std::string no_calib = args.substr(0, args.find(" --calib ")) + " --calib " +
                                 (dir_ / "missing.txt").string() + args.substr(args.find(" --samples"));
    const auto t0 = std::chrono::steady_clock::now();
    const RunResult r = run_calq(no_calib);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.status, 2) << r.output;
    const std::string name = method.substr(5);
    EXPECT_NE(r.output.find(name + " needs an estimated "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("more than max_memory 64.0 KiB"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("activations "), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("missing.txt"), std::string::npos) << r.output;
    EXPECT_LT(seconds, 10.0);
    EXPECT_TRUE(no_outputs());
  }
  // Large enough: the run goes through, announcing the estimate when training starts.
  const RunResult r = run_calq(quantize("gptq+qat-block+qat-e2e", "--max-memory 8G"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("qat-block: estimated peak "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("qat-e2e: estimated peak "), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out()));
  const RunResult a = run_calq(quantize("autoround", "--max-memory 8G --force"));
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_NE(a.output.find("autoround: estimated peak "), std::string::npos) << a.output;
  EXPECT_NE(a.output.find("autoround layer 1: output mse "), std::string::npos) << a.output;
}

// The layer pass has its own estimate (issue 23): a plain GPTQ run is refused under max_memory too,
// naming the parts, before the calibration text is read.
TEST_F(CliTrain, MaxMemoryRefusesTheLayerPass) {
  const std::string args = quantize("gptq", "--max-memory 64K");
  const RunResult r = run_calq(args.substr(0, args.find(" --calib ")) + " --calib " + (dir_ / "missing.txt").string() +
                               args.substr(args.find(" --samples")));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("layer pass needs an estimated "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("one layer in float32 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gptq's working copies "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("more than max_memory 64.0 KiB"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("missing.txt"), std::string::npos) << r.output;
  EXPECT_TRUE(no_outputs());
}

TEST_F(CliTrain, BadSizesAndTrainingOptionsExitTwoBeforeAnyWork) {
  for (const std::string size : {"6X", "abc", "0", "-1G", "1.2.3M", "12 G"}) {
    const RunResult r = run_calq(quantize("gptq+qat-block", "--max-memory '" + size + "'"));
    EXPECT_EQ(r.status, 2) << size << "\n" << r.output;
    EXPECT_NE(r.output.find("--max-memory"), std::string::npos) << size << "\n" << r.output;
    EXPECT_TRUE(no_outputs()) << size;
  }
  const struct {
    std::string step, key, value;
  } cases[] = {
      {"qat-block", "lr_weights", "0"}, {"qat-block", "lr_quant", "-1e-5"}, {"qat-block", "epochs", "0"},
      {"qat-block", "batch", "0"},      {"qat-e2e", "lr", "0"},             {"qat-e2e", "lr_weights", "-1"},
      {"qat-e2e", "epochs", "0"},       {"qat-e2e", "batch", "0"},          {"autoround", "iters", "0"},
      {"autoround", "lr", "-1"},        {"autoround", "batch", "0"},
  };
  for (const auto& c : cases) {
    const std::string file = recipe(R"([{"method": "gptq"}, {"method": ")" + c.step + R"(", ")" + c.key +
                                    R"(": )" + c.value + "}]");
    // The calibration text does not exist either: the option is refused first.
    std::string args = quantize("rtn", "--recipe " + file);
    args.replace(args.find(" --method rtn"), 13, "");
    args.replace(args.find(calib_), calib_.size(), (dir_ / "missing.txt").string());
    const RunResult r = run_calq(args);
    EXPECT_EQ(r.status, 2) << c.step << " " << c.key << "\n" << r.output;
    EXPECT_NE(r.output.find(c.step), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("'" + c.key + "'"), std::string::npos) << r.output;
    EXPECT_TRUE(no_outputs()) << c.key;
  }
}

// Every training record's curve has its steps; one record per layer (qat-block) and one for the
// model (qat-e2e, layer -1); scripts/plot_loss.py draws one polyline per record.
TEST_F(CliTrain, JsonCarriesTheLossCurvesAndThePlotDrawsThem) {
  const auto json_path = dir_ / "out" / "report.json";
  const RunResult r = run_calq(quantize("gptq+qat-block+qat-e2e", "-q --json " + json_path.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(read_text_file(json_path));
  EXPECT_EQ(j["out"], out().string());
  EXPECT_EQ(j["form"], "format");
  ASSERT_EQ(j["training"].size(), 3u) << j.dump(1);
  for (size_t i = 0; i < 3; ++i) {
    const auto& t = j["training"][i];
    EXPECT_EQ(t["method"], i < 2 ? "qat-block" : "qat-e2e");
    EXPECT_EQ(t["layer"], i < 2 ? static_cast<int>(i) : -1);
    EXPECT_EQ(t["steps"].get<size_t>(), t["curve"].size());
    EXPECT_GT(t["steps"].get<int>(), 0);
    EXPECT_TRUE(t["trained"].get<bool>());
    EXPECT_GT(t["loss_start"].get<double>(), 0.0);
    EXPECT_EQ(t["kept"].get<bool>(), t["loss_written"].get<double>() < t["loss_start"].get<double>());
  }
  ASSERT_EQ(j["training_memory"].size(), 2u);
  EXPECT_EQ(j["training_memory"][1]["method"], "qat-e2e");
  uint64_t parts = 0;
  for (const auto& [k, v] : j["training_memory"][1]["parts"].items()) parts += v.get<uint64_t>();
  EXPECT_EQ(parts, j["training_memory"][1]["bytes"].get<uint64_t>());
  EXPECT_TRUE(j["training_memory"][1]["parts"].contains("teacher cache"));
  // qat-block trains while its layer's GPTQ Hessians are held (once: one total per site, moved into
  // the layer's methods) — hidden 32 (attn_in, mlp_in), heads · head_dim = 32 (attn_out), 48 (down);
  // qat-e2e runs after every layer, when none is.
  EXPECT_EQ(j["training_memory"][0]["parts"]["layer statistics"].get<uint64_t>(), 8u * (32u * 32u * 3u + 48u * 48u));
  EXPECT_FALSE(j["training_memory"][1]["parts"].contains("layer statistics"));

  if (std::system("python3 -c 'import xml.etree.ElementTree' > /dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const auto svg = dir_ / "loss.svg";
  for (const std::string log : {"", " --log"}) {
    const RunResult p = calq::testing::run_command("python3 " + std::string(CALQ_SOURCE_DIR) + "/scripts/plot_loss.py " +
                                                   json_path.string() + " " + svg.string() + log);
    ASSERT_EQ(p.status, 0) << p.output;
    const RunResult count = calq::testing::run_command(
        "python3 -c \"import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); "
        "print(len(r.findall('.//{http://www.w3.org/2000/svg}polyline')))\" " +
        svg.string());
    ASSERT_EQ(count.status, 0) << count.output;
    EXPECT_EQ(std::stoi(count.output), 3) << count.output;
  }
}

// Hundreds of optimizer steps print a handful of lines off a terminal: each run's first and last.
TEST_F(CliTrain, StepProgressIsThrottled) {
  const std::string file = recipe(R"([{"method": "gptq"}, {"method": "qat-block", "epochs": 60, "batch": 1}])");
  std::string args = quantize("rtn", "--recipe " + file);
  args.replace(args.find(" --method rtn"), 13, "");
  const RunResult r = run_calq(args);
  ASSERT_EQ(r.status, 0) << r.output;
  int lines = 0;
  size_t at = 0;
  while ((at = r.output.find(" step ", at)) != std::string::npos) ++lines, ++at;
  EXPECT_GE(lines, 4) << r.output;   // the first and the last step of each of the 2 layers
  EXPECT_LE(lines, 10) << r.output;  // of 480 steps
  EXPECT_NE(r.output.find("step 240/240"), std::string::npos) << r.output;
}

// A non-finite loss stops the run naming the step, the layer and the parameter, exit 2, no output
// (nor a temporary file). Provoked by finite but enormous weights the calibration pass takes:
//  * qat-block: layer 1's ffn_down × 3e37 (f32-scaled formats store its steps) makes layer 1's
//    outputs overflow; qat-block trains layer 1 right after its weight quantizer, before the
//    calibration pass reaches the head (whose input check would report the same overflow);
//  * qat-e2e: the float head × 1e38 makes the float teacher's logits overflow (the calibration
//    pass computes no logits), so the KL is NaN at the first step.
TEST_F(CliTrain, NonFiniteLossStopsTheRunWithNoOutput) {
  scale_tensor("model.layers.1.mlp.down_proj.weight", 3e37f);
  std::string args = quantize("gptq+qat-block", "--json " + (dir_ / "out" / "r.json").string());
  args.replace(args.find("int4-g32-asym "), 14, "int4-g32-asym-f32 ");
  args.replace(args.find("ffn_down=int4-pc-asym'"), 22, "ffn_down=int4-pc-asym-f32'");
  RunResult r = run_calq(args);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("qat-block layer 1: step 1: the loss is "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("blk.1."), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is not finite"), std::string::npos) << r.output;
  EXPECT_TRUE(no_outputs());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out" / "r.json"));

  scale_tensor("model.layers.1.mlp.down_proj.weight", 1 / 3e37f);
  scale_tensor("lm_head.weight", 1e38f);
  r = run_calq(quantize("gptq+qat-e2e", ""));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("qat-e2e: step 1: the loss is "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gradient of blk."), std::string::npos) << r.output;
  EXPECT_TRUE(no_outputs());
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "out"));
}

}  // namespace
}  // namespace calq
