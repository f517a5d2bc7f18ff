// Reading GPTQ / AWQ / compressed-tensors / bitsandbytes checkpoints (see hf_quant.h): the config, then each
// linear into calq's int, fp8 or nf4-bnb format (bitsandbytes' in hf_quant_bnb.cpp).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/int_layout.h"
#include "io/hf_quant_pack.h"
#include "model/hf_quant.h"
#include "model/hf_quant_bnb.h"

namespace calq::model {
namespace {

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
// A checkpoint's scales must be finite (a NaN would run silently through every product).
void check_scales(const IntTensorParts& p, const std::string& name) {
  for (size_t i = 0; i < p.scales.size(); ++i) {
    if (!std::isfinite(p.scales[i])) {
      fail(ErrorKind::kFormat, "tensor '{}': output {} group {} has a non-finite scale", name,
           i / static_cast<size_t>(p.groups()), i % static_cast<size_t>(p.groups()));
    }
  }
}

LinearWeight to_linear(const IntTensorParts& p, int64_t config_group, bool symmetric, const std::string& name) {
  check_scales(p, name);
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
  if (std::optional<HfQuantSpec> s = io::parse_hf_quant_config(read_text_file(config_path), config_path.string())) {
    return s;
  }
  const std::filesystem::path qc = folder / "quantize_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(qc, ec)) return std::nullopt;
  return io::parse_hf_quant_config(read_text_file(qc), qc.string(), /*quantize_config_file=*/true);
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
    if (!io::gidx_is_sequential(g_idx, group)) {
      check_scales(p, name);
      return dense_of(io::dequantize_with_gidx(p, g_idx), n, k);
    }
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
    if (!io::gidx_is_sequential(g_idx, group)) {
      check_scales(p, name);
      return dense_of(io::dequantize_with_gidx(p, g_idx), n, k);
    }
  }
  return to_linear(p, spec.group, spec.symmetric, name);
}

}  // namespace calq::model
