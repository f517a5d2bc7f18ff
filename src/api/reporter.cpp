#include "api/reporter.h"

#include "core/error.h"

namespace calq::api {

void Reporter::operator()(std::string_view stage, int64_t done, int64_t total, std::string_view message) const {
  if (!fn_) return;
  if (!fn_(Progress{.stage = stage, .done = done, .total = total, .message = message})) {
    fail(ErrorKind::kCancelled, "cancelled by the progress callback during {} ({} of {})", stage, done, total);
  }
}

void Reporter::warn(std::string message) {
  (*this)("warning", 0, 0, message);
  warnings_.push_back(std::move(message));
}

}  // namespace calq::api
