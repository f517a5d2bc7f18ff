// `calq eval --adapter` and `calq merge` on a tiny model: the base hash as documented (checked
// with the shell's sha256sum), the report's adapters and bits per weight, the merged GGUF's
// logits against the adapted model's, and the bad inputs (hash mismatch, existing output, bad
// type) with exit status 2 and nothing written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/peft_adapter.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::eval_json;
using testing::run_calq;
using testing::run_command;
namespace fs = std::filesystem;

Tensor random_tensor(const Shape& shape, uint32_t seed) {
  Tensor t = Tensor::zeros(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.3f);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_f32()[i] = d(rng);
  return t;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d = std::max(d, static_cast<double>(std::abs(a.f32()[i] - b.f32()[i])));
  return d;
}

class CliAdapter : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("cli_adapter");
    model::testutil::write_tiny_model(dir_ / "hf", {.tied = true});
    testing::write_letter_tokenizer(dir_ / "hf/tokenizer.json", "abcde");  // every letter is one token
    std::string text;
    for (int i = 0; i < 101; ++i) text += "abcde"[(i * i + 3 * i) % 5];
    std::ofstream(text_ = dir_ / "text.txt") << text;
    // The documented hash of a Hugging Face folder, computed by the shell.
    const RunResult h = run_command("cd " + (dir_ / "hf").string() +
                                    " && cat $(LC_ALL=C ls *.safetensors) config.json | sha256sum | cut -c1-64");
    ASSERT_EQ(h.status, 0) << h.output;
    hash_ = h.output.substr(0, 64);
    base_ = model::load_hf_model(dir_ / "hf", pool_);
    adapted_ = base_;
    uint32_t seed = 3;
    for (auto& l : adapted_.layers) {
      for (const model::TensorRole role : {model::TensorRole::kAttnQ, model::TensorRole::kMlpUp}) {
        const model::LinearWeight& w = l.linear(role);
        l.adapter_slot(role) = model::LoraAdapter::make(random_tensor({4, w.cols()}, seed), random_tensor({w.rows(), 4}, seed + 1),
                                                        8.0, w.cols(), w.rows(), "test");
        seed += 2;
      }
    }
    write_adapters(dir_ / "adapter", hash_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_adapters(const fs::path& out, const std::string& hash) {
    model::write_peft_adapters(adapted_, out,
                               {.provenance = {.base_model_sha256 = hash, .base_model_path = (dir_ / "hf").string(),
                                               .calq_version = "test"}});
  }
  std::string hf() const { return (dir_ / "hf").string(); }
  std::string text_args() const { return " --text " + text_.string() + " --ctx 16"; }

  ThreadPool pool_{2};
  fs::path dir_, text_;
  std::string hash_;
  model::Model base_, adapted_;
};

TEST_F(CliAdapter, EvalReportsAdaptersAndTheirBits) {
  const nlohmann::json plain = eval_json("--model " + hf() + text_args(), dir_ / "plain.json");
  const RunResult r = run_calq("eval --quiet --model " + hf() + text_args() + " --adapter " + (dir_ / "adapter").string() +
                               " --json " + (dir_ / "a.json").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("adapters    " + (dir_ / "adapter").string() + ": 4 linears, rank 4, alpha 8"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("base sha256 checked"), std::string::npos) << r.output;
  const auto j = nlohmann::json::parse(read_text_file(dir_ / "a.json"));
  const auto& a = j["adapters"];
  EXPECT_EQ(a["count"], 4);
  EXPECT_EQ(a["rank_min"], 4);
  EXPECT_EQ(a["rank_max"], 4);
  EXPECT_EQ(a["base_model_sha256"], hash_);
  EXPECT_EQ(a["hash_checked"], true);
  const double params = static_cast<double>(base_.parameter_count());
  EXPECT_DOUBLE_EQ(a["model_bits_per_weight"].get<double>(), adapted_.bits_per_weight());
  EXPECT_DOUBLE_EQ(a["bits_per_weight"].get<double>(),
                   8.0 * static_cast<double>(adapted_.storage_bytes() - base_.storage_bytes()) / params);
  EXPECT_GT(a["bits_per_weight"].get<double>(), 0.1);
  // The adapters change the perplexity; without a reference the model is compared with nothing.
  EXPECT_NE(j["ppl"], plain["ppl"]);
  EXPECT_FALSE(plain.contains("adapters"));

  // With a reference: the adapted model's row names its adapters.
  const RunResult c = run_calq("eval --quiet --ref " + hf() + " --model " + hf() + text_args() + " --adapter " +
                               (dir_ / "adapter").string());
  ASSERT_EQ(c.status, 0) << c.output;
  EXPECT_NE(c.output.find("hf +lora"), std::string::npos) << c.output;
}

TEST_F(CliAdapter, HashMismatchIsRefusedUnlessSkipped) {
  const std::string other(64, '0');
  write_adapters(dir_ / "other", other);
  const std::string args = "eval --quiet --model " + hf() + text_args() + " --adapter " + (dir_ / "other").string();
  const RunResult r = run_calq(args + " --json " + (dir_ / "x.json").string());
  EXPECT_EQ(r.status, 2) << r.output;
  for (const std::string& needle : {(dir_ / "other").string(), other, hash_, std::string("adapter_skip_hash_check")})
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle << " in " << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "x.json"));
  const RunResult skip = run_calq(args + " --adapter-skip-hash-check");
  EXPECT_EQ(skip.status, 0) << skip.output;
  EXPECT_NE(skip.output.find("base sha256 not checked"), std::string::npos) << skip.output;
}

// The merged GGUF against the adapted model: f32 to forward-pass rounding (the bound
// tiny_model_test holds the forward pass to), f16 bit for bit against the merged weights rounded
// to f16 in process (so only float16 rounding separates it from the adapted model). The base is
// the model's GGUF copy (its hash: the file's sha256, computed by the shell; Q/K rows permuted as
// llama.cpp's converter does, so the merge must hold the adapters in the loader's row order).
TEST_F(CliAdapter, MergedGgufGivesTheAdaptedLogits) {
  const fs::path gguf = dir_ / "base.gguf";
  model::testutil::write_tiny_gguf(base_, gguf, DType::kF32);
  const RunResult h = run_command("sha256sum " + gguf.string() + " | cut -c1-64");
  ASSERT_EQ(h.status, 0) << h.output;
  write_adapters(dir_ / "adapter-gguf", h.output.substr(0, 64));
  const fs::path f32 = dir_ / "merged-f32.gguf", f16 = dir_ / "merged-f16.gguf";
  const std::string common = "merge --quiet --model " + gguf.string() + " --adapter " + (dir_ / "adapter-gguf").string();
  RunResult r = run_calq(common + " --type f32 -o " + f32.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("merged      4 linears"), std::string::npos) << r.output;
  r = run_calq(common + " -o " + f16.string());
  ASSERT_EQ(r.status, 0) << r.output;

  const auto ids = model::testutil::test_token_ids(13, adapted_.config.vocab_size);
  const Tensor want = model::forward(adapted_, ids, pool_);
  const model::Model m32 = model::load_gguf_model(f32, pool_);
  EXPECT_FALSE(m32.has_adapters());
  EXPECT_LT(max_abs_diff(model::forward(m32, ids, pool_), want), 5e-5);
  EXPECT_GT(max_abs_diff(model::forward(base_, ids, pool_), want), 0.05);  // the adapters matter

  model::Model rounded = adapted_;
  model::merge_adapters(rounded, pool_);
  const Format& half = format_by_name("f16");
  const auto to_f16 = [&](model::LinearWeight& w) {
    const Tensor d = w.to_dense(pool_);
    w = QuantizedTensor::quantize(pool_, half, d.f32(), d.dim(0), d.dim(1));
  };
  to_f16(rounded.embedding);
  rounded.output = rounded.embedding;  // tied
  for (auto& l : rounded.layers)
    for (const model::TensorRole role : model::kLayerLinearRoles) to_f16(l.linear(role));
  const model::Model m16 = model::load_gguf_model(f16, pool_);
  EXPECT_LT(fs::file_size(f16), fs::file_size(f32) * 6 / 10);  // matrices in 2 bytes, not 4
  const Tensor got16 = model::forward(m16, ids, pool_), want16 = model::forward(rounded, ids, pool_);
  EXPECT_EQ(std::memcmp(got16.data(), want16.data(), got16.nbytes()), 0);
  EXPECT_GT(max_abs_diff(got16, want), 0.0);

  // The merged GGUF evaluates like the adapted model (f32: the same perplexity up to rounding).
  const auto ja = eval_json("--model " + hf() + text_args() + " --adapter " + (dir_ / "adapter").string(),
                            dir_ / "a.json");
  const auto jm = eval_json("--model " + f32.string() + " --tokenizer " + (dir_ / "hf/tokenizer.json").string() +
                                text_args(),
                            dir_ / "m.json");
  EXPECT_NEAR(jm["ppl"].get<double>(), ja["ppl"].get<double>(), 1e-4 * ja["ppl"].get<double>());
}

TEST_F(CliAdapter, MergeRefusesBadInputsWithoutOutput) {
  const fs::path out = dir_ / "out.gguf";
  const std::string common = "merge --quiet --model " + hf() + " --adapter " + (dir_ / "adapter").string();
  RunResult r = run_calq(common + " --type q4_k -o " + out.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("q4_k"), std::string::npos) << r.output;
  write_adapters(dir_ / "other", std::string(64, '0'));
  r = run_calq("merge --quiet --model " + hf() + " --adapter " + (dir_ / "other").string() + " -o " + out.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(hash_), std::string::npos) << r.output;
  EXPECT_TRUE(testing::no_outputs_in_dir(dir_));
  std::ofstream(out) << "keep";
  r = run_calq(common + " -o " + out.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("force"), std::string::npos) << r.output;
  EXPECT_EQ(read_text_file(out), "keep");
}

}  // namespace
}  // namespace calq
