#include "model/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/architecture.h"

namespace calq::model {
namespace {

using nlohmann::json;

class ConfigReader {
 public:
  ConfigReader(const json& root, std::string_view origin) : root_(root), origin_(origin) {}

  int64_t require_int(const char* key, int64_t min_value = 1) const {
    const auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) {
      fail(ErrorKind::kFormat, "{}: missing required key '{}'", origin_, key);
    }
    return checked_int(*it, key, min_value);
  }

  std::optional<int64_t> optional_int(const char* key, int64_t min_value = 1) const {
    const auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) return std::nullopt;
    return checked_int(*it, key, min_value);
  }

  double number_or(const json& obj, const char* key, double fallback, std::string_view path) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_number()) fail(ErrorKind::kFormat, "{}: key '{}' must be a number", origin_, path);
    return it->get<double>();
  }

  bool bool_or(const char* key, bool fallback) const {
    const auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(ErrorKind::kFormat, "{}: key '{}' must be true or false", origin_, key);
    return it->get<bool>();
  }

  std::optional<int32_t> token_id(const char* key) const {
    const auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) return std::nullopt;
    // Some configs list several EOS ids; the first is the canonical one.
    const json& v = it->is_array() && !it->empty() ? it->front() : *it;
    if (!v.is_number_integer()) return std::nullopt;
    return static_cast<int32_t>(v.get<int64_t>());
  }

 private:
  int64_t checked_int(const json& v, const char* key, int64_t min_value) const {
    if (!v.is_number_integer()) {
      fail(ErrorKind::kFormat, "{}: key '{}' must be an integer, got {}", origin_, key, v.dump());
    }
    const int64_t value = v.get<int64_t>();
    if (value < min_value || value > (int64_t{1} << 31)) {
      fail(ErrorKind::kFormat, "{}: key '{}' = {} is out of range", origin_, key, value);
    }
    return value;
  }

  const json& root_;
  std::string_view origin_;
};

void check_rope(const json& root, std::string_view origin, ModelConfig& config, const ConfigReader& r) {
  // transformers 5 writes rope settings under "rope_parameters"; older configs use "rope_theta"
  // and "rope_scaling" at top level.
  config.rope_theta = r.number_or(root, "rope_theta", 10000.0, "rope_theta");
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    const auto it = root.find(key);
    if (it == root.end() || it->is_null()) continue;
    if (!it->is_object()) fail(ErrorKind::kFormat, "{}: key '{}' must be an object", origin, key);
    config.rope_theta = r.number_or(*it, "rope_theta", config.rope_theta, fmt::format("{}.rope_theta", key));
    std::string type = "default";
    for (const char* type_key : {"rope_type", "type"}) {
      if (auto t = it->find(type_key); t != it->end() && t->is_string()) type = t->get<std::string>();
    }
    if (type == "default") continue;
    if (type != "linear" && type != "llama3") {
      fail(ErrorKind::kUnsupported,
           "{}: {}.rope_type '{}' is not supported (calq supports 'default', 'linear', 'llama3')", origin, key, type);
    }
    ModelConfig::RopeScaling s{.type = type};
    const auto positive = [&](const char* name, double fallback, bool required) {
      if (required && (it->find(name) == it->end() || (*it)[name].is_null())) {
        fail(ErrorKind::kFormat, "{}: {}.{} is required for rope_type '{}'", origin, key, name, type);
      }
      const double v = r.number_or(*it, name, fallback, fmt::format("{}.{}", key, name));
      if (!(v > 0.0) || !std::isfinite(v)) fail(ErrorKind::kFormat, "{}: {}.{} must be positive", origin, key, name);
      return v;
    };
    s.factor = positive("factor", 1.0, true);
    if (type == "llama3") {
      s.low_freq_factor = positive("low_freq_factor", 1.0, true);
      s.high_freq_factor = positive("high_freq_factor", 4.0, true);
      s.original_max_position =
          static_cast<int64_t>(positive("original_max_position_embeddings", 8192.0, true));
      if (!(s.high_freq_factor > s.low_freq_factor)) {
        fail(ErrorKind::kFormat, "{}: {}.high_freq_factor must exceed low_freq_factor", origin, key);
      }
    }
    config.rope_scaling = s;
  }
  if (!(config.rope_theta > 0.0)) fail(ErrorKind::kFormat, "{}: rope_theta must be positive", origin);
  if (config.rope_scaling) {
    config.rope_freq_factors = rope_scaling_factors(*config.rope_scaling, config.rope_theta, config.head_dim);
  }
}

// The experts of a MoE architecture (config.h); every layer must be sparse.
void read_moe(const json& root, std::string_view origin, const MoeRule& rule, ModelConfig& config,
              const ConfigReader& r) {
  ModelConfig::Moe moe;
  moe.num_experts = r.require_int(std::string(rule.num_experts_key).c_str());
  moe.experts_per_token = r.require_int("num_experts_per_tok");
  moe.expert_intermediate = r.require_int(std::string(rule.expert_width_key).c_str());
  if (moe.experts_per_token > moe.num_experts) {
    fail(ErrorKind::kFormat, "{}: num_experts_per_tok {} exceeds {} {}", origin, moe.experts_per_token,
         rule.num_experts_key, moe.num_experts);
  }
  if (rule.shared_expert) moe.shared_intermediate = r.require_int("shared_expert_intermediate_size");
  moe.norm_topk_prob = rule.has_norm_topk_key ? r.bool_or("norm_topk_prob", rule.norm_topk_default)
                                              : rule.norm_topk_default;
  if (const auto step = r.optional_int("decoder_sparse_step"); step && *step != 1) {
    fail(ErrorKind::kUnsupported,
         "{}: decoder_sparse_step = {} mixes dense and expert layers, which calq does not run (nor llama.cpp)",
         origin, *step);
  }
  if (auto only = root.find("mlp_only_layers"); only != root.end() && !only->is_null()) {
    if (!only->is_array()) fail(ErrorKind::kFormat, "{}: key 'mlp_only_layers' must be a list", origin);
    if (!only->empty()) {
      fail(ErrorKind::kUnsupported,
           "{}: mlp_only_layers {} mixes dense and expert layers, which calq does not run (nor llama.cpp)", origin,
           only->dump());
    }
  }
  config.moe = moe;
}

// The per-layer sliding window (see config.h for the rules).
void read_window(const json& root, std::string_view origin, WindowRule rule, ModelConfig& config,
                 const ConfigReader& r) {
  if (rule == WindowRule::kNone) return;
  std::optional<int64_t> window = r.optional_int("sliding_window");
  if (rule == WindowRule::kQwen2Layers && !r.bool_or("use_sliding_window", false)) window.reset();
  const auto n = static_cast<size_t>(config.num_layers);
  std::vector<bool> layers;
  if (auto types = root.find("layer_types"); types != root.end() && !types->is_null()) {
    if (!types->is_array() || types->size() != n) {
      fail(ErrorKind::kFormat, "{}: key 'layer_types' must be a list of {} strings (one per layer)", origin, n);
    }
    for (size_t i = 0; i < n; ++i) {
      const json& t = (*types)[i];
      if (t == "full_attention") {
        layers.push_back(false);
      } else if (t == "sliding_attention") {
        layers.push_back(true);
      } else {
        fail(ErrorKind::kUnsupported,
             "{}: layer_types[{}] = {} is not supported (calq supports full_attention, sliding_attention)", origin,
             i, t.dump());
      }
    }
    if (!window) {
      if (std::find(layers.begin(), layers.end(), true) != layers.end()) {
        fail(ErrorKind::kFormat, "{}: layer_types lists sliding_attention but no sliding_window is in effect{}",
             origin, rule == WindowRule::kQwen2Layers ? " (use_sliding_window is not true)" : "");
      }
      return;
    }
  } else {
    if (!window) return;
    // Qwen2: layers below max_window_layers keep full attention.
    const int64_t first = rule == WindowRule::kQwen2Layers ? r.optional_int("max_window_layers", 0).value_or(28) : 0;
    for (size_t i = 0; i < n; ++i) layers.push_back(static_cast<int64_t>(i) >= first);
  }
  config.sliding_window = *window;
  config.layer_window = std::move(layers);
}

}  // namespace

ModelConfig parse_hf_config_text(std::string_view json_text, std::string_view origin) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
    fail(ErrorKind::kFormat, "{}: malformed JSON: {}", origin, e.what());
  }
  if (!root.is_object()) fail(ErrorKind::kFormat, "{}: top level must be a JSON object", origin);

  ModelConfig config;
  const auto type_it = root.find("model_type");
  if (type_it == root.end() || !type_it->is_string()) {
    fail(ErrorKind::kFormat, "{}: missing required key 'model_type' (supported: {})", origin,
         fmt::join(supported_model_types(), ", "));
  }
  config.model_type = type_it->get<std::string>();
  if (find_architecture(config.model_type) == nullptr) {
    fail(ErrorKind::kUnsupported, "{}: model_type '{}' is not supported (supported: {})", origin,
         config.model_type, fmt::join(supported_model_types(), ", "));
  }

  const ConfigReader r(root, origin);
  config.vocab_size = r.require_int("vocab_size");
  config.hidden_size = r.require_int("hidden_size");
  config.intermediate_size = r.require_int("intermediate_size");
  config.num_layers = r.require_int("num_hidden_layers");
  config.num_heads = r.require_int("num_attention_heads");
  config.num_kv_heads = r.optional_int("num_key_value_heads").value_or(config.num_heads);
  config.max_position_embeddings = r.optional_int("max_position_embeddings").value_or(2048);
  config.rms_norm_eps = r.number_or(root, "rms_norm_eps", 1e-6, "rms_norm_eps");
  config.tie_word_embeddings = r.bool_or("tie_word_embeddings", false);
  config.bos_token_id = r.token_id("bos_token_id");
  config.eos_token_id = r.token_id("eos_token_id");
  if (config.hidden_size % config.num_heads != 0 && !root.contains("head_dim")) {
    fail(ErrorKind::kFormat, "{}: hidden_size {} is not divisible by num_attention_heads {}", origin,
         config.hidden_size, config.num_heads);
  }
  config.head_dim = r.optional_int("head_dim").value_or(config.hidden_size / config.num_heads);
  if (config.head_dim % 2 != 0) fail(ErrorKind::kFormat, "{}: head_dim {} must be even", origin, config.head_dim);
  if (config.num_heads % config.num_kv_heads != 0) {
    fail(ErrorKind::kFormat, "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}",
         origin, config.num_heads, config.num_kv_heads);
  }
  if (!(config.rms_norm_eps > 0.0)) fail(ErrorKind::kFormat, "{}: rms_norm_eps must be positive", origin);
  if (auto act = root.find("hidden_act"); act != root.end() && act->is_string() && *act != "silu") {
    fail(ErrorKind::kUnsupported, "{}: hidden_act '{}' is not supported (calq supports 'silu')", origin,
         act->get<std::string>());
  }
  const Architecture& arch = *find_architecture(config.model_type);
  for (const std::string_view key : arch.refused_true_keys) {
    if (auto b = root.find(key); b != root.end() && b->is_boolean() && b->get<bool>()) {
      fail(ErrorKind::kUnsupported, "{}: {} = true is not supported for model_type '{}'", origin, key,
           config.model_type);
    }
  }
  config.qkv_bias = has_slot(arch, TensorRole::kAttnQBias);
  config.qk_norm = has_slot(arch, TensorRole::kAttnQNorm);
  if (arch.moe != nullptr) read_moe(root, origin, *arch.moe, config, r);
  check_rope(root, origin, config, r);
  read_window(root, origin, arch.window_rule, config, r);
  return config;
}

std::vector<float> rope_scaling_factors(const ModelConfig::RopeScaling& s, double theta, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<float> out(static_cast<size_t>(half), 1.0f);
  for (int64_t i = 0; i < half; ++i) {
    double f = s.factor;
    if (s.type == "llama3") {
      // transformers' _compute_llama3_parameters (and llama.cpp's converter, which stores these
      // divisors): wavelengths shorter than original/high_freq_factor keep their frequency,
      // longer than original/low_freq_factor are divided by factor, and those between blend.
      const double freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
      const double wavelen = 2.0 * 3.14159265358979323846 / freq;
      const double old = static_cast<double>(s.original_max_position);
      const double low_wavelen = old / s.low_freq_factor;
      const double high_wavelen = old / s.high_freq_factor;
      if (wavelen < high_wavelen) {
        f = 1.0;
      } else if (wavelen > low_wavelen) {
        f = s.factor;
      } else {
        const double smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = 1.0 / ((1.0 - smooth) / s.factor + smooth);
      }
    } else {
      assert(s.type == "linear");
    }
    out[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return out;
}

ModelConfig parse_hf_config(const std::filesystem::path& config_json) {
  return parse_hf_config_text(read_text_file(config_json), config_json.string());
}

}  // namespace calq::model
