// JSON access for tokenizer.json with errors that name the file and the JSON path of the value.
//
// Contract: every accessor either returns the value or throws calq::Error — kFormat for a missing
// required key or a value of the wrong JSON type, with the message "<origin>: <path>: <what>".
#pragma once

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace calq::io::tok {

using Json = nlohmann::json;

// Where a JSON value sits: the file it came from and its path, e.g. "pre_tokenizer.pretokenizers[1]".
class JsonPath {
 public:
  JsonPath(std::string_view origin, std::string path) : origin_(origin), path_(std::move(path)) {}

  JsonPath key(std::string_view name) const;
  JsonPath index(size_t i) const;
  const std::string& path() const { return path_; }
  std::string_view origin() const { return origin_; }

  [[noreturn]] void format_error(std::string_view what) const;
  // kUnsupported "<origin>: <path>: unsupported <kind> type '<type>'".
  [[noreturn]] void unsupported(std::string_view kind, std::string_view type) const;

 private:
  std::string_view origin_;  // owned by the caller for the duration of loading
  std::string path_;
};

// `value` must be an object holding `name`; returns that member.
const Json& require(const Json& value, const JsonPath& at, std::string_view name);
const Json& require_object(const Json& value, const JsonPath& at);
const Json& require_array(const Json& value, const JsonPath& at);

std::string require_string(const Json& value, const JsonPath& at, std::string_view name);
// Missing or null -> nullopt; any other non-string -> kFormat.
std::optional<std::string> optional_string(const Json& value, const JsonPath& at,
                                           std::string_view name);
// Missing or null -> fallback.
bool optional_bool(const Json& value, const JsonPath& at, std::string_view name, bool fallback);
int64_t require_int(const Json& value, const JsonPath& at, std::string_view name);
int64_t optional_int(const Json& value, const JsonPath& at, std::string_view name, int64_t fallback);

// The component's "type" string (required).
std::string component_type(const Json& value, const JsonPath& at);

// A string holding exactly one Unicode scalar (Metaspace replacement, Strip content, ...).
char32_t require_char(const Json& value, const JsonPath& at, std::string_view name);

}  // namespace calq::io::tok
