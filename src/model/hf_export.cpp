// Model -> Hugging Face folder (see hf_export.h for the contract).
#include "model/hf_export.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cctype>
#include <cstring>
#include <deque>
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

// The tensor of `role` (layer ignored for global roles, expert for all but expert roles): a
// LinearWeight for linear and expert roles, else a float32 vector (LayerWeights::vector).
struct RoleTensor {
  const LinearWeight* linear = nullptr;
  const Tensor* vector = nullptr;
  Shape shape() const { return linear != nullptr ? linear->shape() : vector->shape(); }
};

RoleTensor role_tensor(const Model& m, TensorRole role, int64_t layer, int64_t expert) {
  switch (role) {
    case TensorRole::kTokenEmbedding: return {.linear = &m.embedding};
    case TensorRole::kOutput: return {.linear = &m.output};
    case TensorRole::kFinalNorm: return {.vector = &m.final_norm};
    default: break;
  }
  const LayerWeights& l = m.layers[static_cast<size_t>(layer)];
  if (is_expert(role)) return {.linear = &l.experts[static_cast<size_t>(expert)].linear(role)};
  return is_linear(role) ? RoleTensor{.linear = &l.linear(role)} : RoleTensor{.vector = &l.vector(role)};
}

// Writes `t` into `out` in `dtype` (F32 or BF16, round to nearest even): a quantized weight
// dequantized, row by row (its float32 copy lives only while this tensor is written).
void encode_role_tensor(const RoleTensor& t, DType dtype, std::span<std::byte> out, ThreadPool& pool) {
  const Shape shape = t.shape();
  const int64_t cols = shape.back();
  const int64_t rows = shape_numel(shape) / cols;
  std::vector<float> owned;
  const float* src = nullptr;
  if (t.vector != nullptr) {
    src = t.vector->f32();
  } else if (!t.linear->is_quantized()) {
    src = t.linear->dense().f32();
  } else if (dtype == DType::kF32) {
    t.linear->rows_f32(0, rows, reinterpret_cast<float*>(out.data()));
    return;
  } else {
    owned.resize(static_cast<size_t>(rows * cols));
    t.linear->rows_f32(0, rows, owned.data());
    src = owned.data();
  }
  if (dtype == DType::kBF16) {
    format_by_name("bf16").quantize(pool, src, rows, cols, out);
  } else if (!out.empty()) {
    std::memcpy(out.data(), src, out.size());
  }
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

std::vector<HfTensorEntry> hf_tensor_entries(const ModelConfig& c) {
  const Architecture* arch = find_architecture(c.model_type);
  if (arch == nullptr) fail(ErrorKind::kUnsupported, "model_type '{}' has no architecture table", c.model_type);
  std::vector<HfTensorEntry> out;
  const auto add = [&](TensorRole role, int64_t layer, int64_t expert) {
    out.push_back({.name = hf_tensor_name(*arch, role, layer, expert),
                   .role = role,
                   .layer = layer,
                   .expert = expert,
                   .shape = expected_shape(c, role)});
  };
  for (const TensorSlot& slot : arch->slots) {
    if (is_per_layer(slot.role) || !has_role(c, slot.role)) continue;
    if (slot.role == TensorRole::kOutput && c.tie_word_embeddings) continue;
    add(slot.role, -1, -1);
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const TensorSlot& slot : arch->slots) {
      if (!is_per_layer(slot.role) || !has_role(c, slot.role)) continue;
      const int64_t experts = is_expert(slot.role) ? c.moe->num_experts : 0;
      if (experts == 0) add(slot.role, l, -1);
      for (int64_t e = 0; e < experts; ++e) add(slot.role, l, e);
    }
  }
  return out;
}

void write_hf_folder(const std::filesystem::path& folder_in, const HfFolderContents& contents,
                     const HfFolderOptions& options) {
  const std::filesystem::path dir = folder_in.has_filename() ? folder_in : folder_in.parent_path();
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
    write_text(tmp / "config.json", contents.config_text);
    io::write_sharded_safetensors_streamed(tmp, contents.tensors, std::max<uint64_t>(options.max_shard_bytes, 1),
                                           {{"format", "pt"}}, options.progress);
    for (const auto& [name, text] : contents.files) write_text(tmp / name, text);
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
  HfFolderContents contents{.config_text = hf_config_json(c, options.dtype)};
  const Format* quant_format = options.quant == HfQuantScheme::kNone ? nullptr : common_quant_format(m, options.quant);
  if (quant_format != nullptr) {
    const HfQuantConfigText q = hf_quant_config_json(options.quant, *quant_format);
    json j = json::parse(contents.config_text);
    j["quantization_config"] = json::parse(q.quantization_config);
    contents.config_text = j.dump(2) + "\n";
    if (!q.quantize_config.empty()) contents.files.emplace_back("quantize_config.json", q.quantize_config);
  }
  for (const auto& file : options.extra_files) contents.files.push_back(file);
  for (int64_t l = 0; l < c.num_layers && c.moe; ++l) {
    const auto n = static_cast<int64_t>(m.layers[static_cast<size_t>(l)].experts.size());
    if (n != c.moe->num_experts) {
      fail(ErrorKind::kInvalidArgument, "{}: layer {} has {} experts but the config {}", dir.string(), l, n,
           c.moe->num_experts);
    }
  }

  // Every tensor the table and the config call for. Float tensors are encoded as the folder is
  // written (one at a time); a packed linear's tensors are made here, as the scheme's packing needs
  // the whole weight.
  std::deque<std::vector<std::byte>> packed;  // stable addresses for the producers
  for (const HfTensorEntry& t : hf_tensor_entries(c)) {
    if (quant_format != nullptr && is_packed_role(t.role)) {
      const LinearWeight& w = linear_of(m, t.role, t.layer, t.expert);
      assert(t.name.ends_with(".weight"));
      for (HfQuantTensor& q : hf_quant_tensors(options.quant, w.quantized(), t.name.substr(0, t.name.size() - 7))) {
        std::vector<std::byte>& bytes = packed.emplace_back(std::move(q.bytes));
        contents.tensors.push_back({.name = std::move(q.name),
                                    .dtype = q.dtype,
                                    .shape = std::move(q.shape),
                                    .produce = [&bytes](std::span<std::byte> out) {
                                      if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size());
                                    }});
      }
      continue;
    }
    const RoleTensor source = role_tensor(m, t.role, t.layer, t.expert);
    if (source.shape() != t.shape) {
      fail(ErrorKind::kInvalidArgument, "{}: tensor '{}' has shape {} but the config implies {}", dir.string(),
           t.name, shape_string(source.shape()), shape_string(t.shape));
    }
    contents.tensors.push_back({.name = t.name,
                                .dtype = options.dtype,
                                .shape = t.shape,
                                .produce = [source, dtype = options.dtype, &pool](std::span<std::byte> out) {
                                  encode_role_tensor(source, dtype, out, pool);
                                }});
  }
  write_hf_folder(dir, contents, {.overwrite = options.overwrite, .max_shard_bytes = options.max_shard_bytes});
}

}  // namespace calq::model
