// error_of(fn): the message of the calq::Error that fn throws, for tests that check error texts.
#pragma once

#include <functional>
#include <string>

#include "core/error.h"

namespace calq::testing {

// The Error's what() ("" when fn throws none; other exceptions propagate); its kind into *kind
// when kind is not null.
inline std::string error_of(const std::function<void()>& fn, ErrorKind* kind = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (kind != nullptr) *kind = e.kind();
    return e.what();
  }
  return "";
}

}  // namespace calq::testing
