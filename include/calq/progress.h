// Progress and cancellation of long operations (calibrate, quantize, sensitivity, evaluate).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

namespace calq {

struct Progress {
  // What is running: "load", "calibrate", "sensitivity", "allocate", "quantize", "method", "train"
  // (an optimizer step of a training method: done / total steps, the message with its loss and
  // ETA), "verify", "evaluate", or "warning"/"note" for a message that is not a unit of work.
  std::string_view stage;
  int64_t done = 0;   // units of the stage finished (tensors, layers, windows)
  int64_t total = 0;  // 0 when unknown
  // One human-readable line about the unit just finished ("" for plain counters), in the words of
  // the library's options, never a CLI flag. The CLI prints it; a notebook may log it.
  std::string_view message;
};

// Called on the thread that called the operation, between units of work. Return false to cancel:
// the operation stops at the next unit and throws calq::Error(ErrorKind::kCancelled); an output
// file is then not written (outputs are written to a temporary file and renamed at the end).
using ProgressFn = std::function<bool(const Progress&)>;

}  // namespace calq
