// Model -> GGUF in llama.cpp's layout (see gguf_export.h for the contract).
#include "model/gguf_export.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "io/tokenizer/hf_gguf_vocab.h"
#include "model/gguf_lora.h"
#include "model/gguf_model.h"

namespace calq::model {
namespace {

// llama.cpp's GGML_QNT_VERSION.
constexpr uint32_t kQuantizationVersion = 2;
constexpr uint32_t kGgmlI8 = 24;

// The llama_ftype llama.cpp's loader guesses for a file mostly of one ggml type (its table).
std::optional<uint32_t> ftype_of_ggml_type(uint32_t type) {
  static const std::map<uint32_t, uint32_t> kTable = {
      {0, 0},    // F32 -> ALL_F32
      {1, 1},    // F16
      {2, 2},    // Q4_0
      {3, 3},    // Q4_1
      {8, 7},    // Q8_0
      {6, 8},    // Q5_0
      {7, 9},    // Q5_1
      {10, 10},  // Q2_K
      {11, 12},  // Q3_K -> Q3_K_M
      {12, 15},  // Q4_K -> Q4_K_M
      {13, 17},  // Q5_K -> Q5_K_M
      {14, 18},  // Q6_K
      {16, 19},  // IQ2_XXS
      {17, 20},  // IQ2_XS
      {18, 23},  // IQ3_XXS
      {19, 24},  // IQ1_S
      {20, 25},  // IQ4_NL
      {21, 26},  // IQ3_S
      {22, 28},  // IQ2_S
      {23, 30},  // IQ4_XS
      {29, 31},  // IQ1_M
      {30, 32},  // BF16
      {34, 36},  // TQ1_0
      {35, 37},  // TQ2_0
      {39, 38},  // MXFP4 -> MXFP4_MOE
  };
  const auto it = kTable.find(type);
  return it == kTable.end() ? std::nullopt : std::optional<uint32_t>(it->second);
}

// The ggml type a linear weight is written as; nullopt for a calq-specific format.
std::optional<uint32_t> ggml_type_of(const LinearWeight& w) {
  if (!w.is_quantized()) return io::kGgmlF32;
  return w.quantized().format->traits().ggml_type;
}

bool is_float_ggml(std::optional<uint32_t> t) {
  return t && (*t == io::kGgmlF32 || *t == io::kGgmlF16 || *t == io::kGgmlBF16);
}

// Whether the role is a [rows, cols] LinearWeight (the linear layers, the embedding, the head).
bool is_matrix(TensorRole role) {
  return is_linear(role) || role == TensorRole::kTokenEmbedding || role == TensorRole::kOutput;
}

// One tensor slot of the model to write.
struct Item {
  TensorRole role;
  int64_t layer;  // -1 for global tensors
  std::string gguf_name;
  std::string hf_name;
};

std::vector<Item> model_items(const Model& m) {
  std::vector<Item> items;
  const Architecture& arch = *m.arch;
  const auto add = [&](TensorRole role, int64_t layer) {
    if (!has_slot(arch, role) || !has_role(m.config, role)) return;
    // An expert role is one 3-D tensor per layer; its converter order is that of expert 0's name.
    items.push_back({role, layer, gguf_tensor_name(arch, role, layer),
                     hf_tensor_name(arch, role, layer, is_expert(role) ? 0 : -1)});
  };
  add(TensorRole::kTokenEmbedding, -1);
  for (int64_t l = 0; l < static_cast<int64_t>(m.layers.size()); ++l) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (is_per_layer(role)) add(role, l);
    }
  }
  add(TensorRole::kFinalNorm, -1);
  if (!m.output.same_storage(m.embedding) || arch.gguf_output_required) add(TensorRole::kOutput, -1);
  return items;
}

const LinearWeight& linear_of(const Model& m, const Item& it) {
  if (it.role == TensorRole::kTokenEmbedding) return m.embedding;
  if (it.role == TensorRole::kOutput) return m.output;
  return m.layers[static_cast<size_t>(it.layer)].linear(it.role);
}

const Tensor& vector_of(const Model& m, const Item& it) {
  if (it.role == TensorRole::kFinalNorm) return m.final_norm;
  return m.layers[static_cast<size_t>(it.layer)].vector(it.role);
}

// Expert e of an expert item.
const LinearWeight& expert_of(const Model& m, const Item& it, int64_t e) {
  return m.layers[static_cast<size_t>(it.layer)].experts[static_cast<size_t>(e)].linear(it.role);
}

// Every weight an item holds: one, or an expert item's num_experts.
template <typename Fn>
void for_each_weight(const Model& m, const Item& it, Fn fn) {
  if (is_expert(it.role)) {
    for (int64_t e = 0; e < m.config.moe->num_experts; ++e) fn(expert_of(m, it, e));
  } else if (is_matrix(it.role)) {
    fn(linear_of(m, it));
  }
}

// The experts of an item share one format (GGUF stores them as one tensor); Error otherwise.
const LinearWeight& check_experts_alike(const Model& m, const Item& it, const std::string& where) {
  const LinearWeight& first = expert_of(m, it, 0);
  for (int64_t e = 1; e < m.config.moe->num_experts; ++e) {
    const LinearWeight& w = expert_of(m, it, e);
    if (w.format_name() != first.format_name()) {
      fail(ErrorKind::kUnsupported,
           "{}: layer {} {}: expert {} is {} but expert 0 is {}; GGUF stores a layer's experts as one tensor of one "
           "type", where, it.layer, role_name(it.role), e, w.format_name(), first.format_name());
    }
  }
  return first;
}

bool converter_layout(const Model& m, const std::vector<Item>& items, GgufTensorOrder order) {
  if (order != GgufTensorOrder::kAuto) return order == GgufTensorOrder::kConvert;
  bool all_float = true;
  for (const Item& it : items) {
    for_each_weight(m, it, [&](const LinearWeight& w) { all_float = all_float && is_float_ggml(ggml_type_of(w)); });
  }
  return all_float;
}

void sort_items(std::vector<Item>& items, bool convert) {
  if (convert) {
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.hf_name < b.hf_name; });
  } else {
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
      if (a.layer != b.layer) return a.layer < b.layer;
      return a.gguf_name < b.gguf_name;
    });
  }
}

// gguf-py's size label: the parameter count in K/M/B/T with at least two significant digits.
std::string size_label(int64_t params) {
  double scaled = static_cast<double>(params);
  const char* suffix = "K";
  if (params > 1'000'000'000'000) {
    scaled *= 1e-12;
    suffix = "T";
  } else if (params > 1'000'000'000) {
    scaled *= 1e-9;
    suffix = "B";
  } else if (params > 1'000'000) {
    scaled *= 1e-6;
    suffix = "M";
  } else {
    scaled *= 1e-3;
  }
  const std::string whole = fmt::format("{}", static_cast<int64_t>(std::nearbyint(scaled)));
  const int digits = static_cast<int>(whole.find_first_not_of('0') == std::string::npos
                                          ? 0
                                          : whole.size() - whole.find_first_not_of('0'));
  const int fix = std::max(2 - digits, 0);
  return fmt::format("{:.{}f}{}", scaled, fix, suffix);
}

bool source_is_gguf(const Model& m) {
  std::error_code ec;
  return !m.source.empty() && std::filesystem::is_regular_file(m.source, ec);
}

std::optional<uint32_t> guessed_file_type(const Model& m, const std::vector<Item>& items) {
  std::map<std::string, std::pair<int64_t, std::optional<uint32_t>>> count;  // by format name
  std::string best;
  for (const Item& it : items) {
    for_each_weight(m, it, [&](const LinearWeight& w) {
      auto& c = count[w.format_name()];
      c.second = ggml_type_of(w);
      if (++c.first > (best.empty() ? 0 : count[best].first)) best = w.format_name();
    });
  }
  if (best.empty() || !count[best].second) return std::nullopt;
  return ftype_of_ggml_type(*count[best].second);
}

void hparams(const Model& m, bool convert, std::optional<uint32_t> file_type, io::GgufMetadata& out) {
  const Architecture& arch = *m.arch;
  const ModelConfig& c = m.config;
  const GgufHparamKeys& k = arch.gguf_keys;
  const auto key = [&](std::string_view suffix) { return fmt::format("{}.{}", arch.gguf_arch, suffix); };
  const auto u32 = [&](std::string_view suffix, int64_t v) {
    out.emplace_back(key(suffix), io::GgufValue::of_uint32(static_cast<uint32_t>(v)));
  };
  u32(k.block_count, c.num_layers);
  u32(k.context_length, c.max_position_embeddings);
  u32(k.embedding_length, c.hidden_size);
  u32(k.feed_forward_length, c.intermediate_size);
  u32(k.head_count, c.num_heads);
  u32(k.head_count_kv, c.num_kv_heads);
  out.emplace_back(key(k.rope_freq_base), io::GgufValue::of_float32(static_cast<float>(c.rope_theta)));
  out.emplace_back(key(k.rms_norm_eps), io::GgufValue::of_float32(static_cast<float>(c.rms_norm_eps)));
  u32(k.key_length, c.head_dim);
  u32(k.value_length, c.head_dim);
  if (convert && file_type) out.emplace_back("general.file_type", io::GgufValue::of_uint32(*file_type));
  if (arch.gguf_arch == "llama") {
    u32(k.vocab_size, c.vocab_size);
    u32(k.rope_dimension_count, c.head_dim);
  }
  if (c.moe) {
    const MoeRule& rule = *arch.moe;
    if (c.moe->norm_topk_prob != rule.gguf_norm_topk) {
      fail(ErrorKind::kUnsupported,
           "{}: norm_topk_prob = {} cannot be written as GGUF architecture '{}' (llama.cpp {} the picked expert "
           "weights for it)", m.source.string(), c.moe->norm_topk_prob, arch.gguf_arch,
           rule.gguf_norm_topk ? "always renormalises" : "never renormalises");
    }
    if (rule.gguf_ffn_is_expert_width && c.intermediate_size != c.moe->expert_intermediate) {
      fail(ErrorKind::kUnsupported, "{}: expert width {} differs from the feed-forward length {} of a '{}' file",
           m.source.string(), c.moe->expert_intermediate, c.intermediate_size, arch.gguf_arch);
    }
    u32(k.expert_count, c.moe->num_experts);
    u32(k.expert_used_count, c.moe->experts_per_token);
    if (!rule.gguf_ffn_is_expert_width) u32(k.expert_feed_forward_length, c.moe->expert_intermediate);
    if (c.moe->shared_intermediate > 0) u32(k.expert_shared_feed_forward_length, c.moe->shared_intermediate);
  }
  if (c.rope_scaling && c.rope_scaling->type == "linear") {
    out.emplace_back(key(k.rope_scaling_type), io::GgufValue::of_string("linear"));
    out.emplace_back(key(k.rope_scaling_factor), io::GgufValue::of_float32(static_cast<float>(c.rope_scaling->factor)));
  } else if (!c.rope_freq_factors.empty() && arch.gguf_arch != "llama") {
    fail(ErrorKind::kUnsupported, "{}: per-frequency rotary factors (rope_freqs) have no llama.cpp form for '{}'",
         m.source.string(), arch.gguf_arch);
  }
  if (c.sliding_window > 0 && std::find(c.layer_window.begin(), c.layer_window.end(), true) != c.layer_window.end()) {
    const bool all = std::find(c.layer_window.begin(), c.layer_window.end(), false) == c.layer_window.end();
    if (!arch.gguf_window_all_layers || !all) {
      fail(ErrorKind::kUnsupported, "{}: a sliding attention window on {} layers of a '{}' model has no llama.cpp key",
           m.source.string(), all ? "all" : "some", arch.gguf_arch);
    }
    u32(k.sliding_window, c.sliding_window);
  }
}

}  // namespace

std::string calq_qtensor_format_key(std::string_view tensor_name) {
  return fmt::format("calq.qtensor.{}.format", tensor_name);
}
std::string calq_qtensor_shape_key(std::string_view tensor_name) {
  return fmt::format("calq.qtensor.{}.shape", tensor_name);
}
std::string calq_kron_tensor_name(int64_t layer, InputSite site, char factor) {
  assert(factor == 'a' || factor == 'b');
  return fmt::format("blk.{}.{}.{}.{}", layer, kCalqKronTag, site_name(site), factor);
}
std::string calq_act_quant_key(std::string_view tensor_name) {
  return fmt::format("{}{}", kCalqActQuantPrefix, tensor_name);
}
std::string calq_act_quant_value_key(std::string_view tensor_name) {
  return fmt::format("{}{}.value", kCalqActQuantPrefix, tensor_name);
}

io::GgufMetadata gguf_model_metadata(const Model& m, const GgufExportOptions& options) {
  assert(m.arch != nullptr);
  std::vector<Item> items = model_items(m);
  const bool convert = converter_layout(m, items, options.order);
  sort_items(items, convert);
  const std::optional<uint32_t> file_type = options.file_type ? options.file_type : guessed_file_type(m, items);

  io::GgufMetadata out;
  std::unique_ptr<io::GgufFile> src;
  if (source_is_gguf(m)) src = std::make_unique<io::GgufFile>(io::GgufFile::open(m.source));
  if (src) {
    for (const auto& [key, value] : src->metadata()) {
      if (key.rfind("general.", 0) == 0 && key != "general.file_type" && key != "general.quantization_version" &&
          key != "general.alignment") {
        out.emplace_back(key, value);
      }
    }
  } else {
    out.emplace_back("general.architecture", io::GgufValue::of_string(std::string(m.arch->gguf_arch)));
    out.emplace_back("general.type", io::GgufValue::of_string("model"));
    out.emplace_back("general.name", io::GgufValue::of_string(m.source.filename().string()));
    out.emplace_back("general.size_label", io::GgufValue::of_string(size_label(m.parameter_count())));
  }
  hparams(m, convert, file_type, out);
  if (src) {
    for (const auto& [key, value] : src->metadata()) {
      if (key.rfind("tokenizer.", 0) == 0) out.emplace_back(key, value);
    }
  } else if (!m.source.empty()) {
    for (auto& kv : io::hf_tokenizer_to_gguf(m.source)) out.push_back(std::move(kv));
  }
  out.emplace_back("general.quantization_version", io::GgufValue::of_uint32(kQuantizationVersion));
  if (!convert && file_type) out.emplace_back("general.file_type", io::GgufValue::of_uint32(*file_type));

  bool calq_only = false;
  io::GgufMetadata calq_keys;
  for (const Item& it : items) {
    if (!is_matrix(it.role) && !is_expert(it.role)) continue;
    const LinearWeight& w = is_expert(it.role) ? check_experts_alike(m, it, m.source.string()) : linear_of(m, it);
    if (ggml_type_of(w)) continue;
    calq_only = true;
    calq_keys.emplace_back(calq_qtensor_format_key(it.gguf_name), io::GgufValue::of_string(w.format_name()));
    io::GgufValue shape;
    shape.type = io::GgufValueType::kArray;
    shape.array_type = io::GgufValueType::kUint64;
    shape.uints = {static_cast<uint64_t>(w.rows()), static_cast<uint64_t>(w.cols())};
    if (is_expert(it.role)) shape.uints.insert(shape.uints.begin(), static_cast<uint64_t>(m.config.moe->num_experts));
    calq_keys.emplace_back(calq_qtensor_shape_key(it.gguf_name), std::move(shape));
  }
  // Activation quantization specs; a tied head's under its own name (it has no tensor of its own).
  const auto act_quant_keys = [&](const LinearWeight& w, const std::string& name) {
    const ActivationQuant& a = w.act_quant();
    if (!a.enabled()) return;
    calq_only = true;
    calq_keys.emplace_back(calq_act_quant_key(name),
                           io::GgufValue::of_string(std::string(activation_quant_name(a.kind))));
    // The value: the static scale, the outlier threshold, or a per-token kind's clip ratio when
    // it clips (absent means 1, so unclipped files read as they always did).
    std::optional<float> v;
    if (a.kind == ActivationQuant::Kind::kInt8PerTensor) v = a.scale;
    if (a.kind == ActivationQuant::Kind::kLlmInt8) v = a.threshold;
    if (a.per_token() && a.clip != 1.0f) v = a.clip;
    if (v) calq_keys.emplace_back(calq_act_quant_value_key(name), io::GgufValue::of_float32(*v));
  };
  for (const Item& it : items) {
    if (is_matrix(it.role)) act_quant_keys(linear_of(m, it), it.gguf_name);
    if (is_expert(it.role)) {
      for (int64_t e = 0; e < m.config.moe->num_experts; ++e) {
        if (expert_of(m, it, e).act_quant().enabled()) {
          fail(ErrorKind::kUnsupported, "{}: layer {} {} expert {}: activation quantization of experts has no GGUF key",
               m.source.string(), it.layer, role_name(it.role), e);
        }
      }
    }
  }
  if (m.output.same_storage(m.embedding) && has_slot(*m.arch, TensorRole::kOutput)) {
    act_quant_keys(m.output, gguf_tensor_name(*m.arch, TensorRole::kOutput, -1));
  }
  // Hadamard rotation (rotate.h): its seeds; a rotation the runtime applies needs calq to run.
  if (const std::optional<ModelConfig::Rotation>& rot = m.config.rotation) {
    if (rot->residual_online || rot->down_seed) calq_only = true;
    calq_keys.emplace_back(std::string(kCalqRotationResidualSeedKey), io::GgufValue::of_uint64(rot->residual_seed));
    calq_keys.emplace_back(std::string(kCalqRotationResidualOnlineKey), io::GgufValue::of_bool(rot->residual_online));
    if (rot->down_seed) {
      calq_keys.emplace_back(std::string(kCalqRotationDownSeedKey), io::GgufValue::of_uint64(*rot->down_seed));
    }
  }
  // Online input transforms (kron_transform.h): their factors are tensors; the runtime must apply them.
  if (m.has_transforms()) calq_only = true;
  // LoRA adapters (gguf_lora.h): extra tensors llama.cpp refuses in a model file; one alpha.
  if (const std::optional<double> alpha = model_lora_alpha(m, m.source.string())) {
    calq_only = true;
    calq_keys.emplace_back(std::string(kCalqLoraAlphaKey), io::GgufValue::of_float32(static_cast<float>(*alpha)));
  }
  if (calq_only) out.emplace_back(std::string(kCalqRequiresCalqKey), io::GgufValue::of_bool(true));
  for (auto& kv : calq_keys) out.push_back(std::move(kv));
  for (const auto& kv : options.extra_metadata) {
    for (const auto& have : out) {
      if (have.first == kv.first) {
        fail(ErrorKind::kInvalidArgument, "extra metadata key '{}' is already written by the GGUF export", kv.first);
      }
    }
    out.push_back(kv);
  }
  return out;
}

void write_gguf_model(const Model& m, const std::filesystem::path& out, const GgufExportOptions& options,
                      ThreadPool& pool) {
  (void)pool;  // row permutation is a copy; nothing here is worth a parallel loop
  assert(m.arch != nullptr);
  const io::GgufMetadata metadata = gguf_model_metadata(m, options);
  std::vector<Item> items = model_items(m);
  sort_items(items, converter_layout(m, items, options.order));

  const ModelConfig& c = m.config;
  const auto heads_if_permuted = [&](TensorRole role) -> int64_t {
    if (!m.arch->gguf_permutes_qk) return 0;
    const TensorRole target = is_bias(role) ? bias_target(role) : role;
    if (target == TensorRole::kAttnQ) return c.num_heads;
    if (target == TensorRole::kAttnK) return c.num_kv_heads;
    return 0;
  };

  std::vector<std::vector<float>> float_copies;  // permuted dense tensors
  std::vector<QuantizedTensor> quant_copies;     // permuted quantized tensors (own their bytes)
  float_copies.reserve(items.size());
  quant_copies.reserve(items.size());
  std::vector<io::GgufWriteTensor> tensors;
  tensors.reserve(items.size());
  const auto permuted_floats = [&](const float* src, int64_t rows, int64_t cols, int64_t heads) {
    std::vector<float>& buf = float_copies.emplace_back(static_cast<size_t>(rows * cols));
    permute_qk_rows(src, buf.data(), heads, c.head_dim, cols);
    return std::as_bytes(std::span<const float>(buf));
  };

  std::vector<std::vector<std::byte>> byte_copies;  // stacked experts
  byte_copies.reserve(items.size());
  for (const Item& it : items) {
    const int64_t heads = heads_if_permuted(it.role);
    if (is_expert(it.role)) {
      // One 3-D tensor [num_experts, rows, cols] (ne = {cols, rows, num_experts}): the experts' bytes
      // one after another (float32, a ggml type, or calq bytes described by the metadata).
      const LinearWeight& first = check_experts_alike(m, it, out.string());
      const int64_t n = c.moe->num_experts;
      std::vector<std::byte>& buf = byte_copies.emplace_back();
      for (int64_t e = 0; e < n; ++e) {
        const LinearWeight& w = expert_of(m, it, e);
        const std::span<const std::byte> b = w.is_quantized() ? w.quantized().bytes : w.dense().bytes();
        buf.insert(buf.end(), b.begin(), b.end());
      }
      const std::optional<uint32_t> type = ggml_type_of(first);
      if (first.is_quantized() && type && first.quantized().format->trailer_bytes(first.rows(), first.cols()) != 0) {
        fail(ErrorKind::kInvalidArgument, "{}: tensor '{}': format {} has ggml type {} but a tensor trailer",
             out.string(), it.gguf_name, first.format_name(), *type);
      }
      if (type) {
        tensors.push_back({.name = it.gguf_name, .ne = {first.cols(), first.rows(), n}, .type = *type, .data = buf});
      } else {
        tensors.push_back({.name = it.gguf_name, .ne = {static_cast<int64_t>(buf.size())}, .type = kGgmlI8,
                           .data = buf});
      }
      continue;
    }
    if (it.role == TensorRole::kSharedExpertGate) {
      // llama.cpp reads the shared expert's gate [1, hidden] as a vector {hidden}.
      const LinearWeight& w = linear_of(m, it);
      if (w.is_quantized()) {
        fail(ErrorKind::kUnsupported, "{}: tensor '{}' must stay float (llama.cpp reads it as an F32 vector)",
             out.string(), it.gguf_name);
      }
      tensors.push_back({.name = it.gguf_name, .ne = {w.cols()}, .type = io::kGgmlF32, .data = w.dense().bytes()});
      continue;
    }
    if (!is_matrix(it.role)) {
      const Tensor& t = vector_of(m, it);
      const int64_t n = t.numel();
      const auto data = heads != 0 ? permuted_floats(t.f32(), n, 1, heads) : t.bytes();
      tensors.push_back({.name = it.gguf_name, .ne = {n}, .type = io::kGgmlF32, .data = data});
      continue;
    }
    const LinearWeight& w = linear_of(m, it);
    const std::vector<int64_t> ne = {w.cols(), w.rows()};
    if (!w.is_quantized()) {
      const auto data = heads != 0 ? permuted_floats(w.dense().f32(), w.rows(), w.cols(), heads) : w.dense().bytes();
      tensors.push_back({.name = it.gguf_name, .ne = ne, .type = io::kGgmlF32, .data = data});
      continue;
    }
    const QuantizedTensor& q = w.quantized();
    if (const std::optional<uint32_t> type = q.format->traits().ggml_type) {
      if (q.format->trailer_bytes(q.rows, q.cols) != 0) {
        fail(ErrorKind::kInvalidArgument, "{}: tensor '{}': format {} has ggml type {} but a tensor trailer",
             out.string(), it.gguf_name, q.format->name(), *type);
      }
      std::span<const std::byte> data = q.bytes;
      if (heads != 0) data = quant_copies.emplace_back(permute_qk_rows(q, heads, c.head_dim)).bytes;
      tensors.push_back({.name = it.gguf_name, .ne = ne, .type = *type, .data = data});
    } else {
      tensors.push_back({.name = it.gguf_name, .ne = {static_cast<int64_t>(q.bytes.size())}, .type = kGgmlI8,
                         .data = q.bytes});
    }
  }
  if (!c.rope_freq_factors.empty() && !(c.rope_scaling && c.rope_scaling->type == "linear")) {
    // Llama 3.1+ rotary scaling: llama.cpp's rope_freqs tensor of per-frequency divisors.
    tensors.push_back({.name = "rope_freqs.weight", .ne = {static_cast<int64_t>(c.rope_freq_factors.size())},
                       .type = io::kGgmlF32, .data = std::as_bytes(std::span<const float>(c.rope_freq_factors))});
  }
  for (int64_t l = 0; l < static_cast<int64_t>(m.layers.size()); ++l) {
    for (size_t site = 0; site < static_cast<size_t>(kNumInputSites); ++site) {
      const std::optional<KronTransform>& t = m.layers[static_cast<size_t>(l)].transforms[site];
      if (!t) continue;
      const auto s = static_cast<InputSite>(site);
      tensors.push_back({.name = calq_kron_tensor_name(l, s, 'a'), .ne = {t->n1(), t->n1()}, .type = io::kGgmlF32,
                         .data = t->a().bytes()});
      tensors.push_back({.name = calq_kron_tensor_name(l, s, 'b'), .ne = {t->n2(), t->n2()}, .type = io::kGgmlF32,
                         .data = t->b().bytes()});
    }
  }
  // LoRA adapters (gguf_lora.h), by layer and role; B's rows permuted where its base's are.
  for (int64_t l = 0; l < static_cast<int64_t>(m.layers.size()); ++l) {
    for (const TensorRole role : kLayerLinearRoles) {
      const LoraAdapter* a = m.layers[static_cast<size_t>(l)].adapter(role);
      if (a == nullptr) continue;
      const LinearWeight& base = m.layers[static_cast<size_t>(l)].linear(role);
      const bool calq_specific = base.is_quantized() && !base.quantized().format->traits().ggml_type;
      const int64_t heads = calq_specific ? 0 : heads_if_permuted(role);
      const std::string name = gguf_tensor_name(*m.arch, role, l);
      tensors.push_back({.name = lora_tensor_name(name, 'a'), .ne = {a->in(), a->rank()}, .type = io::kGgmlF32,
                         .data = a->a().bytes()});
      const auto b = heads != 0 ? permuted_floats(a->b().f32(), a->out(), a->rank(), heads) : a->b().bytes();
      tensors.push_back({.name = lora_tensor_name(name, 'b'), .ne = {a->rank(), a->out()}, .type = io::kGgmlF32,
                         .data = b});
    }
  }
  io::write_gguf(out, metadata, tensors, {});
}

}  // namespace calq::model
