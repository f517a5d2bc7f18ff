#include "core/error.h"

namespace calq {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kIo: return "I/O error";
    case ErrorKind::kFormat: return "format error";
    case ErrorKind::kUnsupported: return "unsupported";
    case ErrorKind::kNotFound: return "not found";
    case ErrorKind::kInvalidArgument: return "invalid argument";
    case ErrorKind::kCancelled: return "cancelled";
  }
  return "error";
}

}  // namespace calq
