#include "api/inspect_gguf.h"

#include <fmt/format.h>

#include <iterator>

#include <algorithm>

namespace calq::api {
namespace {

using io::GgufValue;
using io::GgufValueType;

constexpr size_t kMaxShownChars = 60;
constexpr size_t kMaxShownElements = 4;

// Printable ASCII as is; everything else (token strings hold arbitrary bytes) as \xNN.
std::string escaped(const std::string& s, size_t max_chars) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out + "\"";
}

bool is_unsigned_type(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 || t == GgufValueType::kUint32 ||
         t == GgufValueType::kUint64;
}
bool is_signed_type(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}

std::string scalar_text(const GgufValue& v) {
  if (v.type == GgufValueType::kString) return escaped(v.s, kMaxShownChars);
  if (v.type == GgufValueType::kBool) return v.u != 0 ? "true" : "false";
  if (is_unsigned_type(v.type)) return fmt::format("{}", v.u);
  if (is_signed_type(v.type)) return fmt::format("{}", v.i);
  // A float32 value is shown as the float it is (1e-05, not its widened 9.99999974e-06).
  if (v.type == GgufValueType::kFloat32) return fmt::format("{}", static_cast<float>(v.f));
  return fmt::format("{}", v.f);
}

std::string array_type_text(const GgufValue& v) {
  if (v.array_type != GgufValueType::kArray) return std::string(io::gguf_value_type_name(v.array_type));
  return "array";
}

std::string first_elements(const GgufValue& v) {
  std::vector<std::string> parts;
  const size_t n = std::min(kMaxShownElements, v.array_size());
  for (size_t k = 0; k < n; ++k) {
    switch (v.array_type) {
      case GgufValueType::kString: parts.push_back(escaped(v.strings[k], 24)); break;
      case GgufValueType::kBool: parts.push_back(v.uints[k] != 0 ? "true" : "false"); break;
      case GgufValueType::kFloat32: parts.push_back(fmt::format("{}", static_cast<float>(v.floats[k]))); break;
      case GgufValueType::kFloat64: parts.push_back(fmt::format("{}", v.floats[k])); break;
      case GgufValueType::kArray: parts.push_back(fmt::format("[{} x {}]", array_type_text(v.arrays[k]),
                                                              v.arrays[k].array_size())); break;
      default:
        parts.push_back(is_signed_type(v.array_type) ? fmt::format("{}", v.ints[k]) : fmt::format("{}", v.uints[k]));
    }
  }
  std::string out = fmt::format("{}", fmt::join(parts, ", "));
  if (v.array_size() > n) out += ", ...";
  return out;
}

std::string ne_string(const std::vector<int64_t>& ne) { return fmt::format("[{}]", fmt::join(ne, ", ")); }

// The LoRA adapters a model file carries (<weight>.lora_a / .lora_b, model/gguf_lora.h).
struct LoraSummary {
  int64_t linears = 0, min_rank = 0, max_rank = 0;
  uint64_t bytes = 0;
};
LoraSummary lora_summary(const io::GgufFile& file) {
  LoraSummary s;
  const auto ends_with = [](const std::string& n, std::string_view suffix) {
    return n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (const auto& t : file.tensors()) {
    const bool a = ends_with(t.name, ".lora_a");
    if (!a && !ends_with(t.name, ".lora_b")) continue;
    s.bytes += t.size_bytes;
    if (!a || t.ne.size() != 2) continue;
    s.min_rank = s.linears == 0 ? t.ne[1] : std::min(s.min_rank, t.ne[1]);
    s.max_rank = std::max(s.max_rank, t.ne[1]);
    ++s.linears;
  }
  return s;
}

}  // namespace

std::string gguf_value_summary(const GgufValue& v) {
  if (v.type != GgufValueType::kArray) return scalar_text(v);
  return fmt::format("[{} x {}] {}", array_type_text(v), v.array_size(), first_elements(v));
}

std::string gguf_listing_text(const io::GgufFile& file) {
  std::string text;
  const auto out = std::back_inserter(text);
  fmt::format_to(out, "file           {}\n", file.path().string());
  fmt::format_to(out, "format         GGUF v{}\n", file.version());
  fmt::format_to(out, "alignment      {}\n", file.alignment());
  // A file without tensors (a vocabulary-only GGUF) has no data section; gguf-py does not pad it.
  if (file.tensors().empty()) {
    fmt::format_to(out, "data offset    - (no tensors)\n");
  } else {
    fmt::format_to(out, "data offset    {}\n", file.data_offset());
  }
  fmt::format_to(out, "file size      {} bytes\n", file.file_size());
  fmt::format_to(out, "metadata keys  {}\n", file.metadata().size());
  fmt::format_to(out, "tensors        {}\n", file.tensors().size());
  if (const LoraSummary lora = lora_summary(file); lora.linears > 0) {
    fmt::format_to(out, "lora adapters  {} linears, rank {}, {} bytes (counted in bits per weight)\n", lora.linears,
                   lora.min_rank == lora.max_rank ? fmt::format("{}", lora.min_rank)
                                                  : fmt::format("{}-{}", lora.min_rank, lora.max_rank),
                   lora.bytes);
  }
  fmt::format_to(out, "\n");

  size_t key_width = 3;
  for (const auto& [key, value] : file.metadata()) key_width = std::max(key_width, key.size());
  fmt::format_to(out, "{:<{}}  {:<7}  {}\n", "key", key_width, "type", "value");
  for (const auto& [key, value] : file.metadata()) {
    fmt::format_to(out, "{:<{}}  {:<7}  {}\n", key, key_width, io::gguf_value_type_name(value.type), gguf_value_summary(value));
  }

  size_t name_width = 4;
  for (const auto& t : file.tensors()) name_width = std::max(name_width, t.name.size());
  int64_t total_elements = 0;
  uint64_t total_bytes = 0;
  fmt::format_to(out, "\n{:<{}}  {:<7}  {:<16}  {:>10}  {:>10}\n", "name", name_width, "type", "ne (ggml order)", "elements",
             "bytes");
  for (const auto& t : file.tensors()) {
    const std::string type = io::ggml_type_name(t.type);
    fmt::format_to(out, "{:<{}}  {:<7}  {:<16}  {:>10}  {:>10}\n", t.name, name_width, type, ne_string(t.ne), t.element_count(),
               t.size_bytes);
    total_elements += t.element_count();
    total_bytes += t.size_bytes;
  }
  fmt::format_to(out, "{:<{}}  {:<7}  {:<16}  {:>10}  {:>10}\n", "total", name_width, "", "", total_elements, total_bytes);
  return text;
}

nlohmann::ordered_json gguf_listing_json(const io::GgufFile& file) {
  nlohmann::ordered_json j;
  j["file"] = file.path().string();
  j["format"] = "gguf";
  j["gguf_version"] = file.version();
  j["alignment"] = file.alignment();
  j["data_offset"] = file.data_offset();
  j["file_size"] = file.file_size();
  auto& meta = j["metadata"] = nlohmann::ordered_json::array();
  for (const auto& [key, v] : file.metadata()) {
    nlohmann::ordered_json m;
    m["key"] = key;
    m["type"] = io::gguf_value_type_name(v.type);
    if (v.type == GgufValueType::kArray) {
      m["array_type"] = array_type_text(v);
      m["length"] = v.array_size();
    } else if (v.type == GgufValueType::kString) {
      m["value"] = v.s;  // written with invalid UTF-8 replaced (see the dump in cmd_inspect.cpp)
    } else if (v.type == GgufValueType::kBool) {
      m["value"] = v.u != 0;
    } else if (is_unsigned_type(v.type)) {
      m["value"] = v.u;
    } else if (is_signed_type(v.type)) {
      m["value"] = v.i;
    } else {
      m["value"] = v.f;
    }
    meta.push_back(std::move(m));
  }
  if (const LoraSummary lora = lora_summary(file); lora.linears > 0) {
    j["lora_adapters"] = {{"linears", lora.linears}, {"min_rank", lora.min_rank}, {"max_rank", lora.max_rank},
                          {"bytes", lora.bytes}};
  }
  auto& tensors = j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : file.tensors()) {
    std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
    tensors.push_back({{"name", t.name},
                       {"type", io::ggml_type_name(t.type)},
                       {"type_id", t.type},
                       {"ne", t.ne},
                       {"shape", shape},
                       {"elements", t.element_count()},
                       {"offset", t.offset},
                       {"size_bytes", t.size_bytes}});
  }
  return j;
}

}  // namespace calq::api
