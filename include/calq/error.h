// calq::Error — the one typed error for problems that come from outside the program (files,
// configs, options), thrown by every calq function, the public API included. Programming errors
// are asserts, not Errors.
//
// Contract: the message names the offending file and, where there is one, the tensor, layer or
// option, e.g. "model.safetensors: tensor 'lm_head.weight': data offsets [0, 12) exceed ...".
// The CLI maps every Error to exit status 2; the Python package raises calq.Error.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace calq {

enum class ErrorKind {
  kIo,               // cannot open / read / write / rename a file
  kFormat,           // malformed file contents (headers, JSON, offsets, sizes)
  kUnsupported,      // well-formed but not supported (dtype, model_type, component type)
  kNotFound,         // a required tensor, key or file is missing
  kInvalidArgument,  // bad option value
  kCancelled,        // a progress callback asked to stop (nothing was written)
};

// "I/O error", "format error", ..., "cancelled".
std::string_view error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace calq
