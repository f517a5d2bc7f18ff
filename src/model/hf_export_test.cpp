// write_hf_model / hf_config_json: write -> load_hf_model gives the same config, tensors and
// logits (F32 exactly, BF16 as rounded), window keys of each rule, sharding, and the refusals.
#include "model/hf_export.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "formats/format.h"
#include "io/safetensors.h"
#include "model/forward.h"
#include "model/synth.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

ModelConfig config_of(const std::string& type, bool tied = false, int64_t window = 0) {
  return synth_config({.model_type = type, .layers = 2, .hidden = 32, .heads = 4, .kv_heads = 2, .ffn = 48,
                       .vocab = 270, .sliding_window = window, .tied = tied});
}

using testing::error_of;

// The kind of the calq::Error fn throws (none when it throws none).
std::optional<ErrorKind> kind_of(const std::function<void()>& fn) {
  ErrorKind kind{};
  const std::string message = error_of(fn, &kind);
  return message.empty() ? std::nullopt : std::optional<ErrorKind>(kind);
}

bool same_values(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, sizeof(float) * n) == 0; }

// Every tensor of `b` equals `a`'s bit for bit (through the generic role accessors).
void expect_same_weights(const Model& a, const Model& b) {
  ThreadPool pool(1);
  const auto same_linear = [&](const LinearWeight& x, const LinearWeight& y, const std::string& what) {
    ASSERT_EQ(x.shape(), y.shape()) << what;
    const Tensor dx = x.to_dense(pool), dy = y.to_dense(pool);
    EXPECT_TRUE(same_values(dx.f32(), dy.f32(), dx.numel())) << what;
  };
  same_linear(a.embedding, b.embedding, "embedding");
  same_linear(a.output, b.output, "output");
  EXPECT_EQ(a.output.same_storage(a.embedding), b.output.same_storage(b.embedding));
  ASSERT_EQ(a.final_norm.shape(), b.final_norm.shape());
  EXPECT_TRUE(same_values(a.final_norm.f32(), b.final_norm.f32(), a.final_norm.numel()));
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (const TensorSlot& slot : a.arch->slots) {
      if (!is_per_layer(slot.role) || !has_role(a.config, slot.role)) continue;
      const std::string what = fmt::format("layer {} {}", l, role_name(slot.role));
      if (is_expert(slot.role)) {
        ASSERT_EQ(a.layers[l].experts.size(), b.layers[l].experts.size());
        for (size_t e = 0; e < a.layers[l].experts.size(); ++e) {
          same_linear(a.layers[l].experts[e].linear(slot.role), b.layers[l].experts[e].linear(slot.role),
                      fmt::format("{} expert {}", what, e));
        }
      } else if (is_linear(slot.role)) {
        same_linear(a.layers[l].linear(slot.role), b.layers[l].linear(slot.role), what);
      } else {
        const Tensor& x = a.layers[l].vector(slot.role);
        const Tensor& y = b.layers[l].vector(slot.role);
        ASSERT_EQ(x.shape(), y.shape()) << what;
        EXPECT_TRUE(same_values(x.f32(), y.f32(), x.numel())) << what;
      }
    }
  }
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.layer_window, b.layer_window);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.rope_freq_factors, b.rope_freq_factors);
  EXPECT_EQ(a.rope_scaling.has_value(), b.rope_scaling.has_value());
  if (a.rope_scaling && b.rope_scaling) {
    EXPECT_EQ(a.rope_scaling->type, b.rope_scaling->type);
    EXPECT_EQ(a.rope_scaling->factor, b.rope_scaling->factor);
    EXPECT_EQ(a.rope_scaling->low_freq_factor, b.rope_scaling->low_freq_factor);
    EXPECT_EQ(a.rope_scaling->high_freq_factor, b.rope_scaling->high_freq_factor);
    EXPECT_EQ(a.rope_scaling->original_max_position, b.rope_scaling->original_max_position);
  }
  ASSERT_EQ(a.moe.has_value(), b.moe.has_value());
  if (a.moe) {
    EXPECT_EQ(a.moe->num_experts, b.moe->num_experts);
    EXPECT_EQ(a.moe->experts_per_token, b.moe->experts_per_token);
    EXPECT_EQ(a.moe->expert_intermediate, b.moe->expert_intermediate);
    EXPECT_EQ(a.moe->shared_intermediate, b.moe->shared_intermediate);
    EXPECT_EQ(a.moe->norm_topk_prob, b.moe->norm_topk_prob);
  }
}

TEST(HfExport, RoundTripF32EveryArchitecture) {
  ThreadPool pool(2);
  const auto dir = testing::temp_dir("hf_export");
  for (const std::string& type : supported_model_types()) {
    for (const bool tied : {false, true}) {
      SCOPED_TRACE(type + (tied ? " tied" : ""));
      const Model m = synth_model(config_of(type, tied), 3, pool);
      const auto folder = dir / (type + (tied ? "_tied" : ""));
      write_hf_model(m, folder, {}, pool);
      const Model back = load_hf_model(folder, pool);
      expect_same_config(m.config, back.config);
      expect_same_weights(m, back);
      EXPECT_EQ(std::filesystem::exists(folder / "model.safetensors"), true);
      const std::vector<int32_t> ids = {1, 5, 260, 17, 269};
      const Tensor a = forward(m, ids, pool), b = forward(back, ids, pool);
      EXPECT_TRUE(same_values(a.f32(), b.f32(), a.numel()));
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(HfExport, Bf16HoldsTheRoundedValues) {
  ThreadPool pool(2);
  const auto dir = testing::temp_dir("hf_export");
  const Model m = synth_model(config_of("qwen2"), 5, pool);  // float32 values: bf16 rounds them
  write_hf_model(m, dir / "m", {.dtype = DType::kBF16}, pool);
  const Model back = load_hf_model(dir / "m", pool);
  const auto config = nlohmann::json::parse(std::ifstream(dir / "m" / "config.json"));
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  const io::SafetensorsModel st = io::SafetensorsModel::open_folder(dir / "m");
  for (const std::string& name : st.names()) EXPECT_EQ(st.info(name).dtype, DType::kBF16) << name;
  // Each value is the bf16 rounding of the source's (norms and biases too).
  const auto check = [](const float* src, const float* got, int64_t n, const char* what) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += got[i] != bf16_to_f32(f32_to_bf16(src[i]));
    EXPECT_EQ(bad, 0) << what;
  };
  check(m.embedding.dense().f32(), back.embedding.dense().f32(), m.embedding.numel(), "embedding");
  check(m.layers[1].wq.dense().f32(), back.layers[1].wq.dense().f32(), m.layers[1].wq.numel(), "wq");
  check(m.layers[0].bk.f32(), back.layers[0].bk.f32(), m.layers[0].bk.numel(), "bk");
  check(m.final_norm.f32(), back.final_norm.f32(), m.final_norm.numel(), "final norm");
  // A model of bf16 values round-trips exactly.
  const Model b16 = synth_model(config_of("qwen2"), 5, pool, DType::kBF16);
  write_hf_model(b16, dir / "b", {.dtype = DType::kBF16}, pool);
  expect_same_weights(b16, load_hf_model(dir / "b", pool));
  std::filesystem::remove_all(dir);
}

TEST(HfExport, ConfigKeysRoundTrip) {
  // Mistral: every layer; Qwen2: from a layer on (max_window_layers) or any pattern (layer_types).
  ModelConfig mistral = config_of("mistral", false, 7);
  ModelConfig qwen = config_of("qwen2", false, 5);
  qwen.num_layers = 4;
  qwen.layer_window = {false, false, true, true};
  ModelConfig odd = qwen;
  odd.layer_window = {true, false, true, false};
  for (const ModelConfig* c : {&mistral, &qwen, &odd}) {
    const std::string text = hf_config_json(*c);
    expect_same_config(*c, parse_hf_config_text(text, "test"));
  }
  const auto j = nlohmann::json::parse(hf_config_json(qwen));
  EXPECT_EQ(j["use_sliding_window"], true);
  EXPECT_EQ(j["max_window_layers"], 2);
  EXPECT_FALSE(j.contains("layer_types"));
  EXPECT_TRUE(nlohmann::json::parse(hf_config_json(odd)).contains("layer_types"));
  const auto none = nlohmann::json::parse(hf_config_json(config_of("qwen2")));
  EXPECT_EQ(none["use_sliding_window"], false);
  EXPECT_TRUE(none["sliding_window"].is_null());
  EXPECT_TRUE(nlohmann::json::parse(hf_config_json(config_of("mistral")))["sliding_window"].is_null());
  // Keys as transformers writes them.
  const auto llama = nlohmann::json::parse(hf_config_json(config_of("llama")));
  EXPECT_EQ(llama["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(llama["attention_bias"], false);
  EXPECT_EQ(llama["mlp_bias"], false);
  EXPECT_EQ(llama["head_dim"], 8);
  EXPECT_EQ(llama["bos_token_id"], 1);
  EXPECT_FALSE(llama.contains("sliding_window"));
  // Rotary scaling and experts round-trip with the keys transformers uses.
  for (const SynthSpec& spec :
       {SynthSpec{.model_type = "llama", .rope_scaling = "llama3", .rope_original_max_position = 64},
        SynthSpec{.model_type = "llama", .rope_scaling = "linear", .rope_factor = 2.5},
        SynthSpec{.model_type = "mixtral", .ffn = 40, .experts = 3},
        SynthSpec{.model_type = "qwen2_moe", .expert_ffn = 24, .shared_ffn = 40, .norm_topk_prob = true},
        SynthSpec{.model_type = "qwen3_moe", .experts = 8, .experts_per_token = 3}}) {
    const ModelConfig c = synth_config(spec);
    expect_same_config(c, parse_hf_config_text(hf_config_json(c), "test"));
  }
  const auto l3 = nlohmann::json::parse(hf_config_json(
      synth_config({.model_type = "llama", .rope_scaling = "llama3", .rope_original_max_position = 64})));
  EXPECT_EQ(l3["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(l3["rope_scaling"]["original_max_position_embeddings"], 64);
  const auto mx = nlohmann::json::parse(hf_config_json(synth_config({.model_type = "mixtral", .ffn = 40})));
  EXPECT_EQ(mx["num_local_experts"], 4);
  EXPECT_EQ(mx["intermediate_size"], 40);
  EXPECT_FALSE(mx.contains("norm_topk_prob"));
  const auto q3 = nlohmann::json::parse(hf_config_json(synth_config({.model_type = "qwen3_moe", .expert_ffn = 24})));
  EXPECT_EQ(q3["num_experts"], 4);
  EXPECT_EQ(q3["moe_intermediate_size"], 24);
  EXPECT_EQ(q3["norm_topk_prob"], true);
  EXPECT_EQ(q3["architectures"][0], "Qwen3MoeForCausalLM");
  // A window on an architecture without a rule for it.
  ModelConfig bad = config_of("llama");
  bad.sliding_window = 4;
  bad.layer_window = {true, true};
  EXPECT_EQ(kind_of([&] { (void)hf_config_json(bad); }), ErrorKind::kUnsupported);
  ModelConfig partial = mistral;
  partial.layer_window = {true, false};
  EXPECT_EQ(kind_of([&] { (void)hf_config_json(partial); }), ErrorKind::kUnsupported);
}

TEST(HfExport, ClassNames) {
  EXPECT_EQ(hf_class_name("llama"), "LlamaForCausalLM");
  EXPECT_EQ(hf_class_name("qwen2"), "Qwen2ForCausalLM");
  EXPECT_EQ(hf_class_name("qwen2_moe"), "Qwen2MoeForCausalLM");
  EXPECT_EQ(hf_class_name("qwen3_moe"), "Qwen3MoeForCausalLM");
  EXPECT_EQ(hf_class_name("mixtral"), "MixtralForCausalLM");
}

TEST(HfExport, ShardsQuantizedWeightsAndExtraFiles) {
  ThreadPool pool(2);
  const auto dir = testing::temp_dir("hf_export");
  Model m = synth_model(config_of("llama"), 9, pool);
  // A quantized weight is written dequantized.
  const Tensor wv = m.layers[0].wv.dense();
  m.layers[0].wv = QuantizedTensor::quantize(pool, format_by_name("q8_0"), wv.f32(), wv.dim(0), wv.dim(1));
  write_hf_model(m, dir / "m", {.extra_files = {{"tokenizer.json", "{}\n"}}, .max_shard_bytes = 40'000}, pool);
  EXPECT_TRUE(std::filesystem::exists(dir / "m" / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "m" / "model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir / "m" / "tokenizer.json"));
  const Model back = load_hf_model(dir / "m", pool);
  expect_same_weights(m, back);
  std::filesystem::remove_all(dir);
}

TEST(HfExport, RefusesWithoutLeavingAnything) {
  ThreadPool pool(1);
  const auto dir = testing::temp_dir("hf_export");
  const Model m = synth_model(config_of("llama"), 1, pool);
  // An existing folder: only with overwrite, and only a model folder.
  std::filesystem::create_directories(dir / "other");
  std::ofstream(dir / "other" / "notes.txt") << "keep";
  EXPECT_EQ(kind_of([&] { write_hf_model(m, dir / "other", {}, pool); }), ErrorKind::kInvalidArgument);
  const std::string e = error_of([&] { write_hf_model(m, dir / "other", {.overwrite = true}, pool); });
  EXPECT_NE(e.find("not a model folder"), std::string::npos) << e;
  EXPECT_TRUE(std::filesystem::exists(dir / "other" / "notes.txt"));
  write_hf_model(m, dir / "model", {}, pool);
  EXPECT_EQ(kind_of([&] { write_hf_model(m, dir / "model", {}, pool); }), ErrorKind::kInvalidArgument);
  const Model m2 = synth_model(config_of("llama"), 2, pool);
  write_hf_model(m2, dir / "model", {.overwrite = true}, pool);
  expect_same_weights(m2, load_hf_model(dir / "model", pool));
  // What a Hugging Face folder cannot hold, and bad options.
  Model adapted = m;
  adapted.layers[1].adapter_slot(TensorRole::kMlpUp) =
      LoraAdapter::make(Tensor::zeros(DType::kF32, {2, m.config.hidden_size}),
                        Tensor::zeros(DType::kF32, {m.config.intermediate_size, 2}), 4.0, m.config.hidden_size,
                        m.config.intermediate_size, "test");
  EXPECT_EQ(kind_of([&] { write_hf_model(adapted, dir / "a", {}, pool); }), ErrorKind::kUnsupported);
  EXPECT_EQ(kind_of([&] { write_hf_model(m, dir / "f16", {.dtype = DType::kF16}, pool); }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { write_hf_model(m, dir / "x", {.extra_files = {{"../x", ""}}}, pool); }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { write_hf_model(m, dir / "missing" / "m", {}, pool); }), ErrorKind::kIo);
  // Nothing but the two folders made on purpose.
  std::vector<std::string> left;
  for (const auto& e2 : std::filesystem::directory_iterator(dir)) left.push_back(e2.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"model", "other"}));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
