// `calq quantize --target-bpw` end to end on the reference model with a fixture sensitivity map:
// the file stays within the budget, every tensor has the format of the optimum the solver predicts
// (computed here from the map and the formats' sizes alone), the result does not depend on the
// thread count, --verify-text prints the measured KLD, and bad input exits 2 with no output.
#include <gtest/gtest.h>

#include <sstream>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "pipeline/bit_alloc.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

struct Tensor {
  std::string name;
  int64_t rows, cols;
  double kld_q4;  // q6_k costs 1/8 of it, q8_0 1/64
};

// calq-ref-llama: hidden 512, 2 KV heads of 64, intermediate 1536, 6 layers, tied 16384 vocab.
std::vector<Tensor> reference_tensors() {
  std::vector<Tensor> t = {{"token_embd.weight", 16384, 512, 0.02}};
  const struct { const char* role; int64_t rows, cols; } roles[] = {
      {"attn_q", 512, 512},     {"attn_k", 128, 512},   {"attn_v", 128, 512},    {"attn_output", 512, 512},
      {"ffn_gate", 1536, 512}, {"ffn_up", 1536, 512}, {"ffn_down", 512, 1536}};
  for (int l = 0; l < 6; ++l) {
    for (int i = 0; i < 7; ++i) {
      const std::string role = roles[i].role;
      const double k = 0.001 * (1 + l) * (role == "attn_v" || role == "ffn_down" ? 3 : 1) * (1 + 0.1 * i);
      t.push_back({fmt::format("blk.{}.{}.weight", l, role), roles[i].rows, roles[i].cols, k});
    }
  }
  return t;
}

std::string fixture_map(const std::string& granularity = "tensor") {
  std::string entries;
  for (const auto& t : reference_tensors()) {
    entries += fmt::format(R"({}{{"tensor": "{}", "layer": 0, "role": "r", "params": {},
                           "kld": {{"q4_k": {}, "q6_k": {}, "q8_0": {}}}}})",
                           entries.empty() ? "" : ",\n", t.name, t.rows * t.cols, t.kld_q4, t.kld_q4 / 8,
                           t.kld_q4 / 64);
  }
  return R"({"model": "calq-ref-llama", "eval_text": "heldout.txt", "ctx": 64, "windows": 2, "granularity": ")" +
         granularity + R"(", "method": "rtn", "formats": ["q4_k", "q6_k", "q8_0"], "entries": [)" + entries + "]}";
}

class CliTargetBpw : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = calq::testing::temp_dir("cli_target_bpw");
    model_ = (calq::testing::shared_dir() / "models/calq-ref-llama").string();
    map_ = (dir_ / "map.json").string();
    std::ofstream(map_) << fixture_map();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string quantize(const std::filesystem::path& out, const std::string& extra) const {
    return "quantize --model " + model_ + " --out " + out.string() + " -q --force " + extra;
  }

  std::filesystem::path dir_;
  std::string model_, map_;
};

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

TEST_F(CliTargetBpw, MeetsTheBudgetWithThePredictedOptimum) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const std::vector<const Format*> formats = {&format_by_name("q4_k"), &format_by_name("q6_k"),
                                              &format_by_name("q8_0")};
  for (const double target : {4.7, 5.5, 7.0}) {
    const auto out = dir_ / "out.gguf";
    const RunResult r = run_calq(quantize(out, fmt::format("--target-bpw {} --candidates q4_k,q6_k,q8_0 "
                                                           "--sensitivity {}", target, map_)));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("predicted   KLD"), std::string::npos) << r.output;
    ThreadPool pool(1);
    const model::Model q = model::load_gguf_model(out, pool);
    EXPECT_LE(q.bits_per_weight(), target);

    // The optimum from the map alone: fixed bytes are the float32 norms (2 per layer + the final).
    const uint64_t params = static_cast<uint64_t>(q.parameter_count());
    const uint64_t fixed = (6 * 2 + 1) * 512 * 4;
    auto budget = static_cast<uint64_t>(std::floor(target * static_cast<double>(params) / 8));
    while (8.0 * static_cast<double>(budget) / static_cast<double>(params) > target) --budget;
    std::vector<pipeline::BitItem> items;
    for (const auto& t : reference_tensors()) {
      pipeline::BitItem item{.name = t.name, .options = {}};
      for (size_t j = 0; j < formats.size(); ++j) {
        item.options.push_back({.bytes = formats[j]->tensor_bytes(t.rows, t.cols),
                                .kld = t.kld_q4 / std::pow(8.0, static_cast<double>(j))});
      }
      items.push_back(item);
    }
    const pipeline::BitAllocation want = pipeline::allocate_bits(items, {.budget_bytes = budget - fixed});
    EXPECT_EQ(q.storage_bytes(), fixed + want.bytes) << target;
    const io::GgufFile f = io::GgufFile::open(out);
    for (size_t i = 0; i < items.size(); ++i) {
      const auto it = std::find_if(f.tensors().begin(), f.tensors().end(),
                                   [&](const io::GgufTensorInfo& t) { return t.name == items[i].name; });
      ASSERT_NE(it, f.tensors().end()) << items[i].name;
      EXPECT_EQ(lower(io::ggml_type_info(it->type)->name), formats[want.choice[i]]->name())
          << items[i].name << " at " << target;
    }
    const std::string recipe = f.get("calq.recipe").as_string("calq.recipe");
    EXPECT_NE(recipe.find(fmt::format("target_bpw={};candidates=q4_k,q6_k,q8_0", target)), std::string::npos)
        << recipe;
  }
}

TEST_F(CliTargetBpw, DeterministicAndVerified) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  const std::string args = "--target-bpw 5 --candidates q4_k,q6_k,q8_0 --sensitivity " + map_;
  RunResult r = run_calq(quantize(dir_ / "one.gguf", args + " --threads 1"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_calq(quantize(dir_ / "two.gguf", args + " --threads 2 --verify-text " +
                                               (calq::testing::shared_dir() / "data/heldout.txt").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_text_file(dir_ / "one.gguf"), read_text_file(dir_ / "two.gguf"));
  EXPECT_NE(r.output.find("verify      2 windows x 64 tokens: measured KLD"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("vs predicted 0.1"), std::string::npos) << r.output;
}

TEST_F(CliTargetBpw, BadInputExits2WithoutOutput) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto out = dir_ / "out.gguf";
  const auto expect_error = [&](const std::string& extra, const std::string& message) {
    const RunResult r = run_calq(quantize(out, extra));
    EXPECT_EQ(r.status, 2) << extra << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << extra << "\n" << r.output;
    EXPECT_TRUE(testing::no_outputs_in_dir(dir_)) << extra;
  };
  const std::string cands = " --candidates q4_k,q6_k,q8_0";
  expect_error("--target-bpw 3" + cands + " --sensitivity " + map_,
               "target 3 bits per weight: infeasible; the smallest candidates give 4.5");
  expect_error("--target-bpw 5" + cands, "needs one of sensitivity");
  expect_error("--target-bpw 5" + cands + " --sensitivity " + map_ + " --sensitivity-text " + map_,
               "needs one of sensitivity");
  expect_error("--target-bpw 5" + cands + " --sensitivity-text " + (dir_ / "nope.txt").string(),
               "sensitivity text file not found");
  expect_error("--target-bpw 5" + cands + " --sensitivity-text " + map_ + " --sensitivity-ctx 1",
               "sensitivity_ctx must be >= 2");
  expect_error("--format q4_k --sensitivity-text " + map_, "go with a target bits_per_weight");
  expect_error("--target-bpw 5 --sensitivity " + map_, "needs candidates");
  expect_error("--format q4_k --candidates q4_k", "go with a target bits_per_weight");
  expect_error("--target-bpw 5 --candidates q4_k,q5_k --sensitivity " + map_, "candidate q5_k was not measured");
  expect_error("--target-bpw 5 --candidates q4_k,q4_k --sensitivity " + map_, "q4_k is listed twice");
  expect_error("--target-bpw 5 --type q4_k_m" + cands + " --sensitivity " + map_, "or a target bits_per_weight, not both");
  std::ofstream(dir_ / "layer.json") << fixture_map("layer");
  expect_error("--target-bpw 5" + cands + " --sensitivity " + (dir_ / "layer.json").string(),
               "layer.json: granularity is \"layer\"");
  std::string text = fixture_map();
  text.replace(text.find("blk.5.ffn_down"), 14, "blk.9.ffn_down");
  std::ofstream(dir_ / "other.json") << text;
  expect_error("--target-bpw 5" + cands + " --sensitivity " + (dir_ / "other.json").string(),
               "other.json: entry blk.9.ffn_down.weight is not a quantizable tensor");
  expect_error("--target-bpw 5" + cands + " --sensitivity " + map_ + " --verify-text " + (dir_ / "nope.txt").string(),
               "verify text file not found");
}

// The map measured in-process (--sensitivity-text) is the map `calq sensitivity` writes: the same
// allocation, tensor by tensor. One window of 64 tokens and two formats keep it short.
TEST_F(CliTargetBpw, MeasuredMapGivesTheSameAllocationAsAMapFile) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  CALQ_REQUIRE_SHARED("data/calib.txt");
  const std::string text = (calq::testing::shared_dir() / "data/calib.txt").string();
  RunResult r = run_calq("sensitivity -q --model " + model_ + " --eval-text " + text +
                          " --format q6_k,q8_0 --max-windows 1 --ctx 64 --no-head --json " + (dir_ / "measured.json").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const auto table = [](const std::string& out) {  // the allocation lines of the report
    std::string lines;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) {
      if (line.find(".weight ") != std::string::npos || line.rfind("predicted", 0) == 0) lines += line + "\n";
    }
    return lines;
  };
  const std::string args = " --target-bpw 7.5 --candidates q6_k,q8_0 --head-format q8_0";
  const RunResult from_file = run_calq("quantize --force --model " + model_ + " --out " + (dir_ / "a.gguf").string() +
                                       args + " --sensitivity " + (dir_ / "measured.json").string());
  ASSERT_EQ(from_file.status, 0) << from_file.output;
  const RunResult measured = run_calq("quantize --force --model " + model_ + " --out " + (dir_ / "b.gguf").string() +
                                      args + " --sensitivity-text " + text + " --sensitivity-windows 1 --sensitivity-ctx 64");
  ASSERT_EQ(measured.status, 0) << measured.output;
  const std::string a = table(from_file.output), b = table(measured.output);
  EXPECT_NE(a.find("q6_k"), std::string::npos) << a;  // a real mix, not one format
  EXPECT_NE(a.find("q8_0"), std::string::npos) << a;
  // Identical up to the map's name in the "predicted" line.
  EXPECT_EQ(a.substr(0, a.find("predicted")), b.substr(0, b.find("predicted")));
  EXPECT_NE(b.find("predicted"), std::string::npos) << measured.output;
  const std::string recipe = io::GgufFile::open(dir_ / "b.gguf").get("calq.recipe").as_string("calq.recipe");
  EXPECT_NE(recipe.find("sensitivity=measured:calib.txt:1:ctx64"), std::string::npos) << recipe;
}

}  // namespace
}  // namespace calq
