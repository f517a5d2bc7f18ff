// calq::Error — the one typed error for problems that come from outside the program
// (files, configs, flags). Programming errors are asserts, not Errors.
//
// Contract: the message names the offending file and, where there is one, the tensor or key,
// e.g. "model.safetensors: tensor 'lm_head.weight': data offsets [0, 12) exceed ...".
// The CLI maps every Error to exit status 2.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace calq {

enum class ErrorKind {
  kIo,               // cannot open / read / write / rename a file
  kFormat,           // malformed file contents (headers, JSON, offsets, sizes)
  kUnsupported,      // well-formed but not supported (dtype, model_type, component type)
  kNotFound,         // a required tensor, key or file is missing
  kInvalidArgument,  // bad flag or option value
};

std::string_view error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// fail(kind, "fmt {}", args...) throws calq::Error with a formatted message.
template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(kind, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace calq
