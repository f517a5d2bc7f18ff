#include "model/architecture.h"

#include <fmt/format.h>

#include <array>
#include <cassert>
#include <charconv>
#include <utility>

namespace calq::model {
namespace {

constexpr std::array<std::string_view, kNumTensorRoles> kRoleNames = {
    "token_embd", "attn_norm", "attn_q",      "attn_k",      "attn_v",      "attn_output", "ffn_norm", "ffn_gate",
    "ffn_up",     "ffn_down",  "output_norm", "output",      "attn_q_bias", "attn_k_bias", "attn_v_bias",
    "attn_q_norm", "attn_k_norm", "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps",
    "ffn_gate_inp_shexp",
};

// The registry: every architecture calq runs. Order is the order error messages list them in.
using ArchitectureFn = const Architecture& (*)();
constexpr std::array<ArchitectureFn, 7> kRegistry = {
    &llama_architecture,   &mistral_architecture,   &qwen2_architecture,     &qwen3_architecture,
    &mixtral_architecture, &qwen2_moe_architecture, &qwen3_moe_architecture,
};

std::string format_name(std::string_view pattern, TensorRole role, int64_t layer, int64_t expert = -1) {
  if (!is_per_layer(role)) return std::string(pattern);
  if (pattern.find("{}") != pattern.rfind("{}")) return fmt::format(fmt::runtime(pattern), layer, expert);
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

// A pattern with two "{}" (layer, expert): the first number, then the rest matched as a
// one-placeholder pattern.
std::optional<std::pair<int64_t, int64_t>> match_two(std::string_view pattern, std::string_view name) {
  const auto first = pattern.find("{}");
  const auto prefix = pattern.substr(0, first);
  if (!name.starts_with(prefix)) return std::nullopt;
  const auto rest_pattern = pattern.substr(first + 2);
  const auto rest = name.substr(prefix.size());
  size_t digits = 0;
  while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  int64_t layer = -1;
  const auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + digits, layer);
  if (ec != std::errc() || ptr != rest.data() + digits) return std::nullopt;
  // The remainder starts with the literal between the placeholders.
  const auto tail = rest.substr(digits);
  const auto between = rest_pattern.substr(0, rest_pattern.find("{}"));
  if (!tail.starts_with(between)) return std::nullopt;
  const auto expert = match_pattern(rest_pattern.substr(between.size()), tail.substr(between.size()));
  if (!expert || *expert < 0) return std::nullopt;
  return std::pair{layer, *expert};
}

template <typename NameOf>
std::optional<RoleAndLayer> parse_name(const Architecture& arch, std::string_view name, NameOf name_of) {
  for (const auto& slot : arch.slots) {
    const std::string_view pattern = name_of(slot);
    if (pattern.find("{}") != pattern.rfind("{}")) {
      if (const auto le = match_two(pattern, name)) return RoleAndLayer{slot.role, le->first, le->second};
      continue;
    }
    if (const auto layer = match_pattern(pattern, name)) return RoleAndLayer{slot.role, *layer};
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
    case TensorRole::kMoeRouter:
    case TensorRole::kSharedExpertGate:
      return true;
    default:
      return false;
  }
}

bool is_expert(TensorRole role) {
  return role == TensorRole::kExpertGate || role == TensorRole::kExpertUp || role == TensorRole::kExpertDown;
}

bool is_head_norm(TensorRole role) { return role == TensorRole::kAttnQNorm || role == TensorRole::kAttnKNorm; }

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

std::string hf_tensor_name(const Architecture& arch, TensorRole role, int64_t layer, int64_t expert) {
  const TensorSlot* slot = find_slot(arch, role);
  assert(slot != nullptr && "architecture table lacks a role");
  assert((!is_expert(role) || expert >= 0) && "an expert role's HF name needs the expert index");
  return format_name(slot->hf_name, role, layer, expert);
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
