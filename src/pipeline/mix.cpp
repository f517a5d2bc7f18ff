// Quantization mixes. The per-tensor rules restate, as facts, what llama.cpp's
// src/llama-quant.cpp decides for the mixes listed here (its IQ1/IQ2/IQ3 mixes are not offered).
#include "pipeline/mix.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include "core/error.h"

namespace calq::pipeline {
namespace {

// ggml type ids (ABI).
constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ2K = 10,
                   kQ3K = 11, kQ4K = 12, kQ5K = 13, kQ6K = 14, kIq4Nl = 20, kIq4Xs = 23, kBF16 = 30;

// llama.cpp's llama_ftype values (ABI: written as general.file_type).
enum Ftype : uint32_t {
  kFtypeF16 = 1,
  kFtypeQ4_0 = 2,
  kFtypeQ4_1 = 3,
  kFtypeQ8_0 = 7,
  kFtypeQ5_0 = 8,
  kFtypeQ5_1 = 9,
  kFtypeQ2K = 10,
  kFtypeQ3KS = 11,
  kFtypeQ3KM = 12,
  kFtypeQ3KL = 13,
  kFtypeQ4KS = 14,
  kFtypeQ4KM = 15,
  kFtypeQ5KS = 16,
  kFtypeQ5KM = 17,
  kFtypeQ6K = 18,
  kFtypeIq4Nl = 25,
  kFtypeIq4Xs = 30,
  kFtypeBF16 = 32,
};

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

std::vector<QuantMix> make_mixes() {
  struct Pure {
    const char* name;
    uint32_t type;
    uint32_t ftype;
  };
  // The file type of a pure k-quant is that of the llama.cpp mix it is the bulk of.
  const Pure pures[] = {
      {"q4_0", kQ4_0, kFtypeQ4_0}, {"q4_1", kQ4_1, kFtypeQ4_1},     {"q5_0", kQ5_0, kFtypeQ5_0},
      {"q5_1", kQ5_1, kFtypeQ5_1}, {"q8_0", kQ8_0, kFtypeQ8_0},     {"q2_k", kQ2K, kFtypeQ2K},
      {"q3_k", kQ3K, kFtypeQ3KM},  {"q4_k", kQ4K, kFtypeQ4KM},      {"q5_k", kQ5K, kFtypeQ5KM},
      {"q6_k", kQ6K, kFtypeQ6K},   {"iq4_nl", kIq4Nl, kFtypeIq4Nl}, {"iq4_xs", kIq4Xs, kFtypeIq4Xs},
      {"f16", kF16, kFtypeF16},    {"bf16", kBF16, kFtypeBF16},
  };
  struct Named {
    const char* name;
    uint32_t type;
    uint32_t ftype;
    const char* what;
  };
  const Named named[] = {
      {"q2_k", kQ2K, kFtypeQ2K, "llama.cpp Q2_K mix (attn_v Q3_K/Q4_K, ffn_down and attn_output Q3_K)"},
      {"q3_k_s", kQ3K, kFtypeQ3KS, "llama.cpp Q3_K_S mix (Q3_K throughout)"},
      {"q3_k_m", kQ3K, kFtypeQ3KM, "llama.cpp Q3_K_M mix (attn_v Q5_K/Q4_K, ffn_down and attn_output Q4_K)"},
      {"q3_k_l", kQ3K, kFtypeQ3KL, "llama.cpp Q3_K_L mix (attn_v, ffn_down and attn_output Q5_K)"},
      {"q4_k_s", kQ4K, kFtypeQ4KS, "llama.cpp Q4_K_S mix (first attn_v and ffn_down Q5_K)"},
      {"q4_k_m", kQ4K, kFtypeQ4KM, "llama.cpp Q4_K_M mix (attn_v and ffn_down Q6_K on half the layers)"},
      {"q5_k_s", kQ5K, kFtypeQ5KS, "llama.cpp Q5_K_S mix (Q5_K throughout)"},
      {"q5_k_m", kQ5K, kFtypeQ5KM, "llama.cpp Q5_K_M mix (attn_v and ffn_down Q6_K on half the layers)"},
      {"q6_k", kQ6K, kFtypeQ6K, "llama.cpp Q6_K mix"},
      {"q8_0", kQ8_0, kFtypeQ8_0, "llama.cpp Q8_0 mix"},
  };
  std::vector<QuantMix> mixes;
  for (const Named& n : named) {
    mixes.push_back({.name = n.name, .kind = MixKind::kLlama, .default_type = n.type, .file_type = n.ftype,
                     .description = n.what});
  }
  auto is_named = [&](std::string_view name) {
    return std::any_of(std::begin(named), std::end(named), [&](const Named& n) { return name == n.name; });
  };
  for (const Pure& p : pures) {
    const std::string what = std::string("every quantizable tensor ") + p.name;
    if (!is_named(p.name)) {
      mixes.push_back({.name = p.name, .kind = MixKind::kPure, .default_type = p.type, .file_type = p.ftype,
                       .description = what});
    }
    mixes.push_back({.name = std::string("pure-") + p.name, .kind = MixKind::kPure, .default_type = p.type,
                     .file_type = p.ftype, .description = what});
  }
  return mixes;
}

// llama.cpp's broad tensor roles (by name, in its order of tests).
enum class Role { kTokenEmbd, kOutput, kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnUp, kFfnGate, kFfnDown, kOther };

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

Role role_of(std::string_view name) {
  if (name == "output.weight") return Role::kOutput;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Role::kTokenEmbd;
  // Fused QKV and MLA's kv_b are treated like attn_v (the most sensitive projection).
  if (contains(name, "attn_qkv.weight") || contains(name, "attn_kv_b.weight") || contains(name, "attn_v.weight")) {
    return Role::kAttnV;
  }
  if (contains(name, "attn_k.weight")) return Role::kAttnK;
  if (contains(name, "attn_q.weight")) return Role::kAttnQ;
  if (contains(name, "attn_output.weight")) return Role::kAttnOutput;
  if (contains(name, "ffn_up")) return Role::kFfnUp;
  if (contains(name, "ffn_gate")) return Role::kFfnGate;
  if (contains(name, "ffn_down")) return Role::kFfnDown;
  return Role::kOther;
}

// "blk.N." -> N; nullopt for tensors outside the blocks.
std::optional<int64_t> block_index(std::string_view name) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const char* first = name.data() + kPrefix.size();
  const char* last = name.data() + name.size();
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(first, last, n);
  if (ec != std::errc() || end == last || *end != '.') return std::nullopt;
  return n;
}

int ggml_dims(const std::vector<int64_t>& ne) {
  int dims = 1;
  for (size_t i = 1; i < ne.size(); ++i) {
    if (ne[i] > 1) dims = static_cast<int>(i) + 1;
  }
  return dims;
}

int64_t block_size_of(uint32_t type) {
  const io::GgmlTypeInfo* info = io::ggml_type_info(type);
  return info != nullptr ? info->block_size : 1;
}

// The counters llama.cpp keeps while it walks the tensors.
struct RuleState {
  const ModelShape& shape;
  bool tied = true;        // no output.weight: token_embd doubles as the output matrix
  int64_t n_attn_v = 0;    // tensors of role kAttnV
  int64_t i_attn_v = 0;
  int64_t i_ffn_down = 0;

  int64_t n_gqa() const { return shape.n_head_kv > 0 ? shape.n_head / shape.n_head_kv : 1; }
  bool is_falcon() const { return shape.arch == "falcon"; }
  // llama.cpp's LLM_TYPE_70B: an 80-layer llama with grouped-query attention.
  bool is_llama_70b() const { return shape.arch == "llama" && shape.n_layer == 80 && shape.n_head != shape.n_head_kv; }
};

// Layers that get more bits: the first and last eighth, and every third one between.
bool use_more_bits(int64_t i_layer, int64_t n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// The layer index llama.cpp uses for ffn_down: its running count, or for MoE models the block
// number in the name (experts are not stored in layer order).
int64_t ffn_layer(const RuleState& st, int64_t counter, std::string_view name) {
  if (std::max<int64_t>(1, st.shape.n_expert) <= 1) return counter;
  const std::optional<int64_t> blk = block_index(name);
  if (!blk || *blk < 0 || *blk >= st.shape.n_layer) {
    fail(ErrorKind::kFormat, "tensor {}: cannot tell its layer (expected blk.N. with N < {})", name, st.shape.n_layer);
  }
  return *blk;
}

uint32_t llama_rule_type(RuleState& st, const QuantMix& mix, const MixTensor& t, Role role) {
  const uint32_t ft = mix.file_type;
  uint32_t type = mix.default_type;
  if (role == Role::kOutput || (st.tied && role == Role::kTokenEmbd)) {
    if (st.is_falcon() || t.ne[0] % block_size_of(type) != 0) return kQ8_0;
    return type == kQ8_0 ? kQ8_0 : kQ6K;
  }
  if (role == Role::kTokenEmbd) return type;  // untied input embeddings: the default type
  const int64_t n_layer = st.shape.n_layer;
  switch (role) {
    case Role::kAttnV: {
      if (ft == kFtypeQ2K) {
        type = st.n_gqa() >= 4 ? kQ4K : kQ3K;
      } else if (ft == kFtypeQ3KM) {
        type = st.i_attn_v < 2 ? kQ5K : kQ4K;
      } else if (ft == kFtypeQ3KL) {
        type = kQ5K;
      } else if ((ft == kFtypeQ4KM || ft == kFtypeQ5KM) && use_more_bits(st.i_attn_v, st.n_attn_v)) {
        type = kQ6K;
      } else if (ft == kFtypeQ4KS && st.i_attn_v < 4) {
        type = kQ5K;
      }
      if (st.is_llama_70b() && (type == kQ3K || type == kQ4K)) type = kQ5K;  // 8 heads share each V row
      if (st.shape.n_expert == 8) type = kQ8_0;
      ++st.i_attn_v;
      return type;
    }
    case Role::kAttnK:
      return st.shape.n_expert == 8 ? kQ8_0 : type;
    case Role::kFfnDown: {
      const int64_t i = ffn_layer(st, st.i_ffn_down, t.name);
      if (ft == kFtypeQ2K) {
        type = kQ3K;
      } else if (ft == kFtypeQ3KM) {
        type = i < n_layer / 16 ? kQ5K : (!st.is_falcon() || use_more_bits(i, n_layer)) ? kQ4K : kQ3K;
      } else if (ft == kFtypeQ3KL) {
        type = st.is_falcon() ? kQ4K : kQ5K;
      } else if (ft == kFtypeQ4KM) {
        if (st.is_falcon()) {
          type = i < n_layer / 16 ? kQ6K : use_more_bits(i, n_layer) ? kQ5K : kQ4K;
        } else if (use_more_bits(i, n_layer)) {
          type = kQ6K;
        }
      } else if (ft == kFtypeQ5KM && use_more_bits(i, n_layer)) {
        type = kQ6K;
      } else if (ft == kFtypeQ4KS && !st.is_falcon() && i < n_layer / 8) {
        type = kQ5K;
      }
      ++st.i_ffn_down;
      return type;
    }
    case Role::kAttnOutput:
      if (st.is_falcon()) return ft == kFtypeQ3KL ? kQ4K : type;
      if (st.shape.n_expert == 8) {
        const bool bump = ft == kFtypeQ2K || ft == kFtypeQ3KS || ft == kFtypeQ3KM || ft == kFtypeQ4KS || ft == kFtypeQ4KM;
        return bump ? kQ5K : type;
      }
      if (ft == kFtypeQ2K) return kQ3K;
      if (ft == kFtypeQ3KM) return kQ4K;
      if (ft == kFtypeQ3KL) return kQ5K;
      return type;
    default:
      return type;
  }
}

// llama.cpp's fallback when the row length is not a multiple of the block size.
TypeChoice with_fallback(uint32_t type, int64_t ncols) {
  if (ncols % block_size_of(type) == 0) return {.type = type};
  uint32_t alt = kF16;
  switch (type) {
    case kIq4Xs: alt = kIq4Nl; break;
    case kQ2K:
    case kQ3K: alt = kQ4_0; break;
    case kQ4K: alt = kQ5_0; break;
    case kQ5K: alt = kQ5_1; break;
    case kQ6K: alt = kQ8_0; break;
    default: alt = kF16; break;  // llama.cpp refuses here; F16 always fits
  }
  if (ncols % block_size_of(alt) != 0) alt = kF16;
  return {.type = alt, .fell_back = true};
}

}  // namespace

ModelShape model_shape_from_gguf(const io::GgufFile& file) {
  const std::string what = file.path().string();
  ModelShape s;
  s.arch = file.get("general.architecture").as_string(what + ": general.architecture");
  auto int_key = [&](const std::string& key, std::optional<int64_t> fallback) -> int64_t {
    const io::GgufValue* v = file.find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      fail(ErrorKind::kNotFound, "{}: {}: missing", what, key);
    }
    const int64_t n = v->as_int(what + ": " + key);
    if (n < 0) fail(ErrorKind::kFormat, "{}: {}: {} is negative", what, key, n);
    return n;
  };
  s.n_layer = int_key(s.arch + ".block_count", std::nullopt);
  s.n_head = int_key(s.arch + ".attention.head_count", 0);
  s.n_head_kv = int_key(s.arch + ".attention.head_count_kv", s.n_head);
  s.n_expert = int_key(s.arch + ".expert_count", 0);
  return s;
}

const std::vector<QuantMix>& all_mixes() {
  static const std::vector<QuantMix> mixes = make_mixes();
  return mixes;
}

const QuantMix* find_mix(std::string_view name) {
  const std::string key = lower(name);
  for (const QuantMix& m : all_mixes()) {
    if (m.name == key) return &m;
  }
  return nullptr;
}

const QuantMix& mix_by_name(std::string_view name) {
  if (const QuantMix* m = find_mix(name)) return *m;
  std::string known;
  for (const QuantMix& m : all_mixes()) {
    if (m.name.rfind("pure-", 0) == 0) continue;
    known += known.empty() ? "" : ", ";
    known += m.name;
  }
  fail(ErrorKind::kInvalidArgument, "unknown quantization type '{}'; known: {} (and pure-<type> for any single type)",
       name, known);
}

std::vector<size_t> llama_tensor_order(std::span<const MixTensor> tensors) {
  std::vector<size_t> order(tensors.size());
  std::vector<int64_t> layer(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    order[i] = i;
    layer[i] = block_index(tensors[i].name).value_or(-1);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (layer[a] != layer[b]) return layer[a] < layer[b];
    return tensors[a].name < tensors[b].name;
  });
  return order;
}

bool tensor_is_quantizable(const MixTensor& t) {
  if (ggml_dims(t.ne) < 2) return false;
  const std::string_view name = t.name;
  if (name.size() < 6 || name.substr(name.size() - 6) != "weight") return false;
  if (name == "position_embd.weight" || name == "token_types.weight") return false;
  static constexpr std::string_view kExcluded[] = {
      "_norm.weight",          "ffn_gate_inp.weight",   "ffn_gate_tid2eid.weight", "altup",
      "laurel",                "per_layer_model_proj",  "ssm_conv1d",              "shortconv.conv.weight",
      "indexer.k_proj.weight", "indexer.q_proj.weight", "time_mix_first.weight",   "time_mix_w0.weight",
      "time_mix_w1.weight",    "time_mix_w2.weight",    "time_mix_v0.weight",      "time_mix_v1.weight",
      "time_mix_v2.weight",    "time_mix_a0.weight",    "time_mix_a1.weight",      "time_mix_a2.weight",
      "time_mix_g1.weight",    "time_mix_g2.weight",    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd",         "sam.pos_embd",
      "sam.neck.",             "sam.net_",              ".rel_pos",                ".patch_embd",
      ".patch_merger",         "a.rvq.codebook",        "mm.a.code_embd",
  };
  for (std::string_view part : kExcluded) {
    if (contains(name, part)) return false;
  }
  return true;
}

std::vector<TypeChoice> assign_types(const QuantMix& mix, const ModelShape& shape, std::span<const MixTensor> tensors) {
  RuleState st{.shape = shape};
  for (const MixTensor& t : tensors) {
    const Role r = role_of(t.name);
    if (r == Role::kAttnV) ++st.n_attn_v;
    if (r == Role::kOutput) st.tied = false;
  }
  const bool quantized_default = mix.default_type != kF32 && mix.default_type != kF16 && mix.default_type != kBF16;
  std::vector<TypeChoice> out(tensors.size());
  for (const size_t i : llama_tensor_order(tensors)) {
    const MixTensor& t = tensors[i];
    if (!tensor_is_quantizable(t)) {
      out[i] = {.type = t.type};
      continue;
    }
    TypeChoice c{.type = mix.default_type};
    if (quantized_default) {
      const uint32_t wanted = mix.kind == MixKind::kLlama ? llama_rule_type(st, mix, t, role_of(t.name)) : mix.default_type;
      c = with_fallback(wanted, t.ne[0]);
    }
    c.quantize = c.type != t.type;
    out[i] = c;
  }
  return out;
}

}  // namespace calq::pipeline
