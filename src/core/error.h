// fail(): throws calq::Error (include/calq/error.h, the one typed error for problems from outside the
// program) with a formatted message. The message names the offending file and, where there is one,
// the tensor, layer or option.
#pragma once

#include <fmt/format.h>

#include <string>
#include <utility>

#include "calq/error.h"  // ErrorKind, Error: the public definition

namespace calq {

// fail(kind, "fmt {}", args...) throws calq::Error with a formatted message.
template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(kind, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace calq
