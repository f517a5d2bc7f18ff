// ProgressBar — progress of long work on stderr. On a terminal it redraws one line
// ("[#####.....] 120/730 windows  2301 tok/s  ETA 0:42"); otherwise (CI logs, pipes) it prints
// a line at every 10% so logs stay short. Silent when disabled.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

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

}  // namespace calq::cli
