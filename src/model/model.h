// Model — a loaded decoder-only transformer: config plus weights, by role. Norms and biases are
// float32; linear weights, the embedding and the output head are LinearWeights (linear_weight.h):
// dense float32, or quantized in a registered number format (as read from a quantized GGUF).
//
// Contract: load_hf_model() reads a Hugging Face folder (config.json + safetensors, sharded or
// not), checks every tensor the architecture needs exists with the expected shape and finite
// values, and converts it to float32 (bf16/f16 are widened exactly). Errors name the folder/file
// and the tensor. Tied embeddings share one buffer for embedding and output head.
// load_gguf_model() (gguf_model.h) gives the same Model from a GGUF file; the one loader that
// picks by what a path is, with its tokenizer, is api::load_model (src/api/model_source.h).
#pragma once

#include <array>
#include <iterator>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/architecture.h"
#include "model/block_topology.h"
#include "model/config.h"
#include "model/kron_transform.h"
#include "model/linear_weight.h"
#include "model/lora_adapter.h"

namespace calq::model {

// The per-layer linear roles, in the order a layer applies them (q, k, v, o, gate, up, down).
inline constexpr TensorRole kLayerLinearRoles[] = {
    TensorRole::kAttnQ,   TensorRole::kAttnK,  TensorRole::kAttnV,   TensorRole::kAttnOut,
    TensorRole::kMlpGate, TensorRole::kMlpUp,  TensorRole::kMlpDown,
};

// One expert of a mixture-of-experts layer: a SwiGLU MLP of width config.moe->expert_intermediate.
struct ExpertWeights {
  LinearWeight w_gate;  // [expert_intermediate, hidden]
  LinearWeight w_up;    // [expert_intermediate, hidden]
  LinearWeight w_down;  // [hidden, expert_intermediate]
  const LinearWeight& linear(TensorRole role) const;  // kExpertGate/Up/Down (asserted)
  LinearWeight& linear(TensorRole role);
};

struct LayerWeights {
  Tensor attn_norm;     // [hidden]
  LinearWeight wq;      // [q_dim, hidden]
  LinearWeight wk;      // [kv_dim, hidden]
  LinearWeight wv;      // [kv_dim, hidden]
  LinearWeight wo;      // [hidden, q_dim]
  Tensor mlp_norm;      // [hidden]
  LinearWeight w_gate;  // [intermediate, hidden]
  LinearWeight w_up;    // [intermediate, hidden]
  LinearWeight w_down;  // [hidden, intermediate]
  Tensor bq;            // [q_dim] when config.qkv_bias, else empty
  Tensor bk;            // [kv_dim] when config.qkv_bias, else empty
  Tensor bv;            // [kv_dim] when config.qkv_bias, else empty
  Tensor q_norm;        // [head_dim] when config.qk_norm, else empty
  Tensor k_norm;        // [head_dim] when config.qk_norm, else empty
  // Mixture of experts (config.moe): the router [num_experts, hidden], the experts, and the
  // shared expert's gate [1, hidden] (its MLP is w_gate/w_up/w_down above, of width
  // moe->shared_intermediate). Empty for dense models; w_gate/w_up/w_down are then empty too when
  // the model has no shared expert.
  LinearWeight router;
  std::vector<ExpertWeights> experts;
  LinearWeight shared_expert_gate;
  // Online input transforms (FlatQuant; kron_transform.h, site_transform.h), indexed by InputSite
  // (the head_in slot stays empty: the head is not part of a layer). A site with one has its input
  // x replaced by x·T before its consumers and the LinearHook; its consumers hold W·T^{-T}.
  std::array<std::optional<KronTransform>, kNumInputSites> transforms;
  // Low-rank float additions to the linears (lora_adapter.h), indexed by the role's position in
  // kLayerLinearRoles; the base weights are untouched.
  std::array<std::optional<LoraAdapter>, std::size(kLayerLinearRoles)> adapters;

  // The weight of a per-layer linear role (asserts is_linear(role) and per-layer: the roles of
  // kLayerLinearRoles, kMoeRouter, kSharedExpertGate).
  const LinearWeight& linear(TensorRole role) const;
  LinearWeight& linear(TensorRole role);
  // The float32 vector of a per-layer norm or bias role (asserts it is one).
  const Tensor& vector(TensorRole role) const;
  Tensor& vector(TensorRole role);
  // The transform of `site`, nullptr when it has none.
  const KronTransform* transform(InputSite site) const {
    const auto& t = transforms[static_cast<size_t>(site)];
    return t ? &*t : nullptr;
  }
  bool has_transforms() const;
  // The adapter of a per-layer linear role, nullptr when it has none.
  const LoraAdapter* adapter(TensorRole role) const;
  std::optional<LoraAdapter>& adapter_slot(TensorRole role);
  bool has_adapters() const;
};

// What a tensor looked like in the source file (for `calq inspect`).
struct SourceTensor {
  std::string name;
  std::string dtype;
  Shape shape;
};

struct Model {
  ModelConfig config;
  const Architecture* arch = nullptr;
  std::filesystem::path source;
  LinearWeight embedding;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;    // [hidden]
  LinearWeight output;  // [vocab, hidden]; same storage as `embedding` when tied

  // Whether any layer has an online input transform (LayerWeights::transforms).
  bool has_transforms() const;
  bool has_adapters() const;
  int64_t parameter_count() const;  // unique parameters (tied weights counted once)
  // Bytes of every weight as held (float32, or the encoded bytes of a quantized weight; tied
  // weights once; LoRA adapters included, though not in parameter_count) and 8 × that / parameter_count(): the bits per weight of the model as stored,
  // norms included (as llama.cpp reports a file's BPW).
  uint64_t storage_bytes() const;
  double bits_per_weight() const;
};

// LinearWeight::set_fast_kernels on every linear of the model: the layers' and the head (the
// fast kernels of issue 20; off, the exact path, is what loading gives). With float_only, weights
// the integer kernels would take (a format with an integer codec) are left on the exact path: a
// full-precision reference then runs the fast float kernel (rounding order only) and never
// quantizes its activations.
void set_fast_kernels(Model& model, bool on, bool float_only = false);

// The shape the architecture expects for a role (an expert role: one expert's matrix).
Shape expected_shape(const ModelConfig& config, TensorRole role);

// Whether a model with this config holds a tensor for `role` (biases only when qkv_bias, head
// norms when qk_norm, the MoE roles when moe, the dense MLP slots unless a MoE model has no
// shared expert; the output head always, shared with the embedding when tied).
bool has_role(const ModelConfig& config, TensorRole role);

// The per-layer linear roles (kLayerLinearRoles) a model with this config holds, in forward
// order — the dense MLP slots are absent from a MoE model without a shared expert. The router,
// the shared expert's gate and the experts are not among them (see LayerWeights).
std::vector<TensorRole> layer_linear_roles(const ModelConfig& config);

struct HfLoadOptions {
  // Keep bf16/f16 linear weights, the embedding and the head in their stored dtype, as views of
  // the memory-mapped safetensors (a QuantizedTensor in the registered "bf16"/"f16" format; the
  // Model holds the files open). The forward pass gives the same bits (bf16/f16 widen exactly);
  // resident memory is what the pass touches instead of a float32 copy of the whole model — what
  // the layer-sequential calibration pipeline needs to stay within one layer's float32 weights.
  // Values are still checked finite. float32 sources are copied as before.
  bool keep_source_dtype = false;
};
Model load_hf_model(const std::filesystem::path& folder, ThreadPool& pool, const HfLoadOptions& options = {});


// Reads only config.json and the safetensors headers (no weights) — for `calq inspect`.
// inspect_gguf_model() (gguf_model.h) gives the same summary for a GGUF file.
struct ModelSummary {
  ModelConfig config;
  std::vector<SourceTensor> tensors;
  int64_t parameter_count = 0;
};
ModelSummary inspect_hf_model(const std::filesystem::path& folder);

}  // namespace calq::model
