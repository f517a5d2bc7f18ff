// The architectures of issue 21 (Qwen3, Mixtral, Qwen2-MoE, Qwen3-MoE, Llama rotary scaling) on
// tiny random models: the runtime against a naive double-precision implementation, thread-count
// determinism, incremental decoding, GGUF out and back in (float and quantized experts), and bad
// input (expert counts, missing experts, a router giving NaN).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "io/gguf_check.h"
#include "model/decode.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/moe.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

using calq::testing::error_of;

const std::vector<int32_t> kIds = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 58, 41, 0, 17};

double max_abs_diff(const Tensor& a, const std::vector<double>& b) {
  double err = 0;
  for (size_t i = 0; i < b.size(); ++i) err = std::max(err, std::abs(a.f32()[i] - b[i]));
  return err;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double err = 0;
  for (int64_t i = 0; i < a.numel(); ++i) err = std::max(err, std::abs(static_cast<double>(a.f32()[i]) - b.f32()[i]));
  return err;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

struct ArchCase {
  std::string model_type;
  std::string rope_type;
  bool norm_topk = true;
  bool tied = true;
};

std::string case_name(const ::testing::TestParamInfo<ArchCase>& info) {
  std::string n = info.param.model_type + (info.param.rope_type.empty() ? "" : "_" + info.param.rope_type) +
                  (info.param.norm_topk ? "" : "_unnormed") + (info.param.tied ? "" : "_untied");
  return n;
}

class NewArchitecture : public ::testing::TestWithParam<ArchCase> {
 protected:
  Model load(ThreadPool& pool) {
    const ArchCase& c = GetParam();
    return testutil::load_tiny_model(testing::temp_dir("arch"),
                                     {.tied = c.tied, .model_type = c.model_type, .norm_topk_prob = c.norm_topk,
                                      .rope_type = c.rope_type},
                                     pool);
  }
};

TEST_P(NewArchitecture, MatchesTheNaiveImplementation) {
  ThreadPool pool(2);
  const Model m = load(pool);
  const Tensor logits = forward(m, kIds, pool);
  EXPECT_LT(max_abs_diff(logits, testutil::naive_forward(m, kIds)), 5e-5);
  // The test can fail: a model with its head norms, experts or rotary scaling dropped differs.
  Model broken = m;
  if (m.config.qk_norm) {
    broken.config.qk_norm = false;
  } else if (m.config.moe) {
    broken.config.moe->norm_topk_prob = !broken.config.moe->norm_topk_prob;
    if (broken.config.moe->experts_per_token == broken.config.moe->num_experts) broken.config.moe->experts_per_token = 1;
  } else {
    broken.config.rope_freq_factors.clear();
  }
  EXPECT_GT(max_abs_diff(forward(broken, kIds, pool), testutil::naive_forward(m, kIds)), 1e-3);
}

TEST_P(NewArchitecture, SameBitsForAnyThreadCount) {
  ThreadPool one(1), three(3);
  const Model m = load(one);
  EXPECT_TRUE(same_bits(forward(m, kIds, one), forward(m, kIds, three)));
}

TEST_P(NewArchitecture, DecodingEqualsTheFullForward) {
  ThreadPool pool(2);
  const Model m = load(pool);
  const Tensor full = forward(m, kIds, pool);
  DecodeCache cache(m.config, 1, static_cast<int64_t>(kIds.size()));
  std::vector<float> row(static_cast<size_t>(m.config.vocab_size));
  double err = 0;
  for (size_t t = 0; t < kIds.size(); ++t) {
    decode_step(m, std::span(&kIds[t], 1), cache, row.data(), pool);
    for (int64_t v = 0; v < m.config.vocab_size; ++v) {
      err = std::max(err, std::abs(static_cast<double>(row[static_cast<size_t>(v)]) -
                                   full.f32()[static_cast<int64_t>(t) * m.config.vocab_size + v]));
    }
  }
  EXPECT_LT(err, 1e-4);
}

TEST_P(NewArchitecture, GgufRoundTripGivesTheSameLogits) {
  ThreadPool pool(2);
  const Model m = load(pool);
  const auto path = testing::temp_dir("arch_gguf") / "m.gguf";
  std::filesystem::create_directories(path.parent_path());
  Model unsourced = m;
  unsourced.source.clear();  // no tokenizer to carry
  if (m.config.moe && m.arch->moe->gguf_norm_topk != m.config.moe->norm_topk_prob) {
    const std::string msg = error_of([&] { write_gguf_model(unsourced, path, {}, pool); });
    EXPECT_NE(msg.find("norm_topk_prob"), std::string::npos) << msg;
    EXPECT_FALSE(std::filesystem::exists(path));
    return;
  }
  write_gguf_model(unsourced, path, {}, pool);
  const io::GgufFile file = io::GgufFile::open(path);
  EXPECT_EQ(file.get("general.architecture").as_string("arch"), m.arch->gguf_arch);
  if (m.config.moe) {
    const io::GgufTensorInfo* gate = file.find_tensor("blk.0.ffn_gate_exps.weight");
    ASSERT_NE(gate, nullptr);
    EXPECT_EQ(gate->ne, (std::vector<int64_t>{m.config.hidden_size, m.config.moe->expert_intermediate,
                                              m.config.moe->num_experts}));
  }
  // llama.cpp's loader rules (io/gguf_check.h) hold, the tokenizer apart (this file has none).
  for (const io::GgufFinding& f : io::check_gguf(file).findings) {
    if (f.level == io::GgufFindingLevel::kError && f.where.rfind("tokenizer.", 0) != 0) {
      ADD_FAILURE() << f.where << ": " << f.message;
    }
  }
  const Model back = load_gguf_model(path, pool);
  EXPECT_EQ(back.arch, m.arch);
  EXPECT_EQ(back.config.qk_norm, m.config.qk_norm);
  EXPECT_EQ(back.config.rope_freq_factors, m.config.rope_freq_factors);
  EXPECT_EQ(back.config.moe.has_value(), m.config.moe.has_value());
  if (!(m.arch->gguf_output_required && m.config.tie_word_embeddings)) {
    EXPECT_EQ(back.parameter_count(), m.parameter_count());
  }
  EXPECT_TRUE(same_bits(forward(back, kIds, pool), forward(m, kIds, pool)));
  std::filesystem::remove_all(path.parent_path());
}

TEST_P(NewArchitecture, QuantizedExpertsRoundTripThroughGguf) {
  ThreadPool pool(2);
  Model m = load(pool);
  if (!m.config.moe || m.arch->moe->gguf_norm_topk != m.config.moe->norm_topk_prob) GTEST_SKIP();
  // Every expert in q8_0 (a ggml type: one stacked tensor) — and, as a second file, in int4 (calq bytes).
  for (const char* format : {"q8_0", "int4-g32-asym"}) {
    const Format* f = find_format(format);
    ASSERT_NE(f, nullptr) << format;
    Model q = m;
    q.source.clear();
    for (LayerWeights& l : q.layers) {
      for (ExpertWeights& e : l.experts) {
        for (const TensorRole role : {TensorRole::kExpertGate, TensorRole::kExpertUp, TensorRole::kExpertDown}) {
          const Tensor d = e.linear(role).to_dense(pool);
          e.linear(role) = QuantizedTensor::quantize(pool, *f, d.f32(), d.dim(0), d.dim(1));
        }
      }
    }
    const auto path = testing::temp_dir("arch_gguf_q") / "q.gguf";
    std::filesystem::create_directories(path.parent_path());
    write_gguf_model(q, path, {}, pool);
    const Model back = load_gguf_model(path, pool);
    EXPECT_EQ(back.layers[1].experts[2].w_down.format_name(), format);
    EXPECT_TRUE(same_bits(forward(back, kIds, pool), forward(q, kIds, pool))) << format;
    EXPECT_GT(max_abs_diff(forward(q, kIds, pool), forward(m, kIds, pool)), 0.0) << format;
    std::filesystem::remove_all(path.parent_path());
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, NewArchitecture,
                         ::testing::Values(ArchCase{"qwen3", ""}, ArchCase{"llama", "llama3"},
                                           ArchCase{"llama", "linear", true, false}, ArchCase{"mixtral", ""},
                                           ArchCase{"qwen2_moe", "", false, false}, ArchCase{"qwen2_moe", ""},
                                           ArchCase{"qwen3_moe", "", true, false}, ArchCase{"qwen3_moe", "", false}),
                         case_name);

TEST(MoeHook, AllExpertsStatisticsLeaveTheOutputAlone) {
  ThreadPool pool(2);
  const Model m = testutil::load_tiny_model(testing::temp_dir("moe_hook"), {.model_type = "qwen2_moe"}, pool);
  const int64_t T = static_cast<int64_t>(kIds.size());
  int64_t natural_rows = 0, all_rows = 0, routed = 0;
  const auto run = [&](bool all, int64_t& rows) {
    ModelConfig c = m.config;
    c.moe_hook_all_experts = all;
    std::vector<float> h(static_cast<size_t>(T * c.hidden_size));
    embed_tokens(m, kIds, h.data());
    LayerScratch scratch(c, T);
    const LinearHook hook = [&](const LinearInput& in) {
      if (in.role != TensorRole::kExpertGate) return;
      rows += in.rows;
      if (all) routed += in.routed_rows;
      EXPECT_EQ(in.rows, all ? T : in.routed_rows);
    };
    decoder_layer_forward(c, m.layers[0], 0, h.data(), T, scratch, pool, &hook);
    return h;
  };
  const auto a = run(false, natural_rows);
  const auto b = run(true, all_rows);
  EXPECT_EQ(a, b);
  EXPECT_EQ(natural_rows, T * m.config.moe->experts_per_token);
  EXPECT_EQ(all_rows, T * m.config.moe->num_experts);
  EXPECT_EQ(routed, natural_rows);
}

TEST(Llama3Rope, FactorsFollowTheWavelengthBands) {
  // head_dim 8, theta 10000: wavelengths 2π·10000^(2i/8) = 6.3, 63, 628, 6283; original context 64,
  // low 1, high 4: band edges 16 and 64 — i = 0 kept, i = 1 blended, i = 2, 3 divided by 8.
  const auto f = rope_scaling_factors({.type = "llama3", .factor = 8, .low_freq_factor = 1, .high_freq_factor = 4,
                                       .original_max_position = 64},
                                      10000.0, 8);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0], 1.0f);
  const double wavelen = 2 * M_PI * std::pow(10000.0, 2.0 / 8);
  const double smooth = (64.0 / wavelen - 1.0) / 3.0;
  EXPECT_FLOAT_EQ(f[1], static_cast<float>(1.0 / ((1 - smooth) / 8 + smooth)));
  EXPECT_EQ(f[2], 8.0f);
  EXPECT_EQ(f[3], 8.0f);
}

TEST(MoeRouting, PicksTheLargestAndRenormalises) {
  ModelConfig c;
  c.moe = ModelConfig::Moe{.num_experts = 4, .experts_per_token = 2, .norm_topk_prob = true};
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f, 2.0f};  // a tie: the lower index first
  Routing r = route_tokens(c, logits.data(), 1, 0);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{1, 3}));
  EXPECT_FLOAT_EQ(r.weight[0], 0.5f);
  c.moe->norm_topk_prob = false;
  r = route_tokens(c, logits.data(), 1, 0);
  const double z = 1 + 2 * std::exp(2.0) + std::exp(1.0);
  EXPECT_NEAR(r.weight[0], std::exp(2.0) / z, 1e-6);
}

TEST(MoeRouting, NonFiniteRouterLogitNamesLayerTokenAndExpert) {
  ModelConfig c;
  c.moe = ModelConfig::Moe{.num_experts = 3, .experts_per_token = 1};
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, NAN, 1.0f};
  ErrorKind kind{};
  const std::string msg = error_of([&] { route_tokens(c, logits.data(), 2, 5); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(msg.find("layer 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expert 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("NaN"), std::string::npos) << msg;
}

// Edits config.json of a tiny model folder.
void edit_config(const std::filesystem::path& dir, const std::function<void(nlohmann::json&)>& fn) {
  std::ifstream in(dir / "config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  in.close();
  fn(j);
  std::ofstream(dir / "config.json") << j.dump();
}

TEST(MoeBadInput, ClearErrors) {
  ThreadPool pool(1);
  const auto dir = testing::temp_dir("moe_bad");
  const auto fresh = [&] {
    std::filesystem::remove_all(dir);
    testutil::write_tiny_model(dir, {.model_type = "qwen3_moe"});
  };
  // Fewer experts in the config than in the files: the tensor of expert 3 names its layer and expert.
  fresh();
  edit_config(dir, [](nlohmann::json& j) { j["num_experts"] = 3; });
  std::string msg = error_of([&] { load_hf_model(dir, pool); });
  EXPECT_NE(msg.find("expert 3 of layer 0"), std::string::npos) << msg;
  // More: expert 4's tensors are missing.
  fresh();
  edit_config(dir, [](nlohmann::json& j) { j["num_experts"] = 5; });
  msg = error_of([&] { load_hf_model(dir, pool); });
  EXPECT_NE(msg.find("model.layers.0.mlp.experts.4.gate_proj.weight"), std::string::npos) << msg;
  // Top-k above the expert count.
  fresh();
  edit_config(dir, [](nlohmann::json& j) { j["num_experts_per_tok"] = 9; });
  msg = error_of([&] { load_hf_model(dir, pool); });
  EXPECT_NE(msg.find("num_experts_per_tok 9"), std::string::npos) << msg;
  // Dense layers mixed in.
  fresh();
  edit_config(dir, [](nlohmann::json& j) { j["mlp_only_layers"] = {1}; });
  ErrorKind kind{};
  msg = error_of([&] { load_hf_model(dir, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("mlp_only_layers"), std::string::npos) << msg;
  // An unknown rotary scaling.
  fresh();
  edit_config(dir, [](nlohmann::json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
  msg = error_of([&] { load_hf_model(dir, pool); });
  EXPECT_NE(msg.find("'yarn' is not supported"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(MoeBadInput, GgufExpertTensorOfTheWrongShape) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("moe_gguf_bad"), {.model_type = "mixtral"}, pool);
  m.source.clear();
  const auto path = testing::temp_dir("moe_gguf_bad2") / "m.gguf";
  std::filesystem::create_directories(path.parent_path());
  write_gguf_model(m, path, {}, pool);
  // Rewrite the file claiming one expert more than the tensors hold.
  const io::GgufFile f = io::GgufFile::open(path);
  io::GgufMetadata meta;
  for (const auto& [k, v] : f.metadata()) {
    meta.emplace_back(k, k == "llama.expert_count" ? io::GgufValue::of_uint32(5) : v);
  }
  std::vector<io::GgufWriteTensor> tensors;
  for (const auto& t : f.tensors()) tensors.push_back({t.name, t.ne, t.type, f.tensor_data(t)});
  const auto bad = path.parent_path() / "bad.gguf";
  io::write_gguf(bad, meta, tensors, {});
  const std::string msg = error_of([&] { load_gguf_model(bad, pool); });
  EXPECT_NE(msg.find("blk.0.ffn_"), std::string::npos) << msg;
  EXPECT_NE(msg.find("_exps.weight"), std::string::npos) << msg;
  std::filesystem::remove_all(path.parent_path());
}

}  // namespace
}  // namespace calq::model
