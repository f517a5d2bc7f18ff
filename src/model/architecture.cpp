#include "model/architecture.h"

#include <fmt/format.h>

#include <array>
#include <cassert>
#include <charconv>

namespace calq::model {
namespace {

constexpr std::array<std::string_view, kNumTensorRoles> kRoleNames = {
    "token_embd", "attn_norm", "attn_q", "attn_k",   "attn_v",     "attn_output",
    "ffn_norm",   "ffn_gate",  "ffn_up", "ffn_down", "output_norm", "output",
};

// Llama (and the Llama-layout families added later) in Hugging Face naming.
constexpr std::array<TensorSlot, kNumTensorRoles> kLlamaSlots = {{
    {TensorRole::kTokenEmbedding, "model.embed_tokens.weight"},
    {TensorRole::kAttnNorm, "model.layers.{}.input_layernorm.weight"},
    {TensorRole::kAttnQ, "model.layers.{}.self_attn.q_proj.weight"},
    {TensorRole::kAttnK, "model.layers.{}.self_attn.k_proj.weight"},
    {TensorRole::kAttnV, "model.layers.{}.self_attn.v_proj.weight"},
    {TensorRole::kAttnOut, "model.layers.{}.self_attn.o_proj.weight"},
    {TensorRole::kMlpNorm, "model.layers.{}.post_attention_layernorm.weight"},
    {TensorRole::kMlpGate, "model.layers.{}.mlp.gate_proj.weight"},
    {TensorRole::kMlpUp, "model.layers.{}.mlp.up_proj.weight"},
    {TensorRole::kMlpDown, "model.layers.{}.mlp.down_proj.weight"},
    {TensorRole::kFinalNorm, "model.norm.weight"},
    {TensorRole::kOutput, "lm_head.weight", /*optional=*/true},
}};

constexpr std::array<Architecture, 1> kArchitectures = {{
    {"llama", kLlamaSlots},
}};

const TensorSlot& slot_for(const Architecture& arch, TensorRole role) {
  for (const auto& s : arch.slots) {
    if (s.role == role) return s;
  }
  assert(false && "architecture table lacks a role");
  return arch.slots.front();
}

}  // namespace

std::string_view role_name(TensorRole role) { return kRoleNames[static_cast<size_t>(role)]; }

bool is_linear(TensorRole role) {
  switch (role) {
    case TensorRole::kAttnQ:
    case TensorRole::kAttnK:
    case TensorRole::kAttnV:
    case TensorRole::kAttnOut:
    case TensorRole::kMlpGate:
    case TensorRole::kMlpUp:
    case TensorRole::kMlpDown:
    case TensorRole::kOutput:
      return true;
    default:
      return false;
  }
}

bool is_per_layer(TensorRole role) {
  return role != TensorRole::kTokenEmbedding && role != TensorRole::kFinalNorm &&
         role != TensorRole::kOutput;
}

const Architecture* find_architecture(std::string_view model_type) {
  for (const auto& a : kArchitectures) {
    if (a.model_type == model_type) return &a;
  }
  return nullptr;
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const auto& a : kArchitectures) out.emplace_back(a.model_type);
  return out;
}

std::string hf_tensor_name(const Architecture& arch, TensorRole role, int64_t layer) {
  const TensorSlot& slot = slot_for(arch, role);
  if (!is_per_layer(role)) return std::string(slot.hf_name);
  return fmt::format(fmt::runtime(slot.hf_name), layer);
}

std::optional<RoleAndLayer> parse_hf_tensor_name(const Architecture& arch, std::string_view name) {
  for (const auto& slot : arch.slots) {
    const auto brace = slot.hf_name.find("{}");
    if (brace == std::string_view::npos) {
      if (name == slot.hf_name) return RoleAndLayer{slot.role, -1};
      continue;
    }
    const auto prefix = slot.hf_name.substr(0, brace);
    const auto suffix = slot.hf_name.substr(brace + 2);
    if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) {
      continue;
    }
    const auto digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    int64_t layer = -1;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), layer);
    if (ec == std::errc() && ptr == digits.data() + digits.size() && layer >= 0) {
      return RoleAndLayer{slot.role, layer};
    }
  }
  return std::nullopt;
}

}  // namespace calq::model
