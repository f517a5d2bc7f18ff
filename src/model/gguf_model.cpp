#include "model/gguf_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cassert>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hadamard.h"
#include "formats/format.h"
#include "model/gguf_export.h"
#include "model/gguf_kron.h"
#include "model/gguf_lora.h"
#include "model/loader_util.h"

namespace calq::model {
namespace {

// Reads "<arch>.<suffix>" keys of one file, naming file and key in every error.
class HparamReader {
 public:
  HparamReader(const io::GgufFile& file, std::string_view arch) : file_(file), prefix_(fmt::format("{}.", arch)) {}

  std::string key(std::string_view suffix) const { return prefix_ + std::string(suffix); }
  std::string what(std::string_view suffix) const { return fmt::format("{}: key '{}'", origin(), key(suffix)); }
  std::string origin() const { return file_.path().string(); }

  const io::GgufValue* find(std::string_view suffix) const { return file_.find(key(suffix)); }

  int64_t require_int(std::string_view suffix) const {
    const io::GgufValue* v = find(suffix);
    if (v == nullptr) fail(ErrorKind::kNotFound, "{}: missing required key '{}'", origin(), key(suffix));
    return checked(*v, suffix);
  }

  std::optional<int64_t> optional_int(std::string_view suffix) const {
    const io::GgufValue* v = find(suffix);
    if (v == nullptr) return std::nullopt;
    return checked(*v, suffix);
  }

  double float_or(std::string_view suffix, double fallback) const {
    const io::GgufValue* v = find(suffix);
    return v == nullptr ? fallback : v->as_float(what(suffix));
  }

 private:
  int64_t checked(const io::GgufValue& v, std::string_view suffix) const {
    if (v.type == io::GgufValueType::kArray) {
      fail(ErrorKind::kUnsupported, "{}: per-layer values are not supported (expected one integer)", what(suffix));
    }
    const int64_t value = v.as_int(what(suffix));
    if (value < 1 || value > (int64_t{1} << 31)) fail(ErrorKind::kFormat, "{} = {} is out of range", what(suffix), value);
    return value;
  }

  const io::GgufFile& file_;
  std::string prefix_;
};

const Architecture& gguf_architecture(const io::GgufFile& file) {
  const std::string& name = file.get("general.architecture")
                                .as_string(fmt::format("{}: key 'general.architecture'", file.path().string()));
  const Architecture* arch = find_gguf_architecture(name);
  if (arch != nullptr && arch->moe == nullptr && file.find(name + ".expert_count") != nullptr) {
    // llama.cpp writes Mixtral as "llama" with experts; the expert tables that write as this
    // architecture read such a file.
    for (const std::string& type : supported_model_types()) {
      const Architecture* a = find_architecture(type);
      if (a->moe != nullptr && a->gguf_arch == name) return *a;
    }
  }
  if (arch == nullptr) {
    fail(ErrorKind::kUnsupported, "{}: general.architecture '{}' is not supported (supported: {})",
         file.path().string(), name, fmt::join(supported_gguf_architectures(), ", "));
  }
  return *arch;
}

std::optional<int32_t> token_id(const io::GgufFile& file, std::string_view key) {
  const io::GgufValue* v = file.find(key);
  if (v == nullptr) return std::nullopt;
  return static_cast<int32_t>(v->as_int(fmt::format("{}: key '{}'", file.path().string(), key)));
}

constexpr uint32_t kGgmlI8 = 24;
// llama.cpp's per-frequency rotary divisors (Llama 3.1+ "llama3" scaling), one global F32 tensor.
constexpr std::string_view kRopeFreqsTensor = "rope_freqs.weight";

std::optional<DType> float_dtype(uint32_t ggml_type) {
  switch (ggml_type) {
    case io::kGgmlF32: return DType::kF32;
    case io::kGgmlF16: return DType::kF16;
    case io::kGgmlBF16: return DType::kBF16;
    default: return std::nullopt;
  }
}

Shape row_major_shape(const std::vector<int64_t>& ne) { return Shape(ne.rbegin(), ne.rend()); }

void check_known_tensors(const io::GgufFile& file, const ModelConfig& config, const Architecture& arch) {
  for (const auto& t : file.tensors()) {
    if (is_kron_tensor_name(t.name)) continue;  // read_gguf_transforms checks them
    if (is_lora_tensor_name(t.name)) continue;  // read_gguf_adapters checks them
    if (t.name == kRopeFreqsTensor) continue;   // gguf_model_config reads it
    const auto parsed = parse_gguf_tensor_name(arch, t.name);
    if (!parsed) {
      fail(ErrorKind::kUnsupported, "{}: tensor '{}' is not part of the '{}' architecture as calq knows it",
           file.path().string(), t.name, arch.gguf_arch);
    }
    if (parsed->layer >= config.num_layers) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' belongs to layer {} but {}.block_count is {}", file.path().string(),
           t.name, parsed->layer, arch.gguf_arch, config.num_layers);
    }
  }
}

// The GGUF types calq can load: the float ones, and every registered format's ggml type.
std::string decodable_types() {
  std::string list = "F32, F16, BF16";
  for (const Format* f : all_formats()) {
    const auto& id = f->traits().ggml_type;
    if (id && !float_dtype(*id)) list += ", " + io::ggml_type_name(*id);
  }
  return list;
}

void check_shape(const io::GgufFile& file, const io::GgufTensorInfo& info, const Shape& expected) {
  const Shape shape = row_major_shape(info.ne);
  if (shape != expected) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' has ne {} (shape {}) but the metadata implies shape {}",
         file.path().string(), info.name, shape_string(info.ne), shape_string(shape), shape_string(expected));
  }
}

// Where quantized tensors keep their bytes: a view of the file kept alive by `keep_alive`, or (null)
// an owned copy, when the caller did not hand over the file.
struct Source {
  const io::GgufFile& file;
  std::shared_ptr<const void> keep_alive;
  bool keep_float = false;  // GgufLoadOptions::keep_source_dtype (needs keep_alive)
};

// A norm or bias: float32, widened from F32/F16/BF16.
Tensor load_vector(const Source& src, const io::GgufTensorInfo& info, const Shape& expected, ThreadPool& pool) {
  check_shape(src.file, info, expected);
  const std::optional<DType> dtype = float_dtype(info.type);
  if (!dtype) {
    fail(ErrorKind::kUnsupported, "{}: tensor '{}' has type {}; calq reads norms and biases as F32, F16 or BF16",
         src.file.path().string(), info.name, io::ggml_type_name(info.type));
  }
  return widen_checked(*dtype, src.file.tensor_data(info).data(), expected, pool, src.file.path().string(), info.name);
}

// A calq-specific tensor (gguf_export.h): I8 bytes described by calq.qtensor.<name>.format/.shape;
// rows in Hugging Face order. Validates the format, the shape and the byte count.
LinearWeight load_calq_matrix(const Source& src, const io::GgufTensorInfo& info, const io::GgufValue& format_value,
                              const Shape& expected, ThreadPool& pool) {
  const std::string origin = src.file.path().string();
  const std::string format_key = calq_qtensor_format_key(info.name);
  const std::string shape_key = calq_qtensor_shape_key(info.name);
  const std::string& name = format_value.as_string(fmt::format("{}: key '{}'", origin, format_key));
  const Format* format = find_format(name);
  if (format == nullptr) {
    fail(ErrorKind::kUnsupported, "{}: tensor '{}' is in format '{}' ({}), which this calq build does not know",
         origin, info.name, name, format_key);
  }
  if (format->traits().ggml_type) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': format '{}' has a ggml type and must be stored as it, not as calq bytes",
         origin, info.name, name);
  }
  const io::GgufValue* shape_value = src.file.find(shape_key);
  if (shape_value == nullptr) {
    fail(ErrorKind::kNotFound, "{}: tensor '{}': missing key '{}'", origin, info.name, shape_key);
  }
  Shape shape;
  if (shape_value->type == io::GgufValueType::kArray) {
    for (const uint64_t v : shape_value->uints) shape.push_back(static_cast<int64_t>(v));
    for (const int64_t v : shape_value->ints) shape.push_back(v);
  }
  if (shape_value->type != io::GgufValueType::kArray || shape_value->array_size() != 2 || shape.size() != 2) {
    fail(ErrorKind::kFormat, "{}: key '{}' must be an integer array [rows, cols]", origin, shape_key);
  }
  if (shape != expected) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': {} is {} but the metadata implies shape {}", origin, info.name,
         shape_key, shape_string(shape), shape_string(expected));
  }
  if (info.type != kGgmlI8 || info.ne.size() != 1) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' in calq format '{}' must be a 1-D I8 tensor", origin, info.name, name);
  }
  const std::span<const std::byte> bytes = src.file.tensor_data(info);
  const bool fits = expected[1] % format->traits().block_size == 0;
  const size_t needed = fits ? format->tensor_bytes(expected[0], expected[1]) : 0;
  if (!fits || bytes.size() != needed) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' has {} bytes; format '{}' {} shape {}", origin, info.name, bytes.size(),
         name, fits ? fmt::format("needs {} for", needed) : std::string("cannot store"), shape_string(expected));
  }
  QuantizedTensor q = src.keep_alive ? QuantizedTensor::view(*format, expected[0], expected[1], bytes, src.keep_alive)
                                     : QuantizedTensor::copy_of(*format, expected[0], expected[1], bytes);
  check_finite(q, pool, origin, info.name);
  return q;
}

// A [rows, cols] weight: float types are widened to float32 (the dense path, as before); a type
// with a registered format stays in it, its bytes untouched; a calq-specific tensor is read by
// load_calq_matrix (and `calq_specific` set: its rows are not Q/K-permuted).
LinearWeight load_matrix(const Source& src, const io::GgufTensorInfo& info, const Shape& expected, ThreadPool& pool,
                         bool* calq_specific = nullptr) {
  const std::string origin = src.file.path().string();
  if (const io::GgufValue* f = src.file.find(calq_qtensor_format_key(info.name))) {
    if (calq_specific != nullptr) *calq_specific = true;
    return load_calq_matrix(src, info, *f, expected, pool);
  }
  check_shape(src.file, info, expected);
  if (const std::optional<DType> dtype = float_dtype(info.type)) {
    // Kept as stored: the f16/bf16 formats below, as views of the file.
    if (!(src.keep_float && src.keep_alive && *dtype != DType::kF32)) {
      return widen_checked(*dtype, src.file.tensor_data(info).data(), expected, pool, origin, info.name);
    }
  }
  const Format* format = format_by_ggml_type(info.type);
  if (format == nullptr) {
    fail(ErrorKind::kUnsupported, "{}: tensor '{}' has ggml type {}, which calq cannot decode (it decodes {})", origin,
         info.name, io::ggml_type_name(info.type), decodable_types());
  }
  const int64_t rows = expected[0];
  const int64_t cols = expected[1];
  const std::span<const std::byte> bytes = src.file.tensor_data(info);
  if (cols % format->traits().block_size != 0 || bytes.size() != format->tensor_bytes(rows, cols)) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' of type {} has {} bytes for shape {}, which {} cannot hold", origin,
         info.name, io::ggml_type_name(info.type), bytes.size(), shape_string(expected), format->name());
  }
  QuantizedTensor q = src.keep_alive ? QuantizedTensor::view(*format, rows, cols, bytes, src.keep_alive)
                                     : QuantizedTensor::copy_of(*format, rows, cols, bytes);
  check_finite(q, pool, origin, info.name);
  return q;
}

// The activation quantization stored for tensor `name` (gguf_export.h: calq.act_quant.<name>
// and .value), kNone when there is none; malformed keys are Errors naming file and key.
ActivationQuant read_act_quant(const io::GgufFile& file, const std::string& name) {
  const std::string kind_key = calq_act_quant_key(name);
  const std::string value_key = calq_act_quant_value_key(name);
  const io::GgufValue* kind_value = file.find(kind_key);
  const io::GgufValue* value = file.find(value_key);
  const std::string origin = file.path().string();
  if (kind_value == nullptr) {
    if (value != nullptr) fail(ErrorKind::kFormat, "{}: key '{}' without key '{}'", origin, value_key, kind_key);
    return {};
  }
  const std::string& kind_name = kind_value->as_string(fmt::format("{}: key '{}'", origin, kind_key));
  const std::optional<ActivationQuant::Kind> kind = activation_quant_by_name(kind_name);
  if (!kind || *kind == ActivationQuant::Kind::kNone) {
    fail(ErrorKind::kFormat, "{}: key '{}' is '{}'; expected int8-token, int4-token, int8-tensor or llm-int8", origin,
         kind_key, kind_name);
  }
  ActivationQuant spec{.kind = *kind};
  // Per-token kinds: the value, when present, is the clip ratio (absent: 1).
  if (spec.per_token() && value == nullptr) return spec;
  if (value == nullptr) fail(ErrorKind::kFormat, "{}: missing key '{}' for {}", origin, value_key, kind_name);
  if (value->type != io::GgufValueType::kFloat32) {
    fail(ErrorKind::kFormat, "{}: key '{}' must be a float32", origin, value_key);
  }
  const auto v = static_cast<float>(value->f);
  if (spec.per_token()) {
    spec.clip = v;
  } else {
    (*kind == ActivationQuant::Kind::kInt8PerTensor ? spec.scale : spec.threshold) = v;
  }
  if (!spec.valid()) {
    fail(ErrorKind::kFormat, "{}: key '{}' = {} must be {}", origin, value_key, value->f,
         spec.per_token() ? "a clip ratio in (0, 1]" : "positive and finite");
  }
  return spec;
}

// Every calq.act_quant.* key must belong to a linear weight the model has (`names`).
void check_act_quant_keys(const io::GgufFile& file, const std::vector<std::string>& names) {
  constexpr std::string_view kValueSuffix = ".value";
  for (const auto& [key, v] : file.metadata()) {
    if (key.rfind(kCalqActQuantPrefix, 0) != 0) continue;
    std::string name = key.substr(kCalqActQuantPrefix.size());
    if (std::find(names.begin(), names.end(), name) != names.end()) continue;
    if (name.size() > kValueSuffix.size() &&
        name.compare(name.size() - kValueSuffix.size(), kValueSuffix.size(), kValueSuffix) == 0) {
      name.resize(name.size() - kValueSuffix.size());
      if (std::find(names.begin(), names.end(), name) != names.end()) continue;
    }
    fail(ErrorKind::kFormat, "{}: key '{}' names no linear weight of this model", file.path().string(), key);
  }
}

// The Hadamard rotation of a rotated model (gguf_export.h: calq.rotation.*), nullopt if none;
// malformed keys are Errors naming file and key.
std::optional<ModelConfig::Rotation> read_rotation(const io::GgufFile& file, const ModelConfig& c) {
  const std::string origin = file.path().string();
  const auto seed = [&](std::string_view key) -> std::optional<uint64_t> {
    const io::GgufValue* v = file.find(key);
    if (v == nullptr) return std::nullopt;
    if (v->type != io::GgufValueType::kUint64) fail(ErrorKind::kFormat, "{}: key '{}' must be a uint64", origin, key);
    return v->u;
  };
  const std::optional<uint64_t> residual = seed(kCalqRotationResidualSeedKey);
  const io::GgufValue* online = file.find(kCalqRotationResidualOnlineKey);
  const std::optional<uint64_t> down = seed(kCalqRotationDownSeedKey);
  if (!residual) {
    if (online != nullptr || down) {
      fail(ErrorKind::kFormat, "{}: calq.rotation keys without key '{}'", origin, kCalqRotationResidualSeedKey);
    }
    return std::nullopt;
  }
  ModelConfig::Rotation rot{.residual_seed = *residual, .down_seed = down};
  if (online == nullptr) fail(ErrorKind::kFormat, "{}: missing key '{}'", origin, kCalqRotationResidualOnlineKey);
  rot.residual_online = online->as_bool(fmt::format("{}: key '{}'", origin, kCalqRotationResidualOnlineKey));
  if (rot.residual_online && !hadamard_supported(c.hidden_size)) {
    fail(ErrorKind::kFormat, "{}: key '{}': hidden size {} has no Hadamard transform", origin,
         kCalqRotationResidualOnlineKey, c.hidden_size);
  }
  if (down && !hadamard_supported(c.intermediate_size)) {
    fail(ErrorKind::kFormat, "{}: key '{}': intermediate size {} has no Hadamard transform", origin,
         kCalqRotationDownSeedKey, c.intermediate_size);
  }
  return rot;
}

Tensor unpermuted(const Tensor& t, int64_t n_heads, int64_t head_dim) {
  Tensor out = Tensor::zeros(DType::kF32, t.shape());
  const int64_t cols = t.rank() == 2 ? t.dim(1) : 1;
  unpermute_qk_rows(t.f32(), out.mutable_f32(), n_heads, head_dim, cols);
  return out;
}

LinearWeight unpermuted(const LinearWeight& w, int64_t n_heads, int64_t head_dim) {
  if (w.is_quantized()) return unpermute_qk_rows(w.quantized(), n_heads, head_dim);
  return unpermuted(w.dense(), n_heads, head_dim);
}

// Row r of the permuted tensor is row qk_source_rows(...)[r] of the original (`inverse`: the other way).
std::vector<int64_t> qk_source_rows(int64_t n_heads, int64_t head_dim, bool inverse) {
  const int64_t half = head_dim / 2;
  std::vector<int64_t> src(static_cast<size_t>(n_heads * head_dim));
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < half; ++i) {
        const int64_t interleaved = h * head_dim + 2 * i + s;
        const int64_t rotate_half = h * head_dim + s * half + i;
        if (inverse) {
          src[static_cast<size_t>(rotate_half)] = interleaved;
        } else {
          src[static_cast<size_t>(interleaved)] = rotate_half;
        }
      }
    }
  }
  return src;
}

// The experts of one layer's expert role from its 3-D tensor (ne = [cols, rows, num_experts]),
// each expert a [rows, cols] weight over its slice of the bytes. A calq-specific format
// (gguf_export.h) has shape [num_experts, rows, cols] and the experts encoded one after another.
void load_expert_slices(const Source& src, const io::GgufTensorInfo& info, const ModelConfig& c, TensorRole role,
                        int64_t layer, std::vector<ExpertWeights>& experts, ThreadPool& pool) {
  const std::string origin = src.file.path().string();
  const Shape one = expected_shape(c, role);
  const int64_t n = c.moe->num_experts;
  const Shape expected{n, one[0], one[1]};
  const std::span<const std::byte> bytes = src.file.tensor_data(info);
  const Format* format = nullptr;
  std::optional<DType> dtype;
  if (const io::GgufValue* f = src.file.find(calq_qtensor_format_key(info.name))) {
    const std::string& name = f->as_string(fmt::format("{}: key '{}'", origin, calq_qtensor_format_key(info.name)));
    format = find_format(name);
    if (format == nullptr || format->traits().ggml_type) {
      fail(ErrorKind::kUnsupported, "{}: tensor '{}' is in format '{}', which calq cannot read as calq bytes", origin,
           info.name, name);
    }
    const io::GgufValue* shape_value = src.file.find(calq_qtensor_shape_key(info.name));
    Shape shape;
    if (shape_value != nullptr && shape_value->type == io::GgufValueType::kArray) {
      for (const uint64_t v : shape_value->uints) shape.push_back(static_cast<int64_t>(v));
    }
    if (shape != expected) {
      fail(ErrorKind::kFormat, "{}: tensor '{}': key '{}' must be [{}, {}, {}] (experts, rows, cols)", origin,
           info.name, calq_qtensor_shape_key(info.name), n, one[0], one[1]);
    }
  } else {
    check_shape(src.file, info, expected);
    dtype = float_dtype(info.type);
    if (!dtype || (src.keep_float && src.keep_alive && *dtype != DType::kF32)) {
      format = format_by_ggml_type(info.type);
      if (format == nullptr) {
        fail(ErrorKind::kUnsupported, "{}: tensor '{}' has ggml type {}, which calq cannot decode (it decodes {})",
             origin, info.name, io::ggml_type_name(info.type), decodable_types());
      }
      dtype.reset();
    }
  }
  const size_t slice = dtype ? static_cast<size_t>(one[0] * one[1]) * dtype_size(*dtype)
                             : (one[1] % format->traits().block_size == 0 ? format->tensor_bytes(one[0], one[1]) : 0);
  if (slice == 0 || bytes.size() != slice * static_cast<size_t>(n)) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' has {} bytes; {} experts of shape {} need {}", origin, info.name,
         bytes.size(), n, shape_string(one), slice * static_cast<size_t>(n));
  }
  for (int64_t e = 0; e < n; ++e) {
    const std::span<const std::byte> part = bytes.subspan(static_cast<size_t>(e) * slice, slice);
    const std::string what = fmt::format("{} (layer {}, expert {})", info.name, layer, e);
    LinearWeight& w = experts[static_cast<size_t>(e)].linear(role);
    if (dtype) {
      w = widen_checked(*dtype, part.data(), one, pool, origin, what);
    } else {
      QuantizedTensor q = src.keep_alive ? QuantizedTensor::view(*format, one[0], one[1], part, src.keep_alive)
                                         : QuantizedTensor::copy_of(*format, one[0], one[1], part);
      check_finite(q, pool, origin, what);
      w = std::move(q);
    }
  }
}

Model load_gguf_model_from(const Source& src, ThreadPool& pool) {
  const io::GgufFile& file = src.file;
  Model m;
  m.config = gguf_model_config(file);
  m.arch = &gguf_architecture(file);
  m.source = file.path();
  check_known_tensors(file, m.config, *m.arch);

  const auto find = [&](TensorRole role, int64_t layer) -> const io::GgufTensorInfo& {
    const std::string name = gguf_tensor_name(*m.arch, role, layer);
    const io::GgufTensorInfo* info = file.find_tensor(name);
    if (info == nullptr) fail(ErrorKind::kNotFound, "{}: tensor '{}' not found", file.path().string(), name);
    return *info;
  };
  // The converter's Q/K row permutation, undone (weights and biases alike).
  const auto heads_if_permuted = [&](TensorRole role) -> int64_t {
    if (!m.arch->gguf_permutes_qk) return 0;
    const TensorRole target = is_bias(role) ? bias_target(role) : role;
    if (target == TensorRole::kAttnQ) return m.config.num_heads;
    if (target == TensorRole::kAttnK) return m.config.num_kv_heads;
    return 0;
  };
  std::vector<std::string> matrix_names;  // that may carry calq.act_quant.* keys
  const auto load_linear = [&](TensorRole role, int64_t layer) {
    bool calq_specific = false;
    const io::GgufTensorInfo& info = find(role, layer);
    if (role == TensorRole::kSharedExpertGate && info.ne.size() == 1) {
      // llama.cpp stores the shared expert's gate [1, hidden] as a vector.
      const Tensor v = load_vector(src, info, {m.config.hidden_size}, pool);
      Tensor w = Tensor::zeros(DType::kF32, {1, m.config.hidden_size});
      std::memcpy(w.mutable_data(), v.data(), v.nbytes());
      return LinearWeight(std::move(w));
    }
    LinearWeight w = load_matrix(src, info, expected_shape(m.config, role), pool, &calq_specific);
    const int64_t heads = calq_specific ? 0 : heads_if_permuted(role);
    if (heads != 0) w = unpermuted(w, heads, m.config.head_dim);
    w.set_act_quant(read_act_quant(file, info.name));
    matrix_names.push_back(info.name);
    return w;
  };
  const auto load_vec = [&](TensorRole role, int64_t layer) {
    Tensor t = load_vector(src, find(role, layer), expected_shape(m.config, role), pool);
    if (const int64_t heads = heads_if_permuted(role)) t = unpermuted(t, heads, m.config.head_dim);
    return t;
  };
  m.embedding = load_linear(TensorRole::kTokenEmbedding, -1);
  m.final_norm = load_vec(TensorRole::kFinalNorm, -1);
  m.output = m.config.tie_word_embeddings ? m.embedding : load_linear(TensorRole::kOutput, -1);
  if (m.config.tie_word_embeddings && has_slot(*m.arch, TensorRole::kOutput)) {
    // A tied head has no tensor, but may have its own activation quantization.
    const std::string name = gguf_tensor_name(*m.arch, TensorRole::kOutput, -1);
    m.output.set_act_quant(read_act_quant(file, name));
    matrix_names.push_back(name);
  }
  const auto load_experts = [&](int64_t layer) {
    std::vector<ExpertWeights> experts(static_cast<size_t>(m.config.moe->num_experts));
    for (const TensorRole role : {TensorRole::kExpertGate, TensorRole::kExpertUp, TensorRole::kExpertDown}) {
      load_expert_slices(src, find(role, layer), m.config, role, layer, experts, pool);
    }
    return experts;
  };
  load_layers(m, load_linear, load_vec, load_experts);
  read_gguf_transforms(file, m, pool);
  // B's rows follow their base's: Q/K-permuted unless the base is calq-specific (never permuted).
  read_gguf_adapters(
      file, m,
      [&](TensorRole role, std::string_view base) -> int64_t {
        return file.find(calq_qtensor_format_key(base)) != nullptr ? 0 : heads_if_permuted(role);
      },
      pool);
  check_act_quant_keys(file, matrix_names);
  return m;
}

}  // namespace

void permute_qk_rows(const float* src, float* dst, int64_t n_heads, int64_t head_dim, int64_t cols) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < half; ++i) {
        const float* from = src + (h * head_dim + s * half + i) * cols;
        std::memcpy(dst + (h * head_dim + 2 * i + s) * cols, from, static_cast<size_t>(cols) * sizeof(float));
      }
    }
  }
}

void unpermute_qk_rows(const float* src, float* dst, int64_t n_heads, int64_t head_dim, int64_t cols) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < half; ++i) {
        const float* from = src + (h * head_dim + 2 * i + s) * cols;
        std::memcpy(dst + (h * head_dim + s * half + i) * cols, from, static_cast<size_t>(cols) * sizeof(float));
      }
    }
  }
}

ModelConfig gguf_model_config(const io::GgufFile& file) {
  const Architecture& arch = gguf_architecture(file);
  const GgufHparamKeys& k = arch.gguf_keys;
  const HparamReader r(file, arch.gguf_arch);
  const std::string origin = r.origin();

  ModelConfig c;
  c.model_type = std::string(arch.model_type);
  c.num_layers = r.require_int(k.block_count);
  c.hidden_size = r.require_int(k.embedding_length);
  c.intermediate_size = r.require_int(k.feed_forward_length);
  c.num_heads = r.require_int(k.head_count);
  c.num_kv_heads = r.optional_int(k.head_count_kv).value_or(c.num_heads);
  if (c.hidden_size % c.num_heads != 0 && r.find(k.key_length) == nullptr) {
    fail(ErrorKind::kFormat, "{}: {} {} is not divisible by {} {}", origin, r.key(k.embedding_length), c.hidden_size,
         r.key(k.head_count), c.num_heads);
  }
  c.head_dim = r.optional_int(k.key_length).value_or(c.hidden_size / c.num_heads);
  if (const auto v = r.optional_int(k.value_length); v && *v != c.head_dim) {
    fail(ErrorKind::kUnsupported, "{}: {} {} differs from the key length {}", origin, r.key(k.value_length), *v,
         c.head_dim);
  }
  if (const auto d = r.optional_int(k.rope_dimension_count); d && *d != c.head_dim) {
    fail(ErrorKind::kUnsupported, "{}: {} {} is not the head dimension {} (partial rotary is not supported)", origin,
         r.key(k.rope_dimension_count), *d, c.head_dim);
  }
  std::optional<double> linear_factor;
  if (const io::GgufValue* s = r.find(k.rope_scaling_type)) {
    const std::string& type = s->as_string(r.what(k.rope_scaling_type));
    if (type == "linear") {
      linear_factor = r.float_or(k.rope_scaling_factor, 1.0);
      if (!(*linear_factor > 0.0) || !std::isfinite(*linear_factor)) {
        fail(ErrorKind::kFormat, "{}: {} must be positive", origin, r.key(k.rope_scaling_factor));
      }
    } else if (type != "none") {
      fail(ErrorKind::kUnsupported, "{}: {} '{}' is not supported (calq supports 'none', 'linear')", origin,
           r.key(k.rope_scaling_type), type);
    }
  }
  if (c.head_dim % 2 != 0) fail(ErrorKind::kFormat, "{}: head dimension {} must be even", origin, c.head_dim);
  if (c.num_heads % c.num_kv_heads != 0) {
    fail(ErrorKind::kFormat, "{}: {} {} is not a multiple of {} {}", origin, r.key(k.head_count), c.num_heads,
         r.key(k.head_count_kv), c.num_kv_heads);
  }
  // llama.cpp's default when the converter wrote no base (as for configs with rope_parameters).
  c.rope_theta = r.float_or(k.rope_freq_base, 10000.0);
  if (!(c.rope_theta > 0.0)) fail(ErrorKind::kFormat, "{}: {} must be positive", origin, r.key(k.rope_freq_base));
  if (r.find(k.rms_norm_eps) == nullptr) {
    fail(ErrorKind::kNotFound, "{}: missing required key '{}'", origin, r.key(k.rms_norm_eps));
  }
  c.rms_norm_eps = r.float_or(k.rms_norm_eps, 0.0);
  if (!(c.rms_norm_eps > 0.0)) fail(ErrorKind::kFormat, "{}: {} must be positive", origin, r.key(k.rms_norm_eps));
  c.max_position_embeddings = r.optional_int(k.context_length).value_or(2048);

  if (const auto v = r.optional_int(k.vocab_size)) {
    c.vocab_size = *v;
  } else if (const io::GgufValue* tokens = file.find("tokenizer.ggml.tokens"); tokens != nullptr && tokens->array_size() > 0) {
    c.vocab_size = static_cast<int64_t>(tokens->array_size());
  } else if (const io::GgufTensorInfo* emb = file.find_tensor(gguf_tensor_name(arch, TensorRole::kTokenEmbedding, -1));
             emb != nullptr && emb->ne.size() == 2) {
    c.vocab_size = emb->ne[1];
  } else {
    fail(ErrorKind::kNotFound, "{}: cannot tell the vocabulary size (no '{}', tokenizer.ggml.tokens or {})", origin,
         r.key(k.vocab_size), gguf_tensor_name(arch, TensorRole::kTokenEmbedding, -1));
  }
  c.tie_word_embeddings = file.find_tensor(gguf_tensor_name(arch, TensorRole::kOutput, -1)) == nullptr;
  c.bos_token_id = token_id(file, "tokenizer.ggml.bos_token_id");
  c.eos_token_id = token_id(file, "tokenizer.ggml.eos_token_id");
  c.qkv_bias = has_slot(arch, TensorRole::kAttnQBias);
  if (const auto w = r.optional_int(k.sliding_window)) {
    if (!arch.gguf_window_all_layers) {
      fail(ErrorKind::kUnsupported, "{}: key '{}' is not supported for architecture '{}'", origin,
           r.key(k.sliding_window), arch.gguf_arch);
    }
    c.sliding_window = *w;
    c.layer_window.assign(static_cast<size_t>(c.num_layers), true);
  }
  c.rotation = read_rotation(file, c);
  c.qk_norm = has_slot(arch, TensorRole::kAttnQNorm);
  if (linear_factor) {
    c.rope_scaling = ModelConfig::RopeScaling{.type = "linear", .factor = *linear_factor};
    c.rope_freq_factors.assign(static_cast<size_t>(c.head_dim / 2), static_cast<float>(*linear_factor));
  }
  if (const io::GgufTensorInfo* t = file.find_tensor(kRopeFreqsTensor)) {
    if (linear_factor) {
      fail(ErrorKind::kUnsupported, "{}: both '{}' and linear rope scaling", origin, kRopeFreqsTensor);
    }
    const Shape want{c.head_dim / 2};
    if (t->type != io::kGgmlF32 || row_major_shape(t->ne) != want) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' must be F32 of shape {}", origin, kRopeFreqsTensor, shape_string(want));
    }
    const auto data = file.tensor_data(*t);
    c.rope_freq_factors.resize(static_cast<size_t>(c.head_dim / 2));
    std::memcpy(c.rope_freq_factors.data(), data.data(), c.rope_freq_factors.size() * sizeof(float));
    for (const float f : c.rope_freq_factors) {
      if (!(f > 0.0f) || !std::isfinite(f)) {
        fail(ErrorKind::kFormat, "{}: tensor '{}' holds a factor that is not positive and finite", origin,
             kRopeFreqsTensor);
      }
    }
  }
  if (arch.moe != nullptr) {
    const MoeRule& rule = *arch.moe;
    ModelConfig::Moe moe;
    moe.num_experts = r.require_int(k.expert_count);
    moe.experts_per_token = r.require_int(k.expert_used_count);
    if (moe.experts_per_token > moe.num_experts) {
      fail(ErrorKind::kFormat, "{}: {} {} exceeds {} {}", origin, r.key(k.expert_used_count), moe.experts_per_token,
           r.key(k.expert_count), moe.num_experts);
    }
    // llama.cpp's fallbacks when the widths are absent: n_ff / n_expert_used and n_ff.
    moe.expert_intermediate = rule.gguf_ffn_is_expert_width
                                  ? c.intermediate_size
                                  : r.optional_int(k.expert_feed_forward_length)
                                        .value_or(c.intermediate_size / moe.experts_per_token);
    if (rule.shared_expert) {
      moe.shared_intermediate = r.optional_int(k.expert_shared_feed_forward_length).value_or(c.intermediate_size);
    }
    moe.norm_topk_prob = rule.gguf_norm_topk;
    c.moe = moe;
  }
  return c;
}

QuantizedTensor permute_qk_rows(const QuantizedTensor& t, int64_t n_heads, int64_t head_dim) {
  assert(t.rows == n_heads * head_dim);
  return gather_rows(t, qk_source_rows(n_heads, head_dim, /*inverse=*/false));
}

QuantizedTensor unpermute_qk_rows(const QuantizedTensor& t, int64_t n_heads, int64_t head_dim) {
  assert(t.rows == n_heads * head_dim);
  return gather_rows(t, qk_source_rows(n_heads, head_dim, /*inverse=*/true));
}

Model load_gguf_model(const io::GgufFile& file, ThreadPool& pool) {
  return load_gguf_model_from(Source{.file = file, .keep_alive = nullptr}, pool);
}

Model load_gguf_model(std::shared_ptr<const io::GgufFile> file, ThreadPool& pool, const GgufLoadOptions& options) {
  const io::GgufFile& f = *file;
  return load_gguf_model_from(
      Source{.file = f, .keep_alive = std::move(file), .keep_float = options.keep_source_dtype}, pool);
}

Model load_gguf_model(const std::filesystem::path& path, ThreadPool& pool) {
  return load_gguf_model(std::make_shared<const io::GgufFile>(io::GgufFile::open(path)), pool);
}

ModelSummary inspect_gguf_model(const std::filesystem::path& path) {
  const io::GgufFile file = io::GgufFile::open(path);
  ModelSummary s;
  s.config = gguf_model_config(file);
  for (const auto& t : file.tensors()) {
    s.tensors.push_back({t.name, io::ggml_type_name(t.type), row_major_shape(t.ne)});
    s.parameter_count += t.element_count();
  }
  sort_in_model_order(s.tensors, gguf_architecture(file), /*gguf=*/true);
  return s;
}

}  // namespace calq::model
