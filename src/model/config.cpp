#include "model/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
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
    if (type != "default") {
      fail(ErrorKind::kUnsupported, "{}: {}.rope_type '{}' is not supported (calq supports 'default')",
           origin, key, type);
    }
  }
  if (!(config.rope_theta > 0.0)) fail(ErrorKind::kFormat, "{}: rope_theta must be positive", origin);
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
  check_rope(root, origin, config, r);
  read_window(root, origin, arch.window_rule, config, r);
  return config;
}

ModelConfig parse_hf_config(const std::filesystem::path& config_json) {
  return parse_hf_config_text(read_text_file(config_json), config_json.string());
}

}  // namespace calq::model
