// Model -> Hugging Face folder (see hf_export.h for the contract).
#include "model/hf_export.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/format.h"
#include "io/safetensors.h"

namespace calq::model {
namespace {

using nlohmann::json;

// The float32 values of one tensor of the model, as a row-major [rows, cols] matrix view or copy.
struct Values {
  Shape shape;
  std::vector<float> owned;  // filled when the source is not a dense float32 tensor
  const float* data = nullptr;
};

Values values_of(const LinearWeight& w) {
  Values v{.shape = w.shape()};
  if (!w.is_quantized()) {
    v.data = w.dense().f32();
    return v;
  }
  v.owned.resize(static_cast<size_t>(w.numel()));
  w.rows_f32(0, w.rows(), v.owned.data());
  v.data = v.owned.data();
  return v;
}

Values values_of(const Tensor& t) { return Values{.shape = t.shape(), .owned = {}, .data = t.f32()}; }

// The tensor of `role` (layer ignored for global roles, expert for all but expert roles). Linear
// roles are LinearWeights, expert roles one expert's (LayerWeights::experts), the others float32
// vectors (LayerWeights::linear / vector).
Values role_values(const Model& m, TensorRole role, int64_t layer, int64_t expert) {
  switch (role) {
    case TensorRole::kTokenEmbedding: return values_of(m.embedding);
    case TensorRole::kOutput: return values_of(m.output);
    case TensorRole::kFinalNorm: return values_of(m.final_norm);
    default: break;
  }
  const LayerWeights& l = m.layers[static_cast<size_t>(layer)];
  if (is_expert(role)) return values_of(l.experts[static_cast<size_t>(expert)].linear(role));
  return is_linear(role) ? values_of(l.linear(role)) : values_of(l.vector(role));
}

// The linears a quantized checkpoint packs: every per-layer linear and expert but the router and the
// shared expert's gate, which runtimes load as plain linears.
bool is_packed_role(TensorRole role) {
  return is_linear(role) && is_per_layer(role) && role != TensorRole::kMoeRouter &&
         role != TensorRole::kSharedExpertGate;
}

const LinearWeight& linear_of(const Model& m, TensorRole role, int64_t layer, int64_t expert) {
  const LayerWeights& l = m.layers[static_cast<size_t>(layer)];
  return is_expert(role) ? l.experts[static_cast<size_t>(expert)].linear(role) : l.linear(role);
}

// The one format every packed linear of the model is in (hf_export.h); errors name the tensor.
const Format* common_quant_format(const Model& m, HfQuantScheme scheme) {
  const Format* common = nullptr;
  std::string first;
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    for (const TensorSlot& slot : m.arch->slots) {
      if (!is_packed_role(slot.role) || !has_role(m.config, slot.role)) continue;
      const int64_t experts = is_expert(slot.role) ? m.config.moe->num_experts : 1;
      for (int64_t e = 0; e < experts; ++e) {
        const int64_t expert = is_expert(slot.role) ? e : -1;
        const LinearWeight& w = linear_of(m, slot.role, l, expert);
        const std::string name = hf_tensor_name(*m.arch, slot.role, l, expert);
        if (!w.is_quantized()) {
          fail(ErrorKind::kInvalidArgument,
               "tensor '{}' is not quantized; a {} checkpoint holds every linear in one quantized format", name,
               hf_quant_scheme_name(scheme));
        }
        if (common == nullptr) {
          common = w.quantized().format;
          first = name;
          if (const std::string why = hf_quant_scheme_fits(scheme, *common); !why.empty()) {
            fail(ErrorKind::kInvalidArgument, "tensor '{}': {}", name, why);
          }
        } else if (w.quantized().format != common) {
          fail(ErrorKind::kInvalidArgument,
               "tensor '{}' is {} but '{}' is {}; a {} checkpoint holds every linear in one format", name,
               w.quantized().format->name(), first, common->name(), hf_quant_scheme_name(scheme));
        }
      }
    }
  }
  if (common == nullptr) fail(ErrorKind::kInvalidArgument, "the model has no linear to quantize");
  return common;
}

// Why a Hugging Face folder cannot hold this model ("" when it can).
std::string calq_only_reason(const Model& m) {
  if (m.config.rotation && (m.config.rotation->residual_online || m.config.rotation->down_seed)) {
    return "an online Hadamard rotation";
  }
  if (m.has_transforms()) return "online input transforms";
  if (m.has_adapters()) return "LoRA adapters (merge them first)";
  const auto act = [](const LinearWeight& w) { return w.act_quant().enabled(); };
  bool any = act(m.embedding) || act(m.output);
  for (const LayerWeights& l : m.layers) {
    for (const TensorSlot& slot : m.arch->slots) {
      if (!is_per_layer(slot.role) || !has_role(m.config, slot.role)) continue;
      if (is_expert(slot.role)) {
        for (const ExpertWeights& e : l.experts) any = any || act(e.linear(slot.role));
      } else if (is_linear(slot.role)) {
        any = any || act(l.linear(slot.role));
      }
    }
  }
  return any ? "activation quantization" : "";
}

std::filesystem::path sibling(const std::filesystem::path& dir, const char* tag) {
  static std::atomic<int> counter{0};
  return dir.parent_path() / fmt::format(".{}.{}-{}-{}", dir.filename().string(), tag, getpid(), counter++);
}

bool is_model_folder(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::is_empty(dir, ec) || std::filesystem::exists(dir / "config.json", ec)) return true;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") return true;
  }
  return false;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  write_file_atomic(path, std::as_bytes(std::span(text.data(), text.size())));
}

// The keys of the architecture's window rule (config.h).
void window_keys(const ModelConfig& c, const Architecture& arch, json& j) {
  const bool any = c.sliding_window > 0 && std::find(c.layer_window.begin(), c.layer_window.end(), true) !=
                                                c.layer_window.end();
  const auto n = static_cast<size_t>(c.num_layers);
  switch (arch.window_rule) {
    case WindowRule::kNone:
      if (any) fail(ErrorKind::kUnsupported, "model_type '{}' has no sliding attention window", c.model_type);
      return;
    case WindowRule::kAllLayers:
      if (any && (c.layer_window.size() != n ||
                  std::find(c.layer_window.begin(), c.layer_window.end(), false) != c.layer_window.end())) {
        fail(ErrorKind::kUnsupported, "model_type '{}': a sliding window on some layers only has no config.json key",
             c.model_type);
      }
      j["sliding_window"] = any ? json(c.sliding_window) : json(nullptr);
      return;
    case WindowRule::kQwen2Layers: {
      j["use_sliding_window"] = any;
      j["sliding_window"] = any ? json(c.sliding_window) : json(nullptr);
      if (!any) {
        j["max_window_layers"] = c.num_layers;
        return;
      }
      // max_window_layers = f says "layers >= f"; another pattern needs layer_types.
      std::vector<bool> windowed(n, false);
      std::copy_n(c.layer_window.begin(), std::min(n, c.layer_window.size()), windowed.begin());
      const auto first = static_cast<size_t>(std::find(windowed.begin(), windowed.end(), true) - windowed.begin());
      const bool suffix = std::find(windowed.begin() + static_cast<std::ptrdiff_t>(first), windowed.end(), false) ==
                          windowed.end();
      j["max_window_layers"] = suffix ? static_cast<int64_t>(first) : c.num_layers;
      if (!suffix) {
        json types = json::array();
        for (const bool w : windowed) types.push_back(w ? "sliding_attention" : "full_attention");
        j["layer_types"] = std::move(types);
      }
      return;
    }
  }
}

}  // namespace

std::string hf_class_name(std::string_view model_type) {
  std::string out;
  bool start = true;
  for (const char ch : model_type) {
    if (ch == '_') {
      start = true;
      continue;
    }
    out += start ? static_cast<char>(std::toupper(static_cast<unsigned char>(ch))) : ch;
    start = false;
  }
  return out + "ForCausalLM";
}

std::string hf_config_json(const ModelConfig& c, DType dtype) {
  const Architecture* arch = find_architecture(c.model_type);
  if (arch == nullptr) fail(ErrorKind::kUnsupported, "model_type '{}' has no architecture table", c.model_type);
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    fail(ErrorKind::kInvalidArgument, "config.json: dtype {} is not float32 or bfloat16", dtype_name(dtype));
  }
  json j;  // std::map keys: sorted, as transformers writes them
  j["architectures"] = json::array({hf_class_name(c.model_type)});
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = dtype == DType::kBF16 ? "bfloat16" : "float32";
  j["use_cache"] = true;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  for (const std::string_view key : arch->refused_true_keys) j[std::string(key)] = false;
  window_keys(c, *arch, j);
  if (c.rope_scaling) {
    const ModelConfig::RopeScaling& r = *c.rope_scaling;
    json scaling = {{"rope_type", r.type}, {"factor", r.factor}};
    if (r.type == "llama3") {
      scaling["low_freq_factor"] = r.low_freq_factor;
      scaling["high_freq_factor"] = r.high_freq_factor;
      scaling["original_max_position_embeddings"] = r.original_max_position;
    }
    j["rope_scaling"] = std::move(scaling);
  } else if (!c.rope_freq_factors.empty()) {
    // Divisors read from a GGUF rope_freqs tensor: config.json has no key for them.
    fail(ErrorKind::kUnsupported, "model_type '{}': per-frequency rotary factors without their rope_scaling",
         c.model_type);
  }
  if (arch->moe != nullptr && !c.moe) {
    fail(ErrorKind::kUnsupported, "model_type '{}' needs experts (config.moe)", c.model_type);
  }
  if (c.moe) {
    const MoeRule* rule = arch->moe;
    if (rule == nullptr) fail(ErrorKind::kUnsupported, "model_type '{}' has no experts", c.model_type);
    j[std::string(rule->num_experts_key)] = c.moe->num_experts;
    j["num_experts_per_tok"] = c.moe->experts_per_token;
    j[std::string(rule->expert_width_key)] = c.moe->expert_intermediate;
    if (rule->shared_expert) j["shared_expert_intermediate_size"] = c.moe->shared_intermediate;
    if (rule->has_norm_topk_key) {
      j["norm_topk_prob"] = c.moe->norm_topk_prob;
    } else if (c.moe->norm_topk_prob != rule->norm_topk_default) {
      fail(ErrorKind::kUnsupported, "model_type '{}': norm_topk_prob = {} has no config.json key", c.model_type,
           c.moe->norm_topk_prob);
    }
  }
  return j.dump(2) + "\n";
}

void write_hf_model(const Model& m, const std::filesystem::path& folder_in, const HfExportOptions& options,
                    ThreadPool& pool) {
  assert(m.arch != nullptr);
  const std::filesystem::path dir = folder_in.has_filename() ? folder_in : folder_in.parent_path();
  const ModelConfig& c = m.config;
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16) {
    fail(ErrorKind::kInvalidArgument, "{}: dtype {} is not supported (float32 or bfloat16)", dir.string(),
         dtype_name(options.dtype));
  }
  if (const std::string why = calq_only_reason(m); !why.empty()) {
    fail(ErrorKind::kUnsupported, "{}: the model has {}, which a Hugging Face folder cannot hold", dir.string(), why);
  }
  for (const auto& [name, text] : options.extra_files) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
        name == "config.json" || name.ends_with(".safetensors") || name == "model.safetensors.index.json" ||
        (options.quant != HfQuantScheme::kNone && name == "quantize_config.json")) {
      fail(ErrorKind::kInvalidArgument, "{}: extra file name '{}' is not allowed", dir.string(), name);
    }
  }
  std::string config_text = hf_config_json(c, options.dtype);
  const Format* quant_format = options.quant == HfQuantScheme::kNone ? nullptr : common_quant_format(m, options.quant);
  std::string quantize_config;
  if (quant_format != nullptr) {
    const HfQuantConfigText q = hf_quant_config_json(options.quant, *quant_format);
    json j = json::parse(config_text);
    j["quantization_config"] = json::parse(q.quantization_config);
    config_text = j.dump(2) + "\n";
    quantize_config = q.quantize_config;
  }

  // Every tensor the table and the config call for: global ones, then layer by layer.
  struct Item {
    std::string name;
    Shape shape;
    std::vector<std::byte> bytes;  // the encoded copy (BF16, or F32 of a non-dense source)
    std::span<const std::byte> data;
    DType dtype = DType::kF32;
  };
  std::vector<Item> items;
  const Format& bf16 = format_by_name("bf16");
  const auto add = [&](TensorRole role, int64_t layer, int64_t expert) {
    if (quant_format != nullptr && is_packed_role(role)) {
      const LinearWeight& w = linear_of(m, role, layer, expert);
      const std::string name = hf_tensor_name(*m.arch, role, layer, expert);
      assert(name.ends_with(".weight"));
      for (HfQuantTensor& t : hf_quant_tensors(options.quant, w.quantized(), name.substr(0, name.size() - 7))) {
        Item& it = items.emplace_back();
        it.name = std::move(t.name);
        it.shape = std::move(t.shape);
        it.bytes = std::move(t.bytes);
        it.data = it.bytes;
        it.dtype = t.dtype;
      }
      return;
    }
    Item& it = items.emplace_back();
    it.dtype = options.dtype;
    it.name = hf_tensor_name(*m.arch, role, layer, expert);
    const Values v = role_values(m, role, layer, expert);
    it.shape = expected_shape(c, role);
    if (v.shape != it.shape) {
      fail(ErrorKind::kInvalidArgument, "{}: tensor '{}' has shape {} but the config implies {}", dir.string(),
           it.name, shape_string(v.shape), shape_string(it.shape));
    }
    const int64_t n = shape_numel(it.shape);
    if (options.dtype == DType::kBF16) {
      const int64_t cols = it.shape.back();
      it.bytes.resize(bf16.tensor_bytes(n / cols, cols));
      bf16.quantize(pool, v.data, n / cols, cols, it.bytes);
      it.data = it.bytes;
    } else if (!v.owned.empty()) {
      it.bytes.resize(static_cast<size_t>(n) * sizeof(float));
      std::memcpy(it.bytes.data(), v.owned.data(), it.bytes.size());
      it.data = it.bytes;
    } else {
      it.data = std::as_bytes(std::span(v.data, static_cast<size_t>(n)));
    }
  };
  for (const TensorSlot& slot : m.arch->slots) {
    if (is_per_layer(slot.role) || !has_role(c, slot.role)) continue;
    if (slot.role == TensorRole::kOutput && c.tie_word_embeddings) continue;
    add(slot.role, -1, -1);
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const TensorSlot& slot : m.arch->slots) {
      if (!is_per_layer(slot.role) || !has_role(c, slot.role)) continue;
      if (is_expert(slot.role)) {
        const auto n = static_cast<int64_t>(m.layers[static_cast<size_t>(l)].experts.size());
        if (n != c.moe->num_experts) {
          fail(ErrorKind::kInvalidArgument, "{}: layer {} has {} experts but the config {}", dir.string(), l, n,
               c.moe->num_experts);
        }
        for (int64_t e = 0; e < n; ++e) add(slot.role, l, e);
      } else {
        add(slot.role, l, -1);
      }
    }
  }
  std::vector<io::TensorToWrite> tensors;
  uint64_t total = 0;
  for (const Item& it : items) {
    tensors.push_back({.name = it.name, .dtype = it.dtype, .shape = it.shape, .data = it.data});
    total += it.data.size();
  }
  const uint64_t shard = std::max<uint64_t>(options.max_shard_bytes, 1);
  const size_t shards = std::clamp<size_t>(static_cast<size_t>((total + shard - 1) / shard), 1, tensors.size());

  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    if (!std::filesystem::is_directory(dir, ec)) {
      fail(ErrorKind::kInvalidArgument, "{}: exists and is not a folder", dir.string());
    }
    if (!options.overwrite) {
      fail(ErrorKind::kInvalidArgument, "{}: output folder exists; overwriting it needs the force option", dir.string());
    }
    if (!is_model_folder(dir)) {
      fail(ErrorKind::kInvalidArgument, "{}: exists and is not a model folder (no config.json); not replacing it",
           dir.string());
    }
  }
  const std::filesystem::path parent = dir.has_parent_path() ? dir.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(parent, ec)) {
    fail(ErrorKind::kIo, "{}: the folder {} does not exist", dir.string(), parent.string());
  }
  const std::filesystem::path tmp = sibling(dir, "tmp");
  std::filesystem::path old;
  const auto restore = [&] {
    std::filesystem::remove_all(tmp, ec);
    if (!old.empty() && !std::filesystem::exists(dir, ec)) std::filesystem::rename(old, dir, ec);
  };
  try {
    std::filesystem::create_directory(tmp);
    write_text(tmp / "config.json", config_text);
    io::write_sharded_safetensors(tmp, tensors, shards, {{"format", "pt"}});
    if (!quantize_config.empty()) write_text(tmp / "quantize_config.json", quantize_config);
    for (const auto& [name, text] : options.extra_files) write_text(tmp / name, text);
    if (std::filesystem::exists(dir)) {
      old = sibling(dir, "old");
      std::filesystem::rename(dir, old);
    }
    std::filesystem::rename(tmp, dir);
  } catch (const std::filesystem::filesystem_error& e) {
    restore();
    fail(ErrorKind::kIo, "{}: cannot write the model folder: {}", dir.string(), e.what());
  } catch (...) {
    restore();
    throw;
  }
  if (!old.empty()) std::filesystem::remove_all(old, ec);
}

}  // namespace calq::model
