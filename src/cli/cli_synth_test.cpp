// `calq synth` end to end: the folder and the GGUF it writes pass `calq check` and evaluate to the
// same perplexity through calq's loaders and tokenizers; same seed, same bytes; refusals exit 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

constexpr const char* kShape = "--arch qwen2 --layers 2 --hidden 32 --heads 4 --kv-heads 2 --ffn 48 --vocab 280";

TEST(CliSynth, WritesAFolderAndAGgufThatAgree) {
  const auto dir = testing::temp_dir("cli_synth");
  const std::string m = (dir / "m").string(), gguf = (dir / "m.gguf").string();
  RunResult r = run_calq(std::string("synth --quiet ") + kShape + " --seed 4 --out " + m + " --gguf " + gguf);
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / "m" / f)) << f;
  }
  r = run_calq("check " + gguf);
  EXPECT_EQ(r.status, 0) << r.output;
  // Same seed, same bytes; another seed, other weights.
  ASSERT_EQ(run_calq(std::string("synth --quiet ") + kShape + " --seed 4 --out " + (dir / "again").string()).status, 0);
  EXPECT_EQ(read_text_file(dir / "m" / "model.safetensors"), read_text_file(dir / "again" / "model.safetensors"));
  ASSERT_EQ(run_calq(std::string("synth --quiet ") + kShape + " --seed 5 --out " + (dir / "other").string()).status, 0);
  EXPECT_NE(read_text_file(dir / "m" / "model.safetensors"), read_text_file(dir / "other" / "model.safetensors"));
  // Both files through calq's loaders and tokenizers (tokenizer.json; the GGUF's converted vocabulary).
  std::ofstream(dir / "text.txt") << "the rain in spain stays mainly in the plain, 1984.";
  const std::string eval = " --text " + (dir / "text.txt").string() + " --ctx 8";
  const auto hf = testing::eval_json("--model " + m + eval, dir / "hf.json");
  const auto gg = testing::eval_json("--model " + gguf + eval, dir / "gguf.json");
  ASSERT_TRUE(hf.contains("ppl") && gg.contains("ppl"));
  EXPECT_EQ(hf["token_ids_sha256"], gg["token_ids_sha256"]);
  EXPECT_GE(hf["n_windows"].get<int64_t>(), 2);
  EXPECT_NEAR(hf["ppl"].get<double>(), gg["ppl"].get<double>(), 1e-4 * hf["ppl"].get<double>());
  std::filesystem::remove_all(dir);
}

TEST(CliSynth, RefusalsExitTwo) {
  const auto dir = testing::temp_dir("cli_synth");
  const std::string m = (dir / "m").string();
  ASSERT_EQ(run_calq(std::string("synth --quiet ") + kShape + " --out " + m).status, 0);
  RunResult r = run_calq(std::string("synth --quiet ") + kShape + " --out " + m);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("force"), std::string::npos) << r.output;
  EXPECT_EQ(run_calq(std::string("synth --quiet ") + kShape + " --force --out " + m).status, 0);
  r = run_calq("synth --arch gpt2 --out " + (dir / "x").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("qwen2"), std::string::npos) << r.output;  // lists the supported ones
  r = run_calq("synth --arch llama --heads 4 --kv-heads 3 --out " + (dir / "x").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("kv_heads = 3"), std::string::npos) << r.output;
  r = run_calq("synth --arch llama --experts 4 --out " + (dir / "x").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("mixture-of-experts"), std::string::npos) << r.output;
  r = run_calq("synth --arch llama --dtype f16 --out " + (dir / "x").string());
  EXPECT_EQ(r.status, 2);
  r = run_calq("synth --arch llama --weights gaussian --out " + (dir / "x").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("weights 'gaussian'"), std::string::npos) << r.output;
  // A GGUF is made from the whole float32 model: one of 10^14 parameters is refused before any work
  // (where /proc/meminfo says how much memory there is; elsewhere the check cannot run).
  if (std::filesystem::exists("/proc/meminfo")) {
    const std::string huge = "--layers 4096 --hidden 65536 --heads 64 --ffn 65536";
    r = run_calq("synth --arch llama " + huge + " --out " + (dir / "x").string() + " --gguf " +
                 (dir / "x.gguf").string());
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.output.find("MemAvailable"), std::string::npos) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "x"));
  EXPECT_FALSE(std::filesystem::exists(dir / "x.gguf"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq

namespace calq {
namespace {

// `calq quantize --export`: a GPTQ folder of a bf16 model evaluates like the same quantization written
// as a GGUF (identical weights: the same KLD against the source), `calq inspect` lists its packed
// tensors, and a format the scheme cannot hold is refused before any work, leaving nothing.
TEST(CliExport, GptqFolderEvaluatesLikeTheSameGguf) {
  const auto dir = testing::temp_dir("cli_export");
  const std::string src = (dir / "src").string();
  ASSERT_EQ(testing::run_calq("synth --quiet --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --ffn 96 "
                              "--vocab 280 --dtype bf16 --seed 3 --out " + src).status, 0);
  const std::string q = "quantize --quiet --model " + src + " --format int4-g32-asym ";
  testing::RunResult r = testing::run_calq(q + "--export gptq-v2 --out " + (dir / "gptq").string());
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* f : {"config.json", "quantize_config.json", "model.safetensors", "tokenizer.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / "gptq" / f)) << f;
  }
  r = testing::run_calq(q + "--head-format bf16 --out " + (dir / "q.gguf").string());
  ASSERT_EQ(r.status, 0) << r.output;
  std::ofstream(dir / "text.txt") << "the rain in spain stays mainly in the plain, 1984. the quick brown fox.";
  const std::string eval = " --ref " + src + " --text " + (dir / "text.txt").string() + " --ctx 8";
  const auto ja = testing::eval_json("--model " + (dir / "gptq").string() + eval, dir / "a.json");
  const auto jb = testing::eval_json("--model " + (dir / "q.gguf").string() + eval, dir / "b.json");
  ASSERT_TRUE(ja.contains("candidates") && jb.contains("candidates")) << ja.dump();
  const auto& a = ja["candidates"][0];
  const auto& b = jb["candidates"][0];
  EXPECT_GT(a["kld_mean"].get<double>(), 0.0);
  EXPECT_EQ(a["kld_mean"], b["kld_mean"]);
  EXPECT_EQ(a["kld_per_window"], b["kld_per_window"]);
  EXPECT_EQ(a["ppl"], b["ppl"]);
  r = testing::run_calq("inspect " + (dir / "gptq").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.down_proj.qweight"), std::string::npos) << r.output;
  // calq check: the folder reads whole; vLLM's Marlin rules are warnings (asymmetric, 64 inputs).
  r = testing::run_calq("check " + (dir / "gptq").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("calq reads the checkpoint whole (int4-g32-asym"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("warning: quantization_config: vLLM's GPTQ Marlin kernels take 4/8-bit symmetric"),
            std::string::npos) << r.output;
  {
    std::string config = read_text_file(dir / "gptq" / "config.json");
    config.replace(config.find("\"gptq\""), 6, "\"hqq\"");  // quant_method
    std::ofstream(dir / "gptq" / "config.json") << config;
  }
  r = testing::run_calq("check " + (dir / "gptq").string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("quant_method 'hqq'"), std::string::npos) << r.output;
  // AWQ holds 4 bits only: refused before any work, nothing written.
  r = testing::run_calq("quantize --quiet --model " + src + " --format int3-g32-asym --export awq --out " +
                        (dir / "awq").string());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("AWQ checkpoints hold 4 bits"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "awq"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq
