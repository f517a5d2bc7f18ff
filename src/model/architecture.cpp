#include "model/architecture.h"

#include <fmt/format.h>

#include <array>
#include <cassert>
#include <charconv>

namespace calq::model {
namespace {

constexpr std::array<std::string_view, kNumTensorRoles> kRoleNames = {
    "token_embd", "attn_norm", "attn_q",      "attn_k",      "attn_v",      "attn_output", "ffn_norm", "ffn_gate",
    "ffn_up",     "ffn_down",  "output_norm", "output",      "attn_q_bias", "attn_k_bias", "attn_v_bias",
};

// The registry: every architecture calq runs. Order is the order error messages list them in.
using ArchitectureFn = const Architecture& (*)();
constexpr std::array<ArchitectureFn, 3> kRegistry = {&llama_architecture, &mistral_architecture,
                                                     &qwen2_architecture};

std::string format_name(std::string_view pattern, TensorRole role, int64_t layer) {
  if (!is_per_layer(role)) return std::string(pattern);
  return fmt::format(fmt::runtime(pattern), layer);
}

// Matches `name` against a slot name pattern with an optional "{}" layer placeholder.
std::optional<int64_t> match_pattern(std::string_view pattern, std::string_view name) {
  const auto brace = pattern.find("{}");
  if (brace == std::string_view::npos) {
    if (name == pattern) return -1;
    return std::nullopt;
  }
  const auto prefix = pattern.substr(0, brace);
  const auto suffix = pattern.substr(brace + 2);
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) {
    return std::nullopt;
  }
  const auto digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  int64_t layer = -1;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), layer);
  if (ec == std::errc() && ptr == digits.data() + digits.size() && layer >= 0) return layer;
  return std::nullopt;
}

template <typename NameOf>
std::optional<RoleAndLayer> parse_name(const Architecture& arch, std::string_view name, NameOf name_of) {
  for (const auto& slot : arch.slots) {
    if (const auto layer = match_pattern(name_of(slot), name)) return RoleAndLayer{slot.role, *layer};
  }
  return std::nullopt;
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

bool is_bias(TensorRole role) {
  return role == TensorRole::kAttnQBias || role == TensorRole::kAttnKBias || role == TensorRole::kAttnVBias;
}

bool is_norm(TensorRole role) {
  return role == TensorRole::kAttnNorm || role == TensorRole::kMlpNorm || role == TensorRole::kFinalNorm;
}

TensorRole bias_target(TensorRole role) {
  switch (role) {
    case TensorRole::kAttnQBias: return TensorRole::kAttnQ;
    case TensorRole::kAttnKBias: return TensorRole::kAttnK;
    case TensorRole::kAttnVBias: return TensorRole::kAttnV;
    default: assert(false && "not a bias role"); return role;
  }
}

const Architecture* find_architecture(std::string_view model_type) {
  for (const ArchitectureFn fn : kRegistry) {
    if (fn().model_type == model_type) return &fn();
  }
  return nullptr;
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const ArchitectureFn fn : kRegistry) out.emplace_back(fn().model_type);
  return out;
}

const Architecture* find_gguf_architecture(std::string_view gguf_arch) {
  for (const ArchitectureFn fn : kRegistry) {
    if (fn().gguf_reads_as_this && fn().gguf_arch == gguf_arch) return &fn();
  }
  return nullptr;
}

std::vector<std::string> supported_gguf_architectures() {
  std::vector<std::string> out;
  for (const ArchitectureFn fn : kRegistry) {
    if (fn().gguf_reads_as_this) out.emplace_back(fn().gguf_arch);
  }
  return out;
}

const TensorSlot* find_slot(const Architecture& arch, TensorRole role) {
  for (const auto& s : arch.slots) {
    if (s.role == role) return &s;
  }
  return nullptr;
}

bool has_slot(const Architecture& arch, TensorRole role) { return find_slot(arch, role) != nullptr; }

std::string hf_tensor_name(const Architecture& arch, TensorRole role, int64_t layer) {
  const TensorSlot* slot = find_slot(arch, role);
  assert(slot != nullptr && "architecture table lacks a role");
  return format_name(slot->hf_name, role, layer);
}

std::string gguf_tensor_name(const Architecture& arch, TensorRole role, int64_t layer) {
  const TensorSlot* slot = find_slot(arch, role);
  assert(slot != nullptr && "architecture table lacks a role");
  return format_name(slot->gguf_name, role, layer);
}

std::optional<RoleAndLayer> parse_hf_tensor_name(const Architecture& arch, std::string_view name) {
  return parse_name(arch, name, [](const TensorSlot& s) { return s.hf_name; });
}

std::optional<RoleAndLayer> parse_gguf_tensor_name(const Architecture& arch, std::string_view name) {
  return parse_name(arch, name, [](const TensorSlot& s) { return s.gguf_name; });
}

}  // namespace calq::model
