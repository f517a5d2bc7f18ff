// Reading GPTQ / AWQ / compressed-tensors / bitsandbytes checkpoints (see hf_quant.h): the config, then each
// linear into calq's int, fp8 or nf4-bnb format (bitsandbytes' in hf_quant_bnb.cpp).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/int_layout.h"
#include "io/hf_quant_pack.h"
#include "model/hf_quant.h"
#include "model/hf_quant_bnb.h"

namespace calq::model {
namespace {

using nlohmann::json;

const json& key(const json& j, const char* name, const std::string& origin, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end()) fail(ErrorKind::kFormat, "{}: {} has no key '{}'", origin, where, name);
  return *it;
}

int64_t int_key(const json& j, const char* name, const std::string& origin, const std::string& where) {
  const json& v = key(j, name, origin, where);
  if (!v.is_number_integer()) fail(ErrorKind::kFormat, "{}: {}.{} must be an integer, got {}", origin, where, name, v.dump());
  return v.get<int64_t>();
}

bool bool_key(const json& j, const char* name, bool fallback, const std::string& origin, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(ErrorKind::kFormat, "{}: {}.{} must be true or false, got {}", origin, where, name, it->dump());
  return it->get<bool>();
}

std::string string_key(const json& j, const char* name, const std::string& fallback, const std::string& origin,
                       const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) fail(ErrorKind::kFormat, "{}: {}.{} must be a string, got {}", origin, where, name, it->dump());
  return it->get<std::string>();
}

HfQuantSpec parse_gptq(const json& q, const std::string& origin) {
  const std::string where = "quantization_config";
  HfQuantSpec s{.kind = HfQuantSpec::Kind::kGptq, .origin = origin};
  s.bits = static_cast<int>(int_key(q, "bits", origin, where));
  if (s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8) {
    fail(ErrorKind::kUnsupported, "{}: GPTQ bits {} (calq reads 2, 3, 4 and 8)", origin, s.bits);
  }
  s.group = int_key(q, "group_size", origin, where);
  if (s.group != -1 && s.group <= 0) fail(ErrorKind::kFormat, "{}: group_size {} (−1 or positive)", origin, s.group);
  s.symmetric = bool_key(q, "sym", true, origin, where);
  const std::string format = string_key(q, "checkpoint_format", "gptq", origin, where);
  if (format != "gptq" && format != "gptq_v2") {
    fail(ErrorKind::kUnsupported, "{}: GPTQ checkpoint_format '{}' (calq reads gptq and gptq_v2)", origin, format);
  }
  s.gptq_v1 = format == "gptq";
  return s;
}

HfQuantSpec parse_awq(const json& q, const std::string& origin) {
  const std::string where = "quantization_config";
  HfQuantSpec s{.kind = HfQuantSpec::Kind::kAwq, .symmetric = false, .origin = origin};
  const auto bits_it = q.contains("bits") ? "bits" : "w_bit";
  s.bits = static_cast<int>(int_key(q, bits_it, origin, where));
  if (s.bits != 4) fail(ErrorKind::kUnsupported, "{}: AWQ bits {} (calq reads 4)", origin, s.bits);
  s.group = int_key(q, q.contains("group_size") ? "group_size" : "q_group_size", origin, where);
  if (s.group <= 0) fail(ErrorKind::kUnsupported, "{}: AWQ group_size {} (calq reads positive group sizes)", origin, s.group);
  std::string version = string_key(q, "version", "gemm", origin, where);
  std::transform(version.begin(), version.end(), version.begin(), [](unsigned char c) { return std::tolower(c); });
  if (version != "gemm") fail(ErrorKind::kUnsupported, "{}: AWQ version '{}' (calq reads gemm)", origin, version);
  if (!bool_key(q, "zero_point", true, origin, where)) {
    fail(ErrorKind::kUnsupported, "{}: AWQ zero_point false (calq reads the GEMM layout with zero points)", origin);
  }
  return s;
}

// compressed-tensors' QuantizationArgs: every key calq knows (an unknown one may change the meaning).
const std::set<std::string, std::less<>> kCtArgs = {"num_bits", "type", "symmetric", "group_size", "strategy",
                                                    "block_structure", "dynamic", "actorder", "observer",
                                                    "observer_kwargs", "zp_dtype", "scale_dtype"};

HfQuantSpec parse_ct(const json& q, const std::string& origin) {
  const std::string where = "quantization_config";
  const std::string format = string_key(q, "format", "", origin, where);
  HfQuantSpec s{.origin = origin};
  if (format == "pack-quantized") {
    s.kind = HfQuantSpec::Kind::kCtPacked;
  } else if (format == "float-quantized") {
    s.kind = HfQuantSpec::Kind::kCtFp8;
  } else {
    fail(ErrorKind::kUnsupported, "{}: compressed-tensors format '{}' (calq reads pack-quantized and float-quantized)",
         origin, format);
  }
  const json& groups = key(q, "config_groups", origin, where);
  if (!groups.is_object() || groups.size() != 1) {
    fail(ErrorKind::kUnsupported, "{}: config_groups must hold one group (calq reads one scheme for every linear)", origin);
  }
  const std::string gname = groups.begin().key();
  const json& g = groups.begin().value();
  const std::string gwhere = "config_groups." + gname;
  const json& w = key(g, "weights", origin, gwhere);
  if (!w.is_object()) fail(ErrorKind::kFormat, "{}: {}.weights must be an object", origin, gwhere);
  for (const auto& [k, v] : w.items()) {
    if (!kCtArgs.contains(k)) fail(ErrorKind::kFormat, "{}: {}.weights has an unknown QuantizationArgs key '{}'", origin, gwhere, k);
  }
  for (const char* act : {"input_activations", "output_activations"}) {
    if (g.contains(act) && !g[act].is_null()) {
      fail(ErrorKind::kUnsupported, "{}: {}.{} is set (activation quantization); calq reads weight-only checkpoints",
           origin, gwhere, act);
    }
  }
  s.bits = static_cast<int>(int_key(w, "num_bits", origin, gwhere + ".weights"));
  const std::string type = string_key(w, "type", "int", origin, gwhere + ".weights");
  const std::string strategy = string_key(w, "strategy", "", origin, gwhere + ".weights");
  s.symmetric = bool_key(w, "symmetric", true, origin, gwhere + ".weights");
  if (bool_key(w, "dynamic", false, origin, gwhere + ".weights")) {
    fail(ErrorKind::kUnsupported, "{}: {}.weights.dynamic is true", origin, gwhere);
  }
  if (s.kind == HfQuantSpec::Kind::kCtFp8) {
    if (type != "float" || s.bits != 8 || !s.symmetric || (strategy != "channel" && strategy != "tensor")) {
      fail(ErrorKind::kUnsupported, "{}: {}: calq reads float-quantized FP8 (8-bit float, symmetric) with channel or "
           "tensor scales, not {} {}-bit {}", origin, gwhere, type, s.bits, strategy);
    }
    s.group = strategy == "channel" ? -1 : 0;
  } else {
    if (type != "int" || (s.bits != 4 && s.bits != 8)) {
      fail(ErrorKind::kUnsupported, "{}: {}: calq reads pack-quantized int with 4 or 8 bits, not {} {}", origin, gwhere,
           type, s.bits);
    }
    if (strategy == "group") {
      s.group = int_key(w, "group_size", origin, gwhere + ".weights");
      if (s.group <= 0) fail(ErrorKind::kFormat, "{}: {}.weights.group_size {} must be positive", origin, gwhere, s.group);
    } else if (strategy == "channel") {
      s.group = -1;
    } else {
      fail(ErrorKind::kUnsupported, "{}: {}: strategy '{}' (calq reads group and channel)", origin, gwhere, strategy);
    }
  }
  if (const auto it = q.find("ignore"); it != q.end() && it->is_array()) {
    for (const json& i : *it) {
      if (i.is_string()) s.ignore.push_back(i.get<std::string>());
    }
  }
  return s;
}

// Element values of a float tensor (F32/F16/BF16) as floats; kFormat naming it otherwise.
std::vector<float> float_values(const io::SafetensorsModel& st, const std::string& name, const Shape& shape) {
  const io::TensorInfo& info = st.info(name);
  if (info.dtype != DType::kF32 && info.dtype != DType::kF16 && info.dtype != DType::kBF16) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' has dtype {}, expected a float dtype", st.folder().string(), name,
         dtype_name(info.dtype));
  }
  if (info.shape != shape) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' has shape {} but the config implies {}", st.folder().string(), name,
         shape_string(info.shape), shape_string(shape));
  }
  const Tensor t = st.tensor(name);
  std::vector<float> out(static_cast<size_t>(shape_numel(shape)));
  convert_to_f32(info.dtype, t.data(), out.data(), out.size());
  return out;
}

// The bytes of a tensor that must have `dtype` and `shape`.
std::span<const std::byte> raw(const io::SafetensorsModel& st, const std::string& name, DType dtype, const Shape& shape) {
  const io::TensorInfo& info = st.info(name);
  if (info.dtype != dtype || info.shape != shape) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' is {} {} but the config implies {} {}", st.folder().string(), name,
         dtype_name(info.dtype), shape_string(info.shape), dtype_name(dtype), shape_string(shape));
  }
  const Tensor t = st.tensor(name);
  return {static_cast<const std::byte*>(t.data()), static_cast<size_t>(info.end - info.begin)};
}

// Parts into calq's int format of the same layout (an -f32 variant for non-fp16 scales), or float32
// when no int format fits (a group size calq does not register).
// config_group: the config's group size (−1: one scale per row, calq's pc formats).
LinearWeight to_linear(const IntTensorParts& p, int64_t config_group, bool symmetric, const std::string& name) {
  const int64_t group = config_group == -1 ? 0 : p.group;
  const uint8_t half = static_cast<uint8_t>(1 << (p.bits - 1));
  const bool sym = symmetric || std::all_of(p.zeros.begin(), p.zeros.end(), [&](uint8_t z) { return z == half; });
  const bool fp16 = std::all_of(p.scales.begin(), p.scales.end(),
                                [](float s) { return std::isfinite(s) && f16_to_f32(f32_to_f16(s)) == s; });
  const Format* f = find_format(int_format_name(p.bits, group, sym) + (fp16 ? "" : "-f32"));
  if (f != nullptr && f->can_store(p.rows, p.cols) && std::all_of(p.scales.begin(), p.scales.end(), [](float s) {
        return std::isfinite(s);
      })) {
    const std::vector<std::byte> bytes = int_tensor_bytes(*f, p, name);
    return QuantizedTensor::copy_of(*f, p.rows, p.cols, bytes);
  }
  std::vector<int32_t> g_idx(static_cast<size_t>(p.cols));
  for (int64_t c = 0; c < p.cols; ++c) g_idx[static_cast<size_t>(c)] = static_cast<int32_t>(c / p.group);
  const std::vector<float> w = io::dequantize_with_gidx(p, g_idx);
  Tensor t = Tensor::zeros(DType::kF32, {p.rows, p.cols});
  std::memcpy(t.mutable_f32(), w.data(), w.size() * sizeof(float));
  return t;
}

LinearWeight dense_of(const std::vector<float>& w, int64_t rows, int64_t cols) {
  Tensor t = Tensor::zeros(DType::kF32, {rows, cols});
  std::memcpy(t.mutable_f32(), w.data(), w.size() * sizeof(float));
  return t;
}

}  // namespace

std::optional<HfQuantSpec> hf_quant_spec(const std::filesystem::path& folder) {
  const std::filesystem::path config_path = folder / "config.json";
  json config;
  try {
    config = json::parse(read_text_file(config_path));
  } catch (const json::exception& e) {
    fail(ErrorKind::kFormat, "{}: not valid JSON: {}", config_path.string(), e.what());
  }
  std::string origin = config_path.string();
  json q;
  if (config.is_object() && config.contains("quantization_config")) {
    q = config["quantization_config"];
  } else {
    const std::filesystem::path qc = folder / "quantize_config.json";
    std::error_code ec;
    if (!std::filesystem::exists(qc, ec)) return std::nullopt;
    origin = qc.string();
    try {
      q = json::parse(read_text_file(qc));
    } catch (const json::exception& e) {
      fail(ErrorKind::kFormat, "{}: not valid JSON: {}", origin, e.what());
    }
    if (q.is_object() && !q.contains("quant_method")) q["quant_method"] = "gptq";  // AutoGPTQ's own file
  }
  if (!q.is_object()) fail(ErrorKind::kFormat, "{}: quantization_config must be an object", origin);
  const std::string method = string_key(q, "quant_method", "", origin, "quantization_config");
  if (method == "gptq") return parse_gptq(q, origin);
  if (method == "awq") return parse_awq(q, origin);
  if (method == "compressed-tensors") return parse_ct(q, origin);
  if (method == "bitsandbytes") return bnb::parse_config(q, origin);
  fail(ErrorKind::kUnsupported, "{}: quant_method '{}' is not one calq reads (gptq, awq, compressed-tensors, "
       "bitsandbytes)", origin, method);
}

bool hf_quant_tensor_of(const HfQuantSpec& spec, std::string_view name, std::string* weight_name) {
  static constexpr std::string_view kGptq[] = {".qweight", ".qzeros", ".scales", ".g_idx"};
  static constexpr std::string_view kCt[] = {".weight_packed", ".weight_scale", ".weight_shape", ".weight_zero_point",
                                             ".weight_g_idx"};
  static constexpr std::string_view kFp8[] = {".weight_scale", ".input_scale"};
  std::span<const std::string_view> suffixes = kGptq;
  if (spec.kind == HfQuantSpec::Kind::kCtPacked) suffixes = kCt;
  if (spec.kind == HfQuantSpec::Kind::kCtFp8) suffixes = kFp8;
  if (spec.kind == HfQuantSpec::Kind::kBnbNf4) suffixes = bnb::kSuffixes;
  for (const std::string_view s : suffixes) {
    if (name.size() > s.size() && name.ends_with(s)) {
      if (weight_name != nullptr) *weight_name = std::string(name.substr(0, name.size() - s.size())) + ".weight";
      return true;
    }
  }
  return false;
}

std::optional<LinearWeight> load_hf_quant_linear(const HfQuantSpec& spec, const io::SafetensorsModel& st, const std::string& weight_name,
                                  const Shape& expected, ThreadPool& pool) {
  (void)pool;
  if (spec.kind == HfQuantSpec::Kind::kBnbNf4) return bnb::load_linear(spec, st, weight_name, expected);
  const std::string base = weight_name.substr(0, weight_name.size() - std::string_view(".weight").size());
  const int64_t n = expected[0], k = expected[1];
  const std::string folder = st.folder().string();
  const auto need = [&](const std::string& name) {
    if (!st.contains(name)) fail(ErrorKind::kNotFound, "{}: tensor '{}' not found ({})", folder, name, spec.origin);
    return name;
  };
  switch (spec.kind) {
    case HfQuantSpec::Kind::kCtFp8: {
      if (st.info(weight_name).dtype != DType::kF8E4M3) return std::nullopt;  // kept in float: the caller reads it
      const bool per_tensor = spec.group == 0;
      const std::span<const std::byte> codes = raw(st, weight_name, DType::kF8E4M3, {n, k});
      const std::string scale_name = need(base + ".weight_scale");
      const io::TensorInfo& si = st.info(scale_name);
      const Shape scale_shape = per_tensor ? (si.shape.empty() ? Shape{} : Shape{1}) : Shape{n, 1};
      const std::vector<float> scales = float_values(st, scale_name, scale_shape);
      const Format& f = format_by_name(per_tensor ? "fp8-e4m3-pt" : "fp8-e4m3");
      std::vector<std::byte> bytes(f.tensor_bytes(n, k));
      std::memcpy(bytes.data(), codes.data(), codes.size());
      std::memcpy(bytes.data() + codes.size(), scales.data(), scales.size() * sizeof(float));
      for (float s : scales) {
        if (!std::isfinite(s)) fail(ErrorKind::kFormat, "{}: tensor '{}' holds a non-finite scale", folder, scale_name);
      }
      return QuantizedTensor::copy_of(f, n, k, bytes);
    }
    case HfQuantSpec::Kind::kGptq:
    case HfQuantSpec::Kind::kAwq:
    case HfQuantSpec::Kind::kCtPacked:
    case HfQuantSpec::Kind::kBnbNf4: break;
  }
  const bool ct = spec.kind == HfQuantSpec::Kind::kCtPacked;
  const std::string first = base + (ct ? ".weight_packed" : ".qweight");
  if (!st.contains(first)) {
    if (st.contains(weight_name)) return std::nullopt;  // kept in float
    fail(ErrorKind::kNotFound, "{}: neither '{}' nor '{}' found ({})", folder, first, weight_name, spec.origin);
  }
  const int64_t group = spec.group == -1 ? k : spec.group;
  if (group <= 0 || k % group != 0) {
    fail(ErrorKind::kFormat, "{}: group size {} ({}) does not divide the input size {} of '{}'", folder, spec.group,
         spec.origin, k, base);
  }
  const int64_t groups = k / group;
  const std::string name = weight_name;
  IntTensorParts p;
  std::vector<int32_t> g_idx;
  if (spec.kind == HfQuantSpec::Kind::kGptq) {
    const int64_t b = spec.bits;
    if (k % 32 != 0 || n % 32 != 0) {
      fail(ErrorKind::kFormat, "{}: '{}' is [{}, {}]; GPTQ needs both sizes multiples of 32", folder, base, n, k);
    }
    p = io::gptq_unpack(spec.bits, n, k, spec.group, spec.gptq_v1 ? io::GptqVersion::kV1 : io::GptqVersion::kV2,
                        raw(st, first, DType::kI32, {k * b / 32, n}),
                        raw(st, need(base + ".qzeros"), DType::kI32, {groups, n * b / 32}),
                        float_values(st, need(base + ".scales"), {groups, n}),
                        raw(st, need(base + ".g_idx"), DType::kI32, {k}), g_idx, name);
    if (!io::gidx_is_sequential(g_idx, group)) return dense_of(io::dequantize_with_gidx(p, g_idx), n, k);
    return to_linear(p, spec.group, spec.symmetric, name);
  }
  if (spec.kind == HfQuantSpec::Kind::kAwq) {
    if (n % 8 != 0) fail(ErrorKind::kFormat, "{}: '{}' has {} outputs; AWQ needs a multiple of 8", folder, base, n);
    p = io::awq_unpack(n, k, group, raw(st, first, DType::kI32, {k, n / 8}),
                       raw(st, need(base + ".qzeros"), DType::kI32, {groups, n / 8}),
                       float_values(st, need(base + ".scales"), {groups, n}), name);
    return to_linear(p, spec.group, false, name);
  }
  const int64_t per = 32 / spec.bits;
  const std::string shape_name = need(base + ".weight_shape");
  const io::TensorInfo& shape_info = st.info(shape_name);
  if ((shape_info.dtype != DType::kI64 && shape_info.dtype != DType::kI32) || shape_info.shape != Shape{2}) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' must be I64 (or I32) [2]", folder, shape_name);
  }
  const Tensor shape_t = st.tensor(shape_name);
  std::array<int64_t, 2> dims{};
  for (size_t i = 0; i < 2; ++i) {
    if (shape_info.dtype == DType::kI64) {
      std::memcpy(&dims[i], static_cast<const std::byte*>(shape_t.data()) + 8 * i, 8);
    } else {
      int32_t v;
      std::memcpy(&v, static_cast<const std::byte*>(shape_t.data()) + 4 * i, 4);
      dims[i] = v;
    }
  }
  if (dims[0] != n || dims[1] != k) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' says [{}, {}] but the config implies [{}, {}]", folder, shape_name, dims[0],
         dims[1], n, k);
  }
  std::span<const std::byte> zero_point;
  if (!spec.symmetric) {
    zero_point = raw(st, need(base + ".weight_zero_point"), DType::kI32, {(n + per - 1) / per, groups});
  }
  p = io::ct_unpack(spec.bits, n, k, group, raw(st, first, DType::kI32, {n, (k + per - 1) / per}),
                    float_values(st, need(base + ".weight_scale"), {n, groups}), zero_point, name);
  if (st.contains(base + ".weight_g_idx")) {
    const std::span<const std::byte> gi = raw(st, base + ".weight_g_idx", DType::kI32, {k});
    g_idx.resize(static_cast<size_t>(k));
    std::memcpy(g_idx.data(), gi.data(), gi.size());
    for (int32_t v : g_idx) {
      if (v < 0 || v >= groups) fail(ErrorKind::kFormat, "{}: '{}.weight_g_idx' holds group {} of {}", folder, base, v, groups);
    }
    if (!io::gidx_is_sequential(g_idx, group)) return dense_of(io::dequantize_with_gidx(p, g_idx), n, k);
  }
  return to_linear(p, spec.group, spec.symmetric, name);
}

}  // namespace calq::model
