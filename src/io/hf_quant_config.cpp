// quantization_config parsing (see hf_quant_config.h).
#include "io/hf_quant_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace calq::io {
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

// bitsandbytes (transformers' BitsAndBytesConfig): 4-bit NF4 with double quantization only.
bool flag(const json& q, const char* a, const char* b, const std::string& origin) {
  for (const char* key : {a, b}) {
    const auto it = q.find(key);
    if (it == q.end() || it->is_null()) continue;
    if (!it->is_boolean()) fail(ErrorKind::kFormat, "{}: quantization_config.{} must be true or false", origin, key);
    return it->get<bool>();
  }
  return false;
}

std::string bnb_text(const json& q, const char* key, const std::string& fallback, const std::string& origin) {
  const auto it = q.find(key);
  if (it == q.end() || it->is_null()) return fallback;
  if (!it->is_string()) fail(ErrorKind::kFormat, "{}: quantization_config.{} must be a string", origin, key);
  return it->get<std::string>();
}

HfQuantSpec parse_bnb(const json& q, const std::string& origin) {
  HfQuantSpec s{.kind = HfQuantSpec::Kind::kBnbNf4, .bits = 4, .group = 64, .symmetric = true, .origin = origin};
  if (flag(q, "load_in_8bit", "_load_in_8bit", origin)) {
    fail(ErrorKind::kUnsupported, "{}: quantization_config.load_in_8bit is true (LLM.int8() checkpoints); calq reads "
         "bitsandbytes 4-bit NF4 checkpoints", origin);
  }
  if (!flag(q, "load_in_4bit", "_load_in_4bit", origin)) {
    fail(ErrorKind::kUnsupported, "{}: quantization_config.load_in_4bit is not true; calq reads bitsandbytes 4-bit "
         "NF4 checkpoints", origin);
  }
  if (const std::string t = bnb_text(q, "bnb_4bit_quant_type", "fp4", origin); t != "nf4") {
    fail(ErrorKind::kUnsupported, "{}: quantization_config.bnb_4bit_quant_type '{}' (calq reads nf4)", origin, t);
  }
  if (!flag(q, "bnb_4bit_use_double_quant", "bnb_4bit_use_double_quant", origin)) {
    fail(ErrorKind::kUnsupported, "{}: quantization_config.bnb_4bit_use_double_quant is not true (calq reads NF4 with "
         "double quantization)", origin);
  }
  if (const std::string t = bnb_text(q, "bnb_4bit_quant_storage", "uint8", origin); t != "uint8") {
    fail(ErrorKind::kUnsupported, "{}: quantization_config.bnb_4bit_quant_storage '{}' (calq reads uint8)", origin, t);
  }
  if (const auto it = q.find("llm_int8_skip_modules"); it != q.end() && it->is_array()) {
    for (const json& m : *it) {
      if (m.is_string()) s.ignore.push_back(m.get<std::string>());
    }
  }
  return s;
}

}  // namespace

std::optional<HfQuantSpec> parse_hf_quant_config(std::string_view text, const std::string& origin,
                                                 bool quantize_config_file) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorKind::kFormat, "{}: not valid JSON: {}", origin, e.what());
  }
  json q;
  if (quantize_config_file) {
    q = j;
    if (q.is_object() && !q.contains("quant_method")) q["quant_method"] = "gptq";  // AutoGPTQ's own file
  } else {
    if (!j.is_object() || !j.contains("quantization_config")) return std::nullopt;
    q = j["quantization_config"];
  }
  if (!q.is_object()) fail(ErrorKind::kFormat, "{}: quantization_config must be an object", origin);
  const std::string method = string_key(q, "quant_method", "", origin, "quantization_config");
  if (method == "gptq") return parse_gptq(q, origin);
  if (method == "awq") return parse_awq(q, origin);
  if (method == "compressed-tensors") return parse_ct(q, origin);
  if (method == "bitsandbytes") return parse_bnb(q, origin);
  fail(ErrorKind::kUnsupported, "{}: quant_method '{}' is not one calq reads (gptq, awq, compressed-tensors, "
       "bitsandbytes)", origin, method);
}

}  // namespace calq::io
