// bitsandbytes NF4 checkpoints (see hf_quant_bnb.h): nf4-bnb bytes to transformers' tensors and back.
#include "model/hf_quant_bnb.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/nf4_bnb.h"

namespace calq::model::bnb {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

template <typename T>
std::vector<std::byte> bytes_of(const T* p, size_t n) {
  std::vector<std::byte> b(n * sizeof(T));
  if (n != 0) std::memcpy(b.data(), p, b.size());
  return b;
}

// Python's repr of a float (json.dumps writes floats so): the shortest round-trip digits, an exponent
// below 1e-4 and from 1e16 on, and ".0" on an integral value. fmt's "{}" follows the same rules but
// leaves integral values bare.
std::string python_float(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

std::string quant_state_json(int64_t rows, int64_t cols, float offset) {
  return fmt::format(
      "{{\"quant_type\": \"nf4\", \"blocksize\": {}, \"dtype\": \"float32\", \"shape\": [{}, {}], "
      "\"nested_blocksize\": {}, \"nested_dtype\": \"float32\", \"nested_offset\": {}}}",
      kBnbBlock, rows, cols, kBnbNestedBlock, python_float(static_cast<double>(offset)));
}

std::vector<HfQuantTensor> tensors(const QuantizedTensor& w, const std::string& base) {
  const int64_t n = w.rows, k = w.cols, nb = k / kBnbBlock, blocks = n * nb;
  const size_t rb = w.format->row_bytes(k);
  std::vector<std::byte> packed(static_cast<size_t>(n * k / 2)), codes(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < blocks; ++i) {
    const std::byte* block = w.bytes.data() + (i / nb) * rb + (i % nb) * kBnbBlockBytes;
    codes[static_cast<size_t>(i)] = block[0];
    std::memcpy(packed.data() + i * (kBnbBlock / 2), block + 1, kBnbBlock / 2);
  }
  const std::byte* trailer = w.bytes.data() + n * rb;
  const int64_t groups = bnb_nested_groups(n, k);
  float offset;
  std::memcpy(&offset, trailer, 4);
  const std::string state = quant_state_json(n, k, offset);
  const auto& levels = bnb_nf4_levels();
  const std::string name = base + ".weight";
  std::vector<HfQuantTensor> out;
  out.push_back({name, DType::kU8, {n * k / 2, 1}, std::move(packed)});
  out.push_back({name + ".absmax", DType::kU8, {blocks}, std::move(codes)});
  out.push_back({name + ".quant_map", DType::kF32, {16}, bytes_of(levels.data(), levels.size())});
  out.push_back({name + ".nested_absmax", DType::kF32, {groups},
                 std::vector<std::byte>(trailer + 4 + 1024, trailer + 4 + 1024 + 4 * groups)});
  out.push_back({name + ".nested_quant_map", DType::kF32, {256}, std::vector<std::byte>(trailer + 4, trailer + 4 + 1024)});
  out.push_back({name + ".quant_state.bitsandbytes__nf4", DType::kU8, {static_cast<int64_t>(state.size())},
                 bytes_of(state.data(), state.size())});
  return out;
}

ordered_json config() {
  // BitsAndBytesConfig.__init__'s attribute order, then to_dict's load_in_4bit / load_in_8bit.
  // compute dtype float32: calq's own arithmetic (and transformers' default when unset).
  return {{"quant_method", "bitsandbytes"},
          {"_load_in_8bit", false},
          {"_load_in_4bit", true},
          {"llm_int8_threshold", 6.0},
          {"llm_int8_skip_modules", json::array({"lm_head"})},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false},
          {"bnb_4bit_quant_type", "nf4"},
          {"bnb_4bit_use_double_quant", true},
          {"bnb_4bit_compute_dtype", "float32"},
          {"bnb_4bit_quant_storage", "uint8"},
          {"load_in_4bit", true},
          {"load_in_8bit", false}};
}

// ---- reading ----

namespace {

std::span<const std::byte> raw(const io::SafetensorsModel& st, const std::string& name, DType dtype, const Shape& shape) {
  if (!st.contains(name)) fail(ErrorKind::kNotFound, "{}: tensor '{}' not found", st.folder().string(), name);
  const io::TensorInfo& info = st.info(name);
  if (info.dtype != dtype || info.shape != shape) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' is {} {} but the config implies {} {}", st.folder().string(), name,
         dtype_name(info.dtype), shape_string(info.shape), dtype_name(dtype), shape_string(shape));
  }
  const Tensor t = st.tensor(name);
  return {static_cast<const std::byte*>(t.data()), static_cast<size_t>(info.end - info.begin)};
}

std::vector<float> finite_f32(const io::SafetensorsModel& st, const std::string& name, int64_t count) {
  const std::span<const std::byte> b = raw(st, name, DType::kF32, {count});
  std::vector<float> v(static_cast<size_t>(count));
  std::memcpy(v.data(), b.data(), b.size());
  for (float x : v) {
    if (!std::isfinite(x)) fail(ErrorKind::kFormat, "{}: tensor '{}' holds a non-finite value", st.folder().string(), name);
  }
  return v;
}

// The quant state's JSON object; kFormat / kUnsupported naming the tensor and key.
struct State {
  float offset = 0;
};

State parse_state(const io::SafetensorsModel& st, const std::string& name, int64_t n, int64_t k) {
  const std::string where = fmt::format("{}: tensor '{}'", st.folder().string(), name);
  const io::TensorInfo& info = st.info(name);
  if (info.dtype != DType::kU8 || info.shape.size() != 1) fail(ErrorKind::kFormat, "{} must be U8 [bytes]", where);
  const Tensor t = st.tensor(name);
  json j;
  try {
    j = json::parse(std::string(reinterpret_cast<const char*>(t.data()), static_cast<size_t>(info.end - info.begin)));
  } catch (const json::exception& e) {
    fail(ErrorKind::kFormat, "{} is not a JSON object: {}", where, e.what());
  }
  if (!j.is_object()) fail(ErrorKind::kFormat, "{} is not a JSON object", where);
  static const char* const kKeys[] = {"quant_type",       "blocksize",    "dtype",        "shape",
                                      "nested_blocksize", "nested_dtype", "nested_offset"};
  for (const auto& [key, v] : j.items()) {
    if (std::find_if(std::begin(kKeys), std::end(kKeys), [&](const char* x) { return key == x; }) == std::end(kKeys)) {
      fail(ErrorKind::kFormat, "{}: unknown quant state key '{}'", where, key);
    }
  }
  const auto need = [&](const char* key) -> const json& {
    if (!j.contains(key)) fail(ErrorKind::kFormat, "{}: quant state has no '{}' (no double quantization?)", where, key);
    return j[key];
  };
  if (need("quant_type") != "nf4") fail(ErrorKind::kUnsupported, "{}: quant_type {} (calq reads nf4)", where, j["quant_type"].dump());
  if (need("blocksize") != kBnbBlock) {
    fail(ErrorKind::kUnsupported, "{}: blocksize {} (calq's nf4-bnb has blocks of 64)", where, j["blocksize"].dump());
  }
  if (need("nested_blocksize") != kBnbNestedBlock) {
    fail(ErrorKind::kUnsupported, "{}: nested_blocksize {} (calq's nf4-bnb has 256)", where, j["nested_blocksize"].dump());
  }
  if (need("nested_dtype") != "float32") {
    fail(ErrorKind::kUnsupported, "{}: nested_dtype {} (calq reads float32)", where, j["nested_dtype"].dump());
  }
  const json& dtype = need("dtype");
  if (dtype != "float32" && dtype != "bfloat16" && dtype != "float16") {
    fail(ErrorKind::kUnsupported, "{}: dtype {} (float32, bfloat16 or float16)", where, dtype.dump());
  }
  if (need("shape") != json::array({n, k})) {
    fail(ErrorKind::kFormat, "{}: shape {} but the config implies [{}, {}]", where, j["shape"].dump(), n, k);
  }
  const json& off = need("nested_offset");
  if (!off.is_number() || !(std::fabs(off.get<double>()) <= std::numeric_limits<float>::max())) {
    fail(ErrorKind::kFormat, "{}: nested_offset {} is not a finite float32 number", where, off.dump());
  }
  return {.offset = static_cast<float>(off.get<double>())};
}

}  // namespace

std::optional<LinearWeight> load_linear(const HfQuantSpec& spec, const io::SafetensorsModel& st,
                                        const std::string& weight_name, const Shape& expected) {
  const std::string folder = st.folder().string();
  if (!st.contains(weight_name)) fail(ErrorKind::kNotFound, "{}: tensor '{}' not found ({})", folder, weight_name, spec.origin);
  const DType d = st.info(weight_name).dtype;
  if (d == DType::kF32 || d == DType::kF16 || d == DType::kBF16) return std::nullopt;  // a skipped module
  const int64_t n = expected[0], k = expected[1];
  if (k % kBnbBlock != 0) {
    fail(ErrorKind::kUnsupported, "{}: '{}' has {} inputs; calq reads bitsandbytes blocks that stay within a row "
         "(inputs a multiple of 64)", folder, weight_name, k);
  }
  const std::string state_name = weight_name + ".quant_state.bitsandbytes__nf4";
  if (!st.contains(state_name)) {
    if (st.contains(weight_name + ".quant_state.bitsandbytes__fp4")) {
      fail(ErrorKind::kUnsupported, "{}: '{}' is FP4 (calq reads nf4)", folder, weight_name);
    }
    fail(ErrorKind::kNotFound, "{}: tensor '{}' not found ({})", folder, state_name, spec.origin);
  }
  const State state = parse_state(st, state_name, n, k);
  const int64_t nb = k / kBnbBlock, blocks = n * nb, groups = bnb_nested_groups(n, k);
  const std::span<const std::byte> packed = raw(st, weight_name, DType::kU8, {n * k / 2, 1});
  const std::span<const std::byte> codes = raw(st, weight_name + ".absmax", DType::kU8, {blocks});
  (void)raw(st, weight_name + ".quant_map", DType::kF32, {16});  // dequantize_4bit uses its own table
  const std::vector<float> nested = finite_f32(st, weight_name + ".nested_absmax", groups);
  const std::vector<float> map = finite_f32(st, weight_name + ".nested_quant_map", 256);
  const Format& f = format_by_name("nf4-bnb");
  std::vector<std::byte> bytes(f.tensor_bytes(n, k));
  const size_t rb = f.row_bytes(k);
  for (int64_t i = 0; i < blocks; ++i) {
    std::byte* block = bytes.data() + (i / nb) * rb + (i % nb) * kBnbBlockBytes;
    block[0] = codes[static_cast<size_t>(i)];
    std::memcpy(block + 1, packed.data() + i * (kBnbBlock / 2), kBnbBlock / 2);
  }
  std::byte* trailer = bytes.data() + n * rb;
  std::memcpy(trailer, &state.offset, 4);
  std::memcpy(trailer + 4, map.data(), 1024);
  std::memcpy(trailer + 4 + 1024, nested.data(), 4 * nested.size());
  return QuantizedTensor::copy_of(f, n, k, bytes);
}

}  // namespace calq::model::bnb
