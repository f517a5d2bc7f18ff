// `calq quantize` on a tiny model GGUF written here: the output file has the mix's types and
// calq's keys, progress goes to stderr, the same bytes come out for any --threads, an existing
// output is refused without --force, and bad input exits 2 with a clear message.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

class CliQuantize : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = calq::testing::temp_dir("cli_quantize");
    in_ = dir_ / "tiny.gguf";
    ThreadPool pool(1);
    const model::Model m = model::testutil::load_tiny_model(dir_ / "hf", {.tied = false, .dtype = DType::kF32}, pool);
    model::testutil::write_tiny_gguf(m, in_, DType::kF16);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string args(const std::string& type, const std::filesystem::path& out, const std::string& extra = "") const {
    return "quantize --model " + in_.string() + " --out " + out.string() + " --type " + type + " " + extra;
  }

  std::filesystem::path dir_;
  std::filesystem::path in_;
};

TEST_F(CliQuantize, WritesTheMixWithProgressAndCalqKeys) {
  const std::filesystem::path out = dir_ / "q8.gguf";
  const RunResult r = run_calq(args("q8_0", out, "--threads 2"));
  ASSERT_EQ(r.status, 0) << r.output;
  // One progress line per tensor, naming it and its conversion.
  EXPECT_NE(r.output.find("blk.0.attn_q.weight"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("F16 -> Q8_0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("F32 (copied)"), std::string::npos) << r.output;

  const io::GgufFile f = io::GgufFile::open(out);
  const io::GgufFile in = io::GgufFile::open(in_);
  ASSERT_EQ(f.tensors().size(), in.tensors().size());
  for (const auto& t : f.tensors()) {
    const bool is_vector = t.ne.size() == 1 || t.ne[1] == 1;
    if (is_vector) {
      EXPECT_EQ(t.type, io::kGgmlF32) << t.name;
    } else if (t.ne[0] % 32 == 0) {
      EXPECT_EQ(t.type, 8u) << t.name;  // Q8_0
    } else {
      EXPECT_EQ(t.type, io::kGgmlF16) << t.name;  // a row Q8_0's block cannot hold stays F16
    }
  }
  EXPECT_EQ(f.get("general.file_type").as_int("t"), 7);
  EXPECT_EQ(f.get("calq.recipe").as_string("t"), "mix=q8_0");
  EXPECT_EQ(f.get("llama.block_count").as_int("t"), in.get("llama.block_count").as_int("t"));
}

TEST_F(CliQuantize, SameBytesForAnyThreadCount) {
  ASSERT_EQ(run_calq(args("q8_0", dir_ / "t1.gguf", "--threads 1 --quiet")).status, 0);
  const RunResult r3 = run_calq(args("q8_0", dir_ / "t3.gguf", "--threads 3 --quiet"));
  ASSERT_EQ(r3.status, 0) << r3.output;
  EXPECT_EQ(r3.output.find("blk.0"), std::string::npos) << "--quiet printed progress: " << r3.output;
  const auto a = MappedFile::open(dir_ / "t1.gguf");
  const auto b = MappedFile::open(dir_ / "t3.gguf");
  EXPECT_TRUE(std::equal(a->bytes().begin(), a->bytes().end(), b->bytes().begin(), b->bytes().end()));
}

TEST_F(CliQuantize, RefusesAnExistingOutputWithoutForce) {
  const std::filesystem::path out = dir_ / "out.gguf";
  std::ofstream(out) << "keep me";
  RunResult r = run_calq(args("bf16", out));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("exists"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("force option"), std::string::npos) << r.output;
  EXPECT_EQ(read_text_file(out), "keep me");
  r = run_calq(args("bf16", out, "--force --quiet"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(io::GgufFile::open(out).find_tensor("blk.0.attn_q.weight")->type, io::kGgmlBF16);
  // Not even --force lets it overwrite its own input.
  r = run_calq("quantize --model " + in_.string() + " --out " + in_.string() + " --type bf16 --force");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("input"), std::string::npos) << r.output;
}

// A mix with what llama-quantize's form does not do (a method, calibration, an observer, ...) runs
// the format form and types every tensor as llama-quantize's mix does, fallbacks included (the tiny
// model's rows of 32 and 48 values fit no k-quant block).
TEST_F(CliQuantize, MixWithAMethodTypesTensorsAsThePlainMix) {
  const std::filesystem::path plain = dir_ / "plain.gguf", gptq = dir_ / "gptq.gguf";
  for (const std::string mix : {"q4_k_m", "q3_k_s", "q6_k"}) {
    ASSERT_EQ(run_calq(args(mix, plain, "--force -q")).status, 0);
    // An observer is not the plain mix's: the format form runs, typed by the mix.
    const RunResult r = run_calq(args(mix, gptq, "--force -q --observer mse"));
    ASSERT_EQ(r.status, 0) << r.output;
    const io::GgufFile a = io::GgufFile::open(plain);
    const io::GgufFile b = io::GgufFile::open(gptq);
    ASSERT_EQ(a.tensors().size(), b.tensors().size());
    for (const io::GgufTensorInfo& t : a.tensors()) {
      const io::GgufTensorInfo* u = b.find_tensor(t.name);
      ASSERT_NE(u, nullptr) << t.name;
      EXPECT_EQ(io::ggml_type_name(t.type), io::ggml_type_name(u->type)) << mix << " " << t.name;
    }
    const io::GgufValue* recipe = b.find("calq.recipe");
    ASSERT_NE(recipe, nullptr);
    EXPECT_NE(recipe->s.find("mix=" + mix + ";observer=mse"), std::string::npos) << recipe->s;
  }
}

TEST_F(CliQuantize, BadInputExitsTwoWithAClearMessage) {
  const std::filesystem::path out = dir_ / "never.gguf";
  struct Case {
    std::string args;
    std::string needle;
  };
  model::testutil::write_tiny_model(dir_ / "hf", {});
  std::ofstream(dir_ / "short.dat", std::ios::binary) << std::string("\x02\x00\x00\x00\x05\x00", 6);
  const Case cases[] = {
      {args("q4_k_xl", out), "q4_k_m"},  // unknown mix: the known names are listed
      {"quantize --model " + (dir_ / "missing.gguf").string() + " --out " + out.string() + " --type q8_0",
       "missing.gguf"},
      {"quantize --model " + (dir_ / "hf").string() + " --out " + out.string() + " --type q8_0 --imatrix " +
           (dir_ / "short.dat").string(),
       "an imatrix goes with a plain mix"},
      {args("q8_0", out, "--imatrix " + (dir_ / "nope.dat").string()), "nope.dat"},
      {args("q8_0", out, "--imatrix " + (dir_ / "short.dat").string()), "truncated"},
      {args("q8_0", dir_ / "no-such-dir" / "x.gguf"), "no-such-dir"},
      {"quantize --model " + in_.string() + " --type q8_0", "--out"},
  };
  for (const Case& c : cases) {
    const RunResult r = run_calq(c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace calq

namespace calq {
namespace {

// Issue 23's memory bound at CI size: a 4-layer model, 768 wide with a 2688-wide MLP, quantized
// with GPTQ into q4_k_m, peaks below what one layer needs — its weights in float32, its Hessians
// (attn_in, attn_out, mlp_in: 768² doubles each; mlp_down 2688²), GPTQ's working copies of the
// largest (a double copy and a float factor) and the hidden states — plus 64 MiB for the program,
// its libraries and the allocator; and a 4-layer model peaks no higher than a 1-layer one by more
// than one layer's bf16 weights (nothing is kept per layer: not the sources' pages, not the
// statistics, not the quantized layers, which go to the layer store). Measured on an AMD EPYC
// (2026-12-08): 206.8 MiB for 1 layer, 207.1 MiB for 4, against a bound of 249 MiB (before the layer
// methods stopped keeping the float32 copy: 219 and 226); keeping a Hessian per worker or the
// sources' pages would exceed it. The bound is on the process's own peak
// RSS (the JSON's peak_rss_mib), so it needs an uninstrumented build: .ci/run leaves it out of the
// sanitizer stage.
TEST(CliScale, GptqPeakMemoryIsOneLayerWhateverTheDepth) {
  const auto dir = testing::temp_dir("cli_scale");
  const int64_t hidden = 768, ffn = 2688, kv_dim = 2 * 128, seq = 64, samples = 2;
  std::map<int, double> peak;
  for (const int layers : {1, 4}) {
    const auto model = dir / fmt::format("m{}", layers);
    const RunResult s = run_calq(fmt::format("synth --arch llama --layers {} --hidden {} --heads 6 --kv-heads 2 --ffn {} "
                                             "--vocab 512 --dtype bf16 --weights outliers -q -o {}",
                                             layers, hidden, ffn, model.string()));
    ASSERT_EQ(s.status, 0) << s.output;
    const auto json = dir / fmt::format("m{}.json", layers);
    const RunResult q = run_calq(fmt::format("quantize -q --model {} --type q4_k_m --method gptq --calib {} --samples {} "
                                             "--seq-len {} --out {} --json {}", model.string(),
                                             (calq::testing::shared_dir() / "data/calib.txt").string(), samples, seq,
                                             (dir / fmt::format("m{}.gguf", layers)).string(), json.string()));
    ASSERT_EQ(q.status, 0) << q.output;
    peak[layers] = nlohmann::json::parse(read_text_file(json)).at("peak_rss_mib").get<double>();
    EXPECT_TRUE(std::filesystem::exists(dir / fmt::format("m{}.gguf", layers)));
  }
  const double mib = 1024.0 * 1024.0;
  const double layer_params = 2.0 * hidden * hidden + 2.0 * kv_dim * hidden + 3.0 * hidden * ffn;
  const double layer_f32 = 4 * layer_params / mib;
  const double hessians = 8.0 * (3.0 * hidden * hidden + 1.0 * ffn * ffn) / mib;
  const double gptq_work = 12.0 * ffn * ffn / mib;
  const double hidden_states = 3.0 * samples * seq * ffn * 4 / mib;
  const double bound = 64 + layer_f32 + hessians + gptq_work + hidden_states;
  EXPECT_LE(peak[4], bound) << "1 layer: " << peak[1] << " MiB";
  EXPECT_LE(peak[4] - peak[1], 2 * layer_params / mib) << "1 layer: " << peak[1] << " MiB, 4 layers: " << peak[4];
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq
