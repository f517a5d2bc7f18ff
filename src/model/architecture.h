// Architecture tables: the only place in calq that knows tensor names. Everything downstream
// (calibration, quantizers) sees a TensorRole and a layer index, never a name string.
//
// Adding an architecture = one table row (architecture.cpp or a file of its own) plus a test.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace calq::model {

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
};
inline constexpr size_t kNumTensorRoles = 12;

std::string_view role_name(TensorRole role);  // "attn_q", "mlp_down", ...
bool is_linear(TensorRole role);              // has a [out, in] weight applied to an activation
bool is_per_layer(TensorRole role);

struct TensorSlot {
  TensorRole role;
  std::string_view hf_name;  // "{}" stands for the layer index in per-layer names
  bool optional = false;     // e.g. lm_head when embeddings are tied
};

struct Architecture {
  std::string_view model_type;  // config.json "model_type"
  std::span<const TensorSlot> slots;
};

const Architecture* find_architecture(std::string_view model_type);  // nullptr if unknown
std::vector<std::string> supported_model_types();

// The Hugging Face tensor name of `role` (layer ignored for global tensors).
std::string hf_tensor_name(const Architecture& arch, TensorRole role, int64_t layer);

// Inverse lookup: which role/layer a Hugging Face name is, if any.
struct RoleAndLayer {
  TensorRole role;
  int64_t layer;  // -1 for global tensors
};
std::optional<RoleAndLayer> parse_hf_tensor_name(const Architecture& arch, std::string_view name);

}  // namespace calq::model
