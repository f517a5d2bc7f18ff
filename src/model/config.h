// ModelConfig — the hyper-parameters calq's runtime needs, read from a Hugging Face config.json
// (here) or from GGUF metadata (gguf_model.h).
//
// Contract: parse_hf_config() accepts the model types in the architecture tables (architecture.h)
// and throws calq::Error naming config.json and the key on anything missing, mistyped,
// inconsistent (e.g. heads not dividing hidden size, top-k above the expert count) or
// unsupported (rope scaling other than "default", "linear" and "llama3"; MoE layouts with dense
// layers; unknown model_type — the message lists the supported ones).
//
// Rotary scaling follows transformers: "linear" divides every inverse frequency by `factor`;
// "llama3" (Llama 3.1+) divides the low frequencies by `factor`, keeps the high ones and blends
// between (low_freq_factor, high_freq_factor, original_max_position_embeddings). Both become
// per-frequency divisors (rope_freq_factors, llama.cpp's rope_freqs tensor), the form a GGUF file
// carries them in.
//
// Sliding windows follow transformers: a layer with window W lets the query at position i attend
// to keys j with i - W < j <= i. Mistral applies `sliding_window` (null = none) to every layer;
// Qwen2 only when `use_sliding_window` is true, to the layers `layer_types` marks
// "sliding_attention" or else to layers >= `max_window_layers` (default 28, as transformers).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calq {
class Format;  // formats/format.h
}  // namespace calq

namespace calq::model {

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2"
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
  bool qkv_bias = false;          // q/k/v projections add a bias (Qwen2)
  int64_t sliding_window = 0;     // 0 = none
  std::vector<bool> layer_window;  // per layer: whether `sliding_window` applies (empty = none)
  // Set by rotate_model (model/rotate.h): the weights are rotated by Hadamard rotations; the
  // forward pass applies their online parts. Persisted as calq.rotation.* GGUF keys.
  struct Rotation {
    uint64_t residual_seed = 0;  // residual stream rotated by Q = randomized Hadamard(hidden_size, seed)
    // Runtime applies x·Q after the embedding lookup and x·Qᵀ before the final norm (tied
    // embeddings, which stay unrotated); false: folded entirely into the weights.
    bool residual_online = false;
    // Runtime applies x·Q_d (randomized Hadamard(intermediate_size, seed)) to the MLP
    // intermediate activation before w_down.
    std::optional<uint64_t> down_seed;
  };
  std::optional<Rotation> rotation;
  // Per-head RMSNorm of queries and keys before the rotary embedding (Qwen3).
  bool qk_norm = false;
  // Rotary scaling: inv_freq[i] is divided by rope_freq_factors[i] (head_dim / 2 entries; empty =
  // none), `rope_scaling` says where they came from (written back to config.json / GGUF).
  struct RopeScaling {
    std::string type;  // "linear" or "llama3"
    double factor = 1.0;
    double low_freq_factor = 1.0;   // llama3
    double high_freq_factor = 4.0;  // llama3
    int64_t original_max_position = 8192;  // llama3
  };
  std::optional<RopeScaling> rope_scaling;
  std::vector<float> rope_freq_factors;
  // Mixture-of-experts MLP in every layer (architecture.h: Architecture::moe); nullopt = dense.
  struct Moe {
    int64_t num_experts = 0;
    int64_t experts_per_token = 0;
    int64_t expert_intermediate = 0;  // width of each expert's gate/up
    int64_t shared_intermediate = 0;  // the shared expert's width (0: none)
    bool norm_topk_prob = true;       // renormalise the picked probabilities to sum to 1
  };
  std::optional<Moe> moe;
  // Runtime only, never persisted (calibration, model/moe.h): the LinearHook sees every expert's
  // inputs on all tokens, not only the ones routed to it; outputs still combine by the router.
  bool moe_hook_all_experts = false;
  // Runtime only, never persisted (model/kv_cache.h): keys and values pass through this format
  // before attention, token by token; nullptr = a float cache.
  const Format* kv_cache = nullptr;

  int64_t q_dim() const { return num_heads * head_dim; }
  // The width of the dense MLP slots (kMlpGate/Up/Down): intermediate_size, or a MoE model's
  // shared expert width (0 when it has none).
  int64_t mlp_intermediate() const { return moe ? moe->shared_intermediate : intermediate_size; }
  // Whether the block is the plain Llama one the training engine and the rotations know (no
  // experts, head norms or rotary scaling).
  bool plain_llama_block() const { return !moe && !qk_norm && rope_freq_factors.empty(); }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // The attention window of `layer` (0 = full causal attention).
  int64_t window_for_layer(int64_t layer) const {
    const auto l = static_cast<size_t>(layer);
    return sliding_window > 0 && l < layer_window.size() && layer_window[l] ? sliding_window : 0;
  }
};

// `origin` names the file in error messages.
ModelConfig parse_hf_config_text(std::string_view json_text, std::string_view origin);
ModelConfig parse_hf_config(const std::filesystem::path& config_json);

// The per-frequency divisors of a rotary scaling (see above) for head_dim; asserts a known type.
std::vector<float> rope_scaling_factors(const ModelConfig::RopeScaling& scaling, double theta, int64_t head_dim);

}  // namespace calq::model
