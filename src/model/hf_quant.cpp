// GPTQ / AWQ / compressed-tensors / bitsandbytes checkpoints: writing calq's int, fp8 and nf4-bnb formats as
// their tensors and config (bitsandbytes' in hf_quant_bnb.cpp), and reading them back (see hf_quant.h).
#include "model/hf_quant.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/int_layout.h"
#include "io/hf_quant_pack.h"
#include "model/hf_quant_bnb.h"

namespace calq::model {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

template <typename T>
std::vector<std::byte> bytes_of(const std::vector<T>& v) {
  std::vector<std::byte> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

bool is_fp8_e4m3(const Format& f) { return f.name() == "fp8-e4m3" || f.name() == "fp8-e4m3-pt"; }

// The group size a config states for an int layout: the group, or −1 for one scale per row.
int64_t config_group(const IntLayout& l) { return l.granularity == IntLayout::Granularity::kGroup ? l.group : -1; }

// compressed-tensors' QuantizationArgs of the weights (the keys llm-compressor writes).
ordered_json ct_weights(int bits, const char* type, bool symmetric, const json& group_size, const char* strategy) {
  return {{"num_bits", bits},           {"type", type},         {"symmetric", symmetric},
          {"group_size", group_size},   {"strategy", strategy}, {"block_structure", nullptr},
          {"dynamic", false},           {"actorder", nullptr},  {"observer", "minmax"},
          {"observer_kwargs", json::object()}};
}

// A compressed-tensors quantization_config: one weight-only group over every Linear but the head.
ordered_json ct_config(const char* format, const ordered_json& weights) {
  return {{"quant_method", "compressed-tensors"},
          {"format", format},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}}, {"weights", weights}, {"input_activations", nullptr}, {"output_activations", nullptr}}}}},
          {"ignore", {"lm_head"}},
          {"kv_cache_scheme", nullptr},
          {"global_compression_ratio", nullptr}};
}

}  // namespace

std::string_view hf_quant_scheme_name(HfQuantScheme scheme) {
  switch (scheme) {
    case HfQuantScheme::kNone: return "none";
    case HfQuantScheme::kGptq: return "gptq";
    case HfQuantScheme::kGptqV2: return "gptq-v2";
    case HfQuantScheme::kAwq: return "awq";
    case HfQuantScheme::kCompressedTensors: return "compressed-tensors";
    case HfQuantScheme::kBnbNf4: return "bnb-nf4";
  }
  return "none";
}

std::optional<HfQuantScheme> parse_hf_quant_scheme(std::string_view name) {
  for (const HfQuantScheme s : {HfQuantScheme::kNone, HfQuantScheme::kGptq, HfQuantScheme::kGptqV2, HfQuantScheme::kAwq,
                                HfQuantScheme::kCompressedTensors, HfQuantScheme::kBnbNf4}) {
    if (name == hf_quant_scheme_name(s)) return s;
  }
  return std::nullopt;
}

std::string hf_quant_scheme_fits(HfQuantScheme scheme, const Format& format) {
  const std::string_view s = hf_quant_scheme_name(scheme);
  if (scheme == HfQuantScheme::kNone) return "";
  if (scheme == HfQuantScheme::kBnbNf4) {
    return format.name() == "nf4-bnb"
               ? ""
               : fmt::format("bnb-nf4 checkpoints hold nf4-bnb (NF4 with bitsandbytes' double quantization), not {}",
                             format.name());
  }
  if (format.name() == "nf4-bnb") {
    return fmt::format("nf4-bnb goes into bnb-nf4 checkpoints (bitsandbytes), not {}", s);
  }
  if (is_fp8_e4m3(format)) {
    return scheme == HfQuantScheme::kCompressedTensors
               ? ""
               : fmt::format("{} checkpoints hold integer weights; fp8-e4m3 goes into compressed-tensors", s);
  }
  const std::optional<IntLayout> l = int_layout(format);
  if (!l) {
    return fmt::format(
        "{} is not an integer format: {} checkpoints hold int formats (int4-g128-sym, ...){}", format.name(), s,
        scheme == HfQuantScheme::kCompressedTensors ? " and fp8-e4m3 / fp8-e4m3-pt" : "");
  }
  if (l->f32_scale) {
    return fmt::format("{} has fp32 scales; {} checkpoints store fp16 scales (use {})", format.name(), s,
                       format.name().substr(0, format.name().size() - 4));
  }
  switch (scheme) {
    case HfQuantScheme::kGptq:
    case HfQuantScheme::kGptqV2:
      if (l->bits == 5 || l->bits == 6) return fmt::format("GPTQ checkpoints hold 2, 3, 4 or 8 bits, not {}", l->bits);
      return "";
    case HfQuantScheme::kAwq:
      if (l->bits != 4) return fmt::format("AWQ checkpoints hold 4 bits, not {}", l->bits);
      if (l->granularity != IntLayout::Granularity::kGroup) return "AWQ checkpoints need groups (int4-g128-...)";
      return "";
    case HfQuantScheme::kCompressedTensors:
      if (l->bits != 4 && l->bits != 8) {
        return fmt::format("calq writes compressed-tensors pack-quantized with 4 or 8 bits (vLLM's), not {}", l->bits);
      }
      return "";
    case HfQuantScheme::kNone:
    case HfQuantScheme::kBnbNf4: break;
  }
  return "";
}

std::vector<HfQuantTensor> hf_quant_tensors(HfQuantScheme scheme, const QuantizedTensor& w, std::string_view base_in) {
  const std::string base(base_in);
  const Format& f = *w.format;
  if (const std::string why = hf_quant_scheme_fits(scheme, f); !why.empty()) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}.weight': {}", base, why);
  }
  if (scheme == HfQuantScheme::kBnbNf4) return bnb::tensors(w, base);
  const int64_t n = w.rows, k = w.cols;
  std::vector<HfQuantTensor> out;
  if (is_fp8_e4m3(f)) {
    const bool per_tensor = f.name() == "fp8-e4m3-pt";
    const auto codes = w.bytes.first(static_cast<size_t>(n * k));
    const auto scales = w.bytes.subspan(static_cast<size_t>(n * k));
    out.push_back({base + ".weight", DType::kF8E4M3, {n, k}, {codes.begin(), codes.end()}});
    out.push_back({base + ".weight_scale", DType::kF32, per_tensor ? Shape{1} : Shape{n, 1}, {scales.begin(), scales.end()}});
    return out;
  }
  const IntTensorParts p = int_tensor_parts(f, w.bytes, n, k);
  const std::string name = base + ".weight";
  switch (scheme) {
    case HfQuantScheme::kGptq:
    case HfQuantScheme::kGptqV2: {
      const io::GptqTensors t =
          io::gptq_pack(p, scheme == HfQuantScheme::kGptq ? io::GptqVersion::kV1 : io::GptqVersion::kV2, name);
      out.push_back({base + ".qweight", DType::kI32, {t.qweight_rows, n}, bytes_of(t.qweight)});
      out.push_back({base + ".qzeros", DType::kI32, {t.groups, t.qzeros_cols}, bytes_of(t.qzeros)});
      out.push_back({base + ".scales", DType::kF16, {t.groups, n}, bytes_of(t.scales)});
      out.push_back({base + ".g_idx", DType::kI32, {k}, bytes_of(t.g_idx)});
      break;
    }
    case HfQuantScheme::kAwq: {
      const io::AwqTensors t = io::awq_pack(p, name);
      out.push_back({base + ".qweight", DType::kI32, {k, n / 8}, bytes_of(t.qweight)});
      out.push_back({base + ".qzeros", DType::kI32, {t.groups, n / 8}, bytes_of(t.qzeros)});
      out.push_back({base + ".scales", DType::kF16, {t.groups, n}, bytes_of(t.scales)});
      break;
    }
    case HfQuantScheme::kCompressedTensors: {
      const bool sym = int_layout(f)->symmetric;
      const io::CtPackedTensors t = io::ct_pack(p, sym, name);
      out.push_back({base + ".weight_packed", DType::kI32, {n, t.packed_cols}, bytes_of(t.weight_packed)});
      out.push_back({base + ".weight_scale", DType::kF16, {n, t.groups}, bytes_of(t.scales)});
      out.push_back({base + ".weight_shape", DType::kI64, {2}, bytes_of(std::vector<int64_t>{n, k})});
      if (!sym) out.push_back({base + ".weight_zero_point", DType::kI32, {t.zero_rows, t.groups}, bytes_of(t.zero_point)});
      break;
    }
    case HfQuantScheme::kNone:
    case HfQuantScheme::kBnbNf4: break;
  }
  return out;
}

HfQuantConfigText hf_quant_config_json(HfQuantScheme scheme, const Format& format) {
  if (const std::string why = hf_quant_scheme_fits(scheme, format); !why.empty()) {
    fail(ErrorKind::kInvalidArgument, "{}", why);
  }
  ordered_json q;
  HfQuantConfigText out;
  if (scheme == HfQuantScheme::kBnbNf4) {
    out.quantization_config = bnb::config().dump();
    return out;
  }
  if (is_fp8_e4m3(format)) {
    const bool per_tensor = format.name() == "fp8-e4m3-pt";
    q = ct_config("float-quantized", ct_weights(8, "float", true, nullptr, per_tensor ? "tensor" : "channel"));
    out.quantization_config = q.dump();
    return out;
  }
  const IntLayout l = *int_layout(format);
  switch (scheme) {
    case HfQuantScheme::kGptq:
    case HfQuantScheme::kGptqV2:
      q = {{"bits", l.bits},
           {"group_size", config_group(l)},
           {"desc_act", false},
           {"sym", l.symmetric},
           {"static_groups", false},
           {"true_sequential", true},
           {"lm_head", false},
           {"quant_method", "gptq"},
           {"checkpoint_format", scheme == HfQuantScheme::kGptq ? "gptq" : "gptq_v2"}};
      out.quantize_config = q.dump(2) + "\n";
      break;
    case HfQuantScheme::kAwq:
      q = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", l.group}, {"zero_point", true}, {"version", "gemm"},
           {"modules_to_not_convert", nullptr}};
      break;
    case HfQuantScheme::kCompressedTensors: {
      const bool grouped = l.granularity == IntLayout::Granularity::kGroup;
      q = ct_config("pack-quantized", ct_weights(l.bits, "int", l.symmetric, grouped ? json(l.group) : json(nullptr),
                                                 grouped ? "group" : "channel"));
      break;
    }
    case HfQuantScheme::kNone:
    case HfQuantScheme::kBnbNf4: break;
  }
  out.quantization_config = q.dump();
  return out;
}

}  // namespace calq::model
