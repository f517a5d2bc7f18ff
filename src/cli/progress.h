// ProgressBar — progress of long work on stderr. On a terminal it redraws one line
// ("[#####.....] 120/730 windows  2301 tok/s  ETA 0:42"); otherwise (CI logs, pipes) it prints
// a line at every 10% so logs stay short. Silent when disabled.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "calq/progress.h"

namespace calq::cli {

class ProgressBar {
 public:
  ProgressBar(std::string unit, int64_t tokens_per_item, bool enabled);
  void update(int64_t done, int64_t total);
  void finish();

 private:
  std::string unit_;
  int64_t tokens_per_item_;
  bool enabled_;
  bool tty_;
  int last_decile_ = -1;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

// The CLI's printer of an API job's progress (calq/progress.h), on stderr: "warning" lines as
// "<prefix>: warning: ..." (even when `quiet`); unless `quiet`, a stage's opening line (done 0) as "<prefix>: ...",
// "tensor" lines as they are, other units indented ("allocate" not at all: the commands print the
// allocation table from the report); units without a message drive a ProgressBar
// per stage (`tokens_per_item` for its tokens/s; only for the stage `tokens_stage` when that is
// not empty, the others counting items); "train" steps (done > 0) throttled: on a terminal one line
// redrawn at most 4 times a second, otherwise a run's first and last step and at most one line
// every 10 s between. Never cancels.
ProgressFn progress_printer(std::string prefix, bool quiet, int64_t tokens_per_item = 0, std::string tokens_stage = {});

}  // namespace calq::cli
