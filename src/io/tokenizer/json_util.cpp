#include "io/tokenizer/json_util.h"

#include "core/error.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

JsonPath JsonPath::key(std::string_view name) const {
  return JsonPath(origin_, path_.empty() ? std::string(name) : path_ + "." + std::string(name));
}

JsonPath JsonPath::index(size_t i) const {
  return JsonPath(origin_, fmt::format("{}[{}]", path_, i));
}

void JsonPath::format_error(std::string_view what) const {
  if (path_.empty()) fail(ErrorKind::kFormat, "{}: {}", origin_, what);
  fail(ErrorKind::kFormat, "{}: {}: {}", origin_, path_, what);
}

void JsonPath::unsupported(std::string_view kind, std::string_view type) const {
  fail(ErrorKind::kUnsupported, "{}: {}: unsupported {} type '{}'", origin_, path_, kind, type);
}

const Json& require_object(const Json& value, const JsonPath& at) {
  if (!value.is_object()) at.format_error(fmt::format("expected a JSON object, got {}", value.type_name()));
  return value;
}

const Json& require_array(const Json& value, const JsonPath& at) {
  if (!value.is_array()) at.format_error(fmt::format("expected a JSON array, got {}", value.type_name()));
  return value;
}

const Json& require(const Json& value, const JsonPath& at, std::string_view name) {
  require_object(value, at);
  const auto it = value.find(name);
  if (it == value.end()) at.format_error(fmt::format("missing required key '{}'", name));
  return *it;
}

std::string require_string(const Json& value, const JsonPath& at, std::string_view name) {
  const Json& member = require(value, at, name);
  if (!member.is_string()) at.key(name).format_error("expected a string");
  return member.get<std::string>();
}

std::optional<std::string> optional_string(const Json& value, const JsonPath& at,
                                           std::string_view name) {
  require_object(value, at);
  const auto it = value.find(name);
  if (it == value.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) at.key(name).format_error("expected a string or null");
  return it->get<std::string>();
}

bool optional_bool(const Json& value, const JsonPath& at, std::string_view name, bool fallback) {
  require_object(value, at);
  const auto it = value.find(name);
  if (it == value.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) at.key(name).format_error("expected a boolean");
  return it->get<bool>();
}

int64_t require_int(const Json& value, const JsonPath& at, std::string_view name) {
  const Json& member = require(value, at, name);
  if (!member.is_number_integer()) at.key(name).format_error("expected an integer");
  return member.get<int64_t>();
}

int64_t optional_int(const Json& value, const JsonPath& at, std::string_view name, int64_t fallback) {
  require_object(value, at);
  const auto it = value.find(name);
  if (it == value.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) at.key(name).format_error("expected an integer");
  return it->get<int64_t>();
}

std::string component_type(const Json& value, const JsonPath& at) {
  return require_string(value, at, "type");
}

char32_t require_char(const Json& value, const JsonPath& at, std::string_view name) {
  const std::string text = require_string(value, at, name);
  if (text.empty() || !is_valid_utf8(text)) at.key(name).format_error("expected one character");
  size_t pos = 0;
  const char32_t c = next_code_point(text, pos);
  if (pos != text.size()) at.key(name).format_error("expected exactly one character");
  return c;
}

}  // namespace calq::io::tok
