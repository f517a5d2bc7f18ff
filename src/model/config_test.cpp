#include "model/config.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

constexpr const char* kGood = R"({
  "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true })";

// Expects parse to throw an Error of `kind` whose message contains every needle.
void expect_error(const std::string& text, ErrorKind kind, std::initializer_list<std::string> needles) {
  try {
    parse_hf_config_text(text, "dir/config.json");
    FAIL() << "expected an error for " << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(Config, ParsesLlama) {
  const ModelConfig c = parse_hf_config_text(kGood, "config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
}

TEST(Config, ReadsReferenceModel) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const ModelConfig c = parse_hf_config(testing::shared_dir() / "models/calq-ref-llama/config.json");
  EXPECT_EQ(c.hidden_size, 512);
  EXPECT_EQ(c.num_layers, 6);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 16384);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);  // from rope_parameters
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_word_embeddings);
}

TEST(Config, MissingModelType) {
  expect_error(R"({"vocab_size": 10})", ErrorKind::kFormat, {"dir/config.json", "model_type", "llama"});
}

TEST(Config, UnsupportedModelTypeListsSupported) {
  expect_error(R"({"model_type": "gpt_neox"})", ErrorKind::kUnsupported,
               {"dir/config.json", "gpt_neox", "supported: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe"});
}

// kGood with model_type replaced and `extra` keys appended.
std::string variant(const std::string& model_type, const std::string& extra) {
  std::string text = kGood;
  text.replace(text.find("\"llama\""), 7, "\"" + model_type + "\"");
  if (!extra.empty()) text.insert(text.size() - 1, ", " + extra);
  return text;
}

TEST(Config, LlamaHasNoBiasOrWindow) {
  const ModelConfig c = parse_hf_config_text(variant("llama", R"("sliding_window": 8)"), "config.json");
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.window_for_layer(0), 0);
  expect_error(variant("llama", R"("attention_bias": true)"), ErrorKind::kUnsupported, {"attention_bias"});
}

TEST(Config, MistralWindow) {
  const ModelConfig c = parse_hf_config_text(variant("mistral", R"("sliding_window": 4096)"), "config.json");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.window_for_layer(0), 4096);
  EXPECT_EQ(c.window_for_layer(1), 4096);
  const ModelConfig none = parse_hf_config_text(variant("mistral", R"("sliding_window": null)"), "config.json");
  EXPECT_EQ(none.window_for_layer(0), 0);
  expect_error(variant("mistral", R"("sliding_window": 0)"), ErrorKind::kFormat, {"sliding_window"});
}

TEST(Config, Qwen2BiasAndWindowRules) {
  // Real Qwen2 configs carry a window that is off unless use_sliding_window is true.
  const ModelConfig off = parse_hf_config_text(
      variant("qwen2", R"("sliding_window": 32768, "use_sliding_window": false, "max_window_layers": 1)"), "c");
  EXPECT_TRUE(off.qkv_bias);
  EXPECT_EQ(off.sliding_window, 0);
  EXPECT_EQ(off.window_for_layer(1), 0);
  const ModelConfig on = parse_hf_config_text(
      variant("qwen2", R"("sliding_window": 16, "use_sliding_window": true, "max_window_layers": 1)"), "c");
  EXPECT_EQ(on.window_for_layer(0), 0);
  EXPECT_EQ(on.window_for_layer(1), 16);
  // transformers' default max_window_layers (28) leaves both layers of this model unwindowed.
  const ModelConfig dflt =
      parse_hf_config_text(variant("qwen2", R"("sliding_window": 16, "use_sliding_window": true)"), "c");
  EXPECT_EQ(dflt.window_for_layer(1), 0);
  // An explicit layer_types list wins.
  const ModelConfig typed = parse_hf_config_text(
      variant("qwen2", R"("sliding_window": 16, "use_sliding_window": true,
                          "layer_types": ["sliding_attention", "full_attention"])"),
      "c");
  EXPECT_EQ(typed.window_for_layer(0), 16);
  EXPECT_EQ(typed.window_for_layer(1), 0);
  expect_error(variant("qwen2", R"("layer_types": ["sliding_attention", "full_attention"])"), ErrorKind::kFormat,
               {"layer_types", "use_sliding_window"});
  expect_error(variant("qwen2", R"("layer_types": ["full_attention"])"), ErrorKind::kFormat, {"layer_types", "2"});
  expect_error(variant("qwen2", R"("use_sliding_window": true, "sliding_window": 4,
                                   "layer_types": ["chunked_attention", "full_attention"])"),
               ErrorKind::kUnsupported, {"layer_types[0]", "chunked_attention"});
  expect_error(variant("qwen2", R"("mlp_bias": true)"), ErrorKind::kUnsupported, {"mlp_bias", "qwen2"});
}

TEST(Config, MalformedJson) { expect_error("{\"model_type\": ", ErrorKind::kFormat, {"dir/config.json"}); }

// A number too large for a double (nlohmann's out_of_range) is bad JSON too, not a crash.
TEST(Config, NumberOverflow) {
  expect_error("{\"model_type\": \"llama\", \"rope_theta\": 1e999}", ErrorKind::kFormat, {"dir/config.json"});
}

TEST(Config, MissingKeyIsNamed) {
  std::string text = kGood;
  text.replace(text.find("\"hidden_size\""), 17, "\"hidden_sizes\": 64");
  expect_error(text, ErrorKind::kFormat, {"dir/config.json", "hidden_size"});
}

TEST(Config, WrongTypeIsNamed) {
  std::string text = kGood;
  text.replace(text.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": \"2\"");
  expect_error(text, ErrorKind::kFormat, {"num_hidden_layers"});
}

TEST(Config, InconsistentHeads) {
  std::string text = kGood;
  text.replace(text.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3");
  expect_error(text, ErrorKind::kFormat, {"num_key_value_heads"});
}

TEST(Config, UnsupportedRopeScaling) {
  std::string text = kGood;
  text.insert(text.size() - 1, R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0})");
  expect_error(text, ErrorKind::kUnsupported, {"rope_scaling", "yarn"});
}

}  // namespace
}  // namespace calq::model

namespace calq::model {
namespace {

TEST(Config, Llama3RopeScalingNeedsItsParameters) {
  std::string text = kGood;
  text.insert(text.size() - 1, R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0})");
  expect_error(text, ErrorKind::kFormat, {"rope_scaling.high_freq_factor", "llama3"});
  text = kGood;
  text.insert(text.size() - 1,
              R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,)"
              R"( "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  const ModelConfig c = parse_hf_config_text(text, "config.json");
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, "llama3");
  EXPECT_EQ(c.rope_freq_factors.size(), static_cast<size_t>(c.head_dim / 2));
  EXPECT_FALSE(c.plain_llama_block());
}

TEST(Config, MoeKeysAreRead) {
  const ModelConfig c = parse_hf_config_text(
      variant("qwen2_moe", R"("num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408,)"
                           R"( "shared_expert_intermediate_size": 5632, "norm_topk_prob": false)"),
      "config.json");
  ASSERT_TRUE(c.moe.has_value());
  EXPECT_EQ(c.moe->num_experts, 60);
  EXPECT_EQ(c.moe->experts_per_token, 4);
  EXPECT_EQ(c.moe->expert_intermediate, 1408);
  EXPECT_EQ(c.moe->shared_intermediate, 5632);
  EXPECT_FALSE(c.moe->norm_topk_prob);
  EXPECT_EQ(c.mlp_intermediate(), 5632);
  // Mixtral's expert width is intermediate_size; it always renormalises.
  const ModelConfig m =
      parse_hf_config_text(variant("mixtral", R"("num_local_experts": 8, "num_experts_per_tok": 2)"), "config.json");
  ASSERT_TRUE(m.moe.has_value());
  EXPECT_EQ(m.moe->expert_intermediate, m.intermediate_size);
  EXPECT_TRUE(m.moe->norm_topk_prob);
  EXPECT_EQ(m.mlp_intermediate(), 0);
  expect_error(variant("mixtral", R"("num_experts_per_tok": 2)"), ErrorKind::kFormat, {"num_local_experts"});
  expect_error(variant("qwen3_moe", R"("num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 8,)"
                                    R"( "decoder_sparse_step": 2)"),
               ErrorKind::kUnsupported, {"decoder_sparse_step = 2"});
}

}  // namespace
}  // namespace calq::model
