// Architecture tables: the only place in calq that knows tensor names. Everything downstream
// (calibration, quantizers) sees a TensorRole and a layer index, never a name string.
//
// Each architecture is one table in a file of its own (arch_llama.cpp, arch_qwen2.cpp,
// arch_mistral.cpp): its Hugging Face and GGUF tensor names, which slots are optional, how its
// config.json decides the attention window, how llama.cpp's converter writes it to GGUF, and the
// wiring of its decoder block (block_topology.h: which linears share an input, what produces it,
// where input scales fold). Adding an architecture = one arch_<name>.cpp, its line in the
// registry (architecture.cpp) and in CMakeLists.txt, plus a test (docs: "Adding an architecture").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace calq::model {

struct BlockTopology;  // block_topology.h

// The numbering is stable: new roles are appended.
enum class TensorRole : uint8_t {
  kTokenEmbedding,
  kAttnNorm,
  kAttnQ,
  kAttnK,
  kAttnV,
  kAttnOut,
  kMlpNorm,
  kMlpGate,
  kMlpUp,
  kMlpDown,
  kFinalNorm,
  kOutput,
  kAttnQBias,  // [q_dim], added to the q projection (Qwen2)
  kAttnKBias,  // [kv_dim]
  kAttnVBias,  // [kv_dim]
  kAttnQNorm,  // [head_dim]: RMSNorm of each query head before the rotary embedding (Qwen3)
  kAttnKNorm,  // [head_dim]: the same for keys
  // Mixture-of-experts layers (config.moe): the router [num_experts, hidden] (kept in float, as
  // llama.cpp keeps ffn_gate_inp), the experts' SwiGLU linears — one weight per (layer, expert):
  // gate/up [expert_intermediate, hidden], down [hidden, expert_intermediate]; in GGUF one 3-D
  // tensor per layer stacks them — and the shared expert's sigmoid gate [1, hidden] (Qwen2-MoE,
  // whose shared expert itself is the dense kMlpGate/kMlpUp/kMlpDown slots).
  kMoeRouter,
  kExpertGate,
  kExpertUp,
  kExpertDown,
  kSharedExpertGate,
};
inline constexpr size_t kNumTensorRoles = 22;

std::string_view role_name(TensorRole role);  // "attn_q", "mlp_down", "attn_q_bias", ...
bool is_linear(TensorRole role);              // has a [out, in] weight applied to an activation
bool is_per_layer(TensorRole role);
bool is_bias(TensorRole role);                // a 1-d bias added after a linear layer
bool is_norm(TensorRole role);                // an RMSNorm weight (attention, mlp or final norm)
bool is_head_norm(TensorRole role);           // a per-head q/k RMSNorm weight [head_dim] (Qwen3)
// An expert's linear (kExpertGate/Up/Down): per (layer, expert), so not is_linear(); loops over
// roles handle it apart (LayerWeights::experts).
bool is_expert(TensorRole role);
// The linear role a bias belongs to (kAttnQBias -> kAttnQ); asserts is_bias(role).
TensorRole bias_target(TensorRole role);

struct TensorSlot {
  TensorRole role;
  // "{}" stands for the layer index in per-layer names; an expert role's Hugging Face name has a
  // second "{}" for the expert index (its GGUF name has one: the experts of a layer are one 3-D
  // tensor there).
  std::string_view hf_name;
  std::string_view gguf_name;  // llama.cpp's name, same "{}" convention
  bool optional = false;       // e.g. the output head when embeddings are tied
};

// How config.json decides which layers use a sliding attention window.
enum class WindowRule : uint8_t {
  kNone,         // full causal attention everywhere (Llama)
  kAllLayers,    // `sliding_window` (null = none) applies to every layer (Mistral)
  kQwen2Layers,  // `sliding_window` only if `use_sliding_window`; layers >= `max_window_layers`
};

// llama.cpp's hyper-parameter keys, each prefixed with "<gguf_arch>." in the file.
struct GgufHparamKeys {
  std::string_view block_count = "block_count";
  std::string_view embedding_length = "embedding_length";
  std::string_view feed_forward_length = "feed_forward_length";
  std::string_view head_count = "attention.head_count";
  std::string_view head_count_kv = "attention.head_count_kv";
  std::string_view key_length = "attention.key_length";
  std::string_view value_length = "attention.value_length";
  std::string_view rope_freq_base = "rope.freq_base";
  std::string_view rope_dimension_count = "rope.dimension_count";
  std::string_view rope_scaling_type = "rope.scaling.type";
  std::string_view rms_norm_eps = "attention.layer_norm_rms_epsilon";
  std::string_view context_length = "context_length";
  std::string_view sliding_window = "attention.sliding_window";
  std::string_view vocab_size = "vocab_size";
  std::string_view expert_count = "expert_count";
  std::string_view expert_used_count = "expert_used_count";
  std::string_view expert_feed_forward_length = "expert_feed_forward_length";
  std::string_view expert_shared_feed_forward_length = "expert_shared_feed_forward_length";
  std::string_view rope_scaling_factor = "rope.scaling.factor";
  std::string_view rope_scaling_original_context = "rope.scaling.original_context_length";
};

// How a mixture-of-experts architecture is described in config.json and GGUF (Architecture::moe).
struct MoeRule {
  std::string_view num_experts_key;      // "num_local_experts" (Mixtral), "num_experts" (Qwen)
  std::string_view expert_width_key;     // "intermediate_size" (Mixtral), "moe_intermediate_size"
  bool shared_expert = false;            // Qwen2-MoE: shared_expert_intermediate_size + its gate
  // The config's norm_topk_prob default (Mixtral: always renormalised, no key) and what llama.cpp
  // hard-codes for the GGUF architecture (a config that differs cannot be written to GGUF).
  bool norm_topk_default = true;
  bool has_norm_topk_key = false;
  bool gguf_norm_topk = true;
  // Whether the GGUF feed_forward_length is the expert width (Mixtral as "llama") or the dense
  // width, the expert one then in expert_feed_forward_length.
  bool gguf_ffn_is_expert_width = false;
};

struct Architecture {
  std::string_view model_type;  // config.json "model_type"
  std::span<const TensorSlot> slots;
  WindowRule window_rule = WindowRule::kNone;
  // config.json keys that must not be true for this architecture (layouts calq does not run).
  std::span<const std::string_view> refused_true_keys;

  // GGUF: the `general.architecture` llama.cpp's converter writes for this model type, and
  // whether that name identifies this table when reading (false for Mistral, which the converter
  // writes as "llama": such a file loads as the llama table, which reads a sliding window key).
  std::string_view gguf_arch;
  bool gguf_reads_as_this = true;
  // Whether the converter permutes the rows of Q/K (weights and biases) for llama.cpp's
  // interleaved rotary embedding; the loader undoes it.
  bool gguf_permutes_qk = false;
  // Whether `<gguf_arch>.attention.sliding_window`, when present, applies to every layer (calq
  // writes Mistral's window there); if false, a file with that key is refused.
  bool gguf_window_all_layers = false;
  // Whether llama.cpp's loader requires output.weight even when the embeddings are tied
  // (qwen2moe): the export then writes the head as its own tensor.
  bool gguf_output_required = false;
  GgufHparamKeys gguf_keys{};
  // The wiring of the decoder block (never null; block_topology.h). Architectures with the same
  // block point at one shared definition (kLlamaBlock).
  const BlockTopology* block = nullptr;
  // Mixture-of-experts architectures: how experts are described (nullptr: dense).
  const MoeRule* moe = nullptr;
};

const Architecture* find_architecture(std::string_view model_type);  // nullptr if unknown
std::vector<std::string> supported_model_types();                    // "llama", "mistral", "qwen2"
// The table a GGUF file with `general.architecture` = `gguf_arch` loads as; nullptr if none.
const Architecture* find_gguf_architecture(std::string_view gguf_arch);
std::vector<std::string> supported_gguf_architectures();  // "llama", "qwen2"

// Whether the table has a slot for `role` (bias roles exist only in some architectures).
bool has_slot(const Architecture& arch, TensorRole role);
const TensorSlot* find_slot(const Architecture& arch, TensorRole role);  // nullptr if none

// The Hugging Face / GGUF tensor name of `role` (layer ignored for global tensors). The role must
// have a slot (asserted).
// `expert` is the expert index of an expert role's Hugging Face name (ignored otherwise).
std::string hf_tensor_name(const Architecture& arch, TensorRole role, int64_t layer, int64_t expert = -1);
std::string gguf_tensor_name(const Architecture& arch, TensorRole role, int64_t layer);

// Inverse lookup: which role/layer (and expert, for an expert role's HF name) a name is, if any.
struct RoleAndLayer {
  TensorRole role;
  int64_t layer;        // -1 for global tensors
  int64_t expert = -1;  // the expert of a per-expert Hugging Face name
};
std::optional<RoleAndLayer> parse_hf_tensor_name(const Architecture& arch, std::string_view name);
std::optional<RoleAndLayer> parse_gguf_tensor_name(const Architecture& arch, std::string_view name);

// The per-architecture tables (one file each), listed by the registry in architecture.cpp.
const Architecture& llama_architecture();
const Architecture& mistral_architecture();
const Architecture& qwen2_architecture();
const Architecture& qwen3_architecture();
const Architecture& mixtral_architecture();
const Architecture& qwen2_moe_architecture();
const Architecture& qwen3_moe_architecture();

}  // namespace calq::model
