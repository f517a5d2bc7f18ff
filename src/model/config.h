// ModelConfig — the hyper-parameters calq's runtime needs, read from a Hugging Face config.json.
//
// Contract: parse_hf_config() accepts the model types in the architecture table (architecture.h)
// and throws calq::Error naming config.json and the key on anything missing, mistyped,
// inconsistent (e.g. heads not dividing hidden size) or unsupported (rope scaling other than
// "default", unknown model_type — the message lists the supported ones).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace calq::model {

struct ModelConfig {
  std::string model_type;  // "llama"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::optional<int32_t> bos_token_id;
  std::optional<int32_t> eos_token_id;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
};

// `origin` names the file in error messages.
ModelConfig parse_hf_config_text(std::string_view json_text, std::string_view origin);
ModelConfig parse_hf_config(const std::filesystem::path& config_json);

}  // namespace calq::model
