// calq's logits against llama.cpp's on synthetic models of every architecture (issue 21's
// reference "that nobody here wrote"). The fixtures (tests/fixtures/llama_cpp_logits/<arch>.json
// and .bin, made by scripts/make-arch-fixtures.py with `calq synth` and tools/llama_logits at a
// recorded llama.cpp commit) hold the synth options and seed, three prompts of token ids and
// llama.cpp's float32 logits at every position. Here calq re-synthesizes the same model, writes it
// as a Hugging Face folder and as a GGUF file, loads each back, runs its forward pass and requires
// max_v |calq − llama.cpp| / max_v |llama.cpp| <= 1e-3 at every position of every prompt — and that
// the same comparison fails for the model of another seed, so the bound means something.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "core/mapped_file.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/hf_export.h"
#include "model/synth.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

constexpr double kBound = 1e-3;

// Architectures calq runs that the recorded llama.cpp commit cannot run (none so far): they need
// no fixture. Every other supported model type must have one.
const std::set<std::string> kNoLlamaCppReference = {};

std::filesystem::path fixtures_dir() { return std::filesystem::path(CALQ_FIXTURES_DIR) / "llama_cpp_logits"; }

struct Fixture {
  std::string arch;  // the fixture's name (a model type, or one with a variant: llama_rope_llama3)
  SynthSpec spec;
  uint64_t seed = 0;
  DType dtype = DType::kF32;
  std::vector<std::vector<int32_t>> prompts;
  int64_t vocab = 0;
  std::vector<float> logits;  // prompts × positions × vocab
};

Fixture load_fixture(const std::filesystem::path& json_path) {
  const auto j = nlohmann::json::parse(read_text_file(json_path));
  Fixture f;
  f.arch = j.at("arch").get<std::string>();
  const auto& s = j.at("synth");
  // Every option the script records must be read here: an unknown one fails the test.
  const std::set<std::string> known = {
      "model_type",   "layers",       "hidden",         "heads",
      "kv_heads",     "head_dim",     "ffn",            "vocab",
      "sliding_window", "tied",       "max_position",   "rope_theta",
      "rms_norm_eps", "rope_scaling", "rope_factor",    "rope_low_freq_factor",
      "rope_high_freq_factor", "rope_original_max_position", "experts", "experts_per_token",
      "expert_ffn",   "shared_ffn",   "norm_topk_prob", "seed",
      "dtype"};
  for (const auto& [key, value] : s.items()) {
    EXPECT_TRUE(known.count(key)) << json_path << ": synth option '" << key << "' is not read by this test";
  }
  f.spec = {.model_type = s.at("model_type").get<std::string>(),
            .layers = s.at("layers").get<int64_t>(),
            .hidden = s.at("hidden").get<int64_t>(),
            .heads = s.at("heads").get<int64_t>(),
            .kv_heads = s.at("kv_heads").get<int64_t>(),
            .head_dim = s.at("head_dim").get<int64_t>(),
            .ffn = s.at("ffn").get<int64_t>(),
            .vocab = s.at("vocab").get<int64_t>(),
            .sliding_window = s.at("sliding_window").get<int64_t>(),
            .tied = s.at("tied").get<bool>(),
            .max_position = s.at("max_position").get<int64_t>(),
            .rope_theta = s.at("rope_theta").get<double>(),
            .rms_norm_eps = s.at("rms_norm_eps").get<double>(),
            .rope_scaling = s.at("rope_scaling").get<std::string>(),
            .rope_factor = s.at("rope_factor").get<double>(),
            .rope_low_freq_factor = s.at("rope_low_freq_factor").get<double>(),
            .rope_high_freq_factor = s.at("rope_high_freq_factor").get<double>(),
            .rope_original_max_position = s.at("rope_original_max_position").get<int64_t>(),
            .experts = s.at("experts").get<int64_t>(),
            .experts_per_token = s.at("experts_per_token").get<int64_t>(),
            .expert_ffn = s.at("expert_ffn").get<int64_t>(),
            .shared_ffn = s.at("shared_ffn").get<int64_t>(),
            .norm_topk_prob = s.at("norm_topk_prob").is_null() ? std::nullopt
                                                               : std::optional<bool>(s.at("norm_topk_prob").get<bool>())};
  f.seed = s.at("seed").get<uint64_t>();
  f.dtype = s.at("dtype").get<std::string>() == "bf16" ? DType::kBF16 : DType::kF32;
  f.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
  const auto& l = j.at("logits");
  f.vocab = l.at("shape").at(1).get<int64_t>();
  const int64_t rows = l.at("shape").at(0).get<int64_t>();
  EXPECT_EQ(l.at("dtype"), "float32");
  const std::string bytes = read_text_file(json_path.parent_path() / l.at("file").get<std::string>());
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), rows * f.vocab * 4) << json_path;
  f.logits.resize(bytes.size() / 4);
  std::memcpy(f.logits.data(), bytes.data(), f.logits.size() * 4);  // little-endian, as x86 and ARM store it
  int64_t positions = 0;
  for (const auto& p : f.prompts) positions += static_cast<int64_t>(p.size());
  EXPECT_EQ(positions, rows) << json_path;
  return f;
}

// The largest over positions of max_v |got − ref| / max_v |ref|.
double max_relative_error(const Model& m, const Fixture& f, ThreadPool& pool) {
  double worst = 0;
  size_t row = 0;
  for (const auto& ids : f.prompts) {
    const Tensor got = forward(m, ids, pool);
    EXPECT_EQ(got.dim(1), f.vocab);
    for (size_t t = 0; t < ids.size(); ++t, ++row) {
      const float* r = f.logits.data() + row * static_cast<size_t>(f.vocab);
      const float* g = got.f32() + t * static_cast<size_t>(f.vocab);
      double diff = 0, scale = 0;
      for (int64_t v = 0; v < f.vocab; ++v) {
        diff = std::max(diff, std::fabs(static_cast<double>(g[v]) - r[v]));
        scale = std::max(scale, std::fabs(static_cast<double>(r[v])));
      }
      worst = std::max(worst, diff / scale);
    }
  }
  return worst;
}

// The fixture's model with one of its features changed: what the comparison must tell apart.
std::vector<std::pair<std::string, SynthSpec>> variants(const SynthSpec& spec, const ModelConfig& config) {
  std::vector<std::pair<std::string, SynthSpec>> out;
  if (!spec.rope_scaling.empty()) {
    SynthSpec v = spec;
    v.rope_scaling.clear();
    out.emplace_back("without rope scaling", v);
  }
  if (config.moe) {
    SynthSpec v = spec;
    if (find_architecture(spec.model_type)->moe->has_norm_topk_key) {
      v.norm_topk_prob = !config.moe->norm_topk_prob;
      out.emplace_back("norm_topk_prob flipped", v);
    }
    if (config.moe->experts_per_token > 1) {
      v = spec;
      v.experts_per_token = config.moe->experts_per_token - 1;
      out.emplace_back("one expert fewer per token", v);
    }
  }
  return out;
}

std::vector<std::filesystem::path> fixture_files() {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(fixtures_dir(), ec)) {
    if (e.path().extension() == ".json") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(LlamaCppLogits, EveryArchitectureHasAFixture) {
  std::set<std::string> have;  // model types
  for (const auto& path : fixture_files()) {
    have.insert(nlohmann::json::parse(read_text_file(path)).at("synth").at("model_type").get<std::string>());
  }
  for (const std::string& type : supported_model_types()) {
    if (kNoLlamaCppReference.count(type)) continue;
    EXPECT_TRUE(have.count(type)) << "no llama.cpp logits for '" << type << "' in " << fixtures_dir()
                                  << " (scripts/make-arch-fixtures.py makes them)";
  }
}

TEST(LlamaCppLogits, HfFolderAndGgufMatchLlamaCpp) {
  ThreadPool pool(2);
  const auto files = fixture_files();
  ASSERT_FALSE(files.empty()) << fixtures_dir();
  const auto dir = testing::temp_dir("llama_cpp_logits");
  for (const auto& path : files) {
    SCOPED_TRACE(path.string());
    const Fixture f = load_fixture(path);
    ASSERT_EQ(f.arch, path.stem().string());  // the fixture's name
    const ModelConfig config = synth_config(f.spec);
    ASSERT_EQ(config.vocab_size, f.vocab);
    Model m = synth_model(config, f.seed, pool, f.dtype);

    // The Hugging Face folder (in the fixture's dtype, with the generated tokenizer) ...
    const auto hf = dir / f.arch;
    write_hf_model(m, hf,
                   {.dtype = f.dtype,
                    .extra_files = {{"tokenizer.json", synth_tokenizer_json(config.vocab_size)},
                                    {"tokenizer_config.json", synth_tokenizer_config_json()}}},
                   pool);
    const Model from_hf = load_hf_model(hf, pool);
    // ... and the F32 GGUF written from it, as `calq synth --gguf` writes it.
    m.source = hf;
    const auto gguf = dir / (f.arch + ".gguf");
    write_gguf_model(m, gguf, {}, pool);
    const Model from_gguf = load_gguf_model(gguf, pool);

    const double e_hf = max_relative_error(from_hf, f, pool);
    const double e_gguf = max_relative_error(from_gguf, f, pool);
    EXPECT_LE(e_hf, kBound) << "HF folder";
    EXPECT_LE(e_gguf, kBound) << "GGUF";
    // The comparison can fail: another seed's model is far outside the bound, and so is the same
    // model without the feature the fixture is about (rotary scaling, renormalised or fewer picked
    // experts), so the fixture does exercise it.
    const Model other = synth_model(config, f.seed + 1, pool, f.dtype);
    EXPECT_GT(max_relative_error(other, f, pool), 100 * kBound) << "another seed";
    for (const auto& [what, spec] : variants(f.spec, config)) {
      const Model variant = synth_model(synth_config(spec), f.seed, pool, f.dtype);
      const double e = max_relative_error(variant, f, pool);
      EXPECT_GT(e, 10 * kBound) << what;
      std::printf("[ llama.cpp ] %-17s %s: %.3g\n", f.arch.c_str(), what.c_str(), e);
    }
    std::printf("[ llama.cpp ] %-17s max relative error: HF folder %.3g, GGUF %.3g\n", f.arch.c_str(), e_hf, e_gguf);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
