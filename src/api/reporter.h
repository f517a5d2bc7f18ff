// The progress callback of a job (calq/progress.h), wrapped: every report is a cancellation point.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "calq/progress.h"

namespace calq::api {

class Reporter {
 public:
  explicit Reporter(const ProgressFn& fn) : fn_(fn) {}
  // Calls the callback (if any); throws Error(kCancelled) naming `stage` when it returns false.
  void operator()(std::string_view stage, int64_t done, int64_t total, std::string_view message = {}) const;
  // A "warning" line: to the callback, and kept for the report.
  void warn(std::string message);
  const std::vector<std::string>& warnings() const { return warnings_; }
  bool active() const { return static_cast<bool>(fn_); }

 private:
  const ProgressFn& fn_;
  std::vector<std::string> warnings_;
};

}  // namespace calq::api
