// `calq quantize --target-bpw B --candidates LIST --sensitivity FILE [--verify-text FILE]`: the
// flags of quantize()'s bit-allocation form (calq::TargetOptions; the work is in api/target_alloc.h).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "calq/quantize.h"

namespace calq::cli {

struct TargetFlags {
  std::optional<double> target_bpw;
  std::string candidates;   // "q3_k,q4_k,q5_k"
  std::string sensitivity;  // JSON from calq sensitivity
  std::string sensitivity_text;     // or: measure the map now on this text (cli/sensitivity_run.h)
  int64_t sensitivity_windows = 8;  // windows of sensitivity_text
  int64_t sensitivity_ctx = 512;    // tokens per window of sensitivity_text
  std::string verify_text;
  int64_t verify_windows = -1;  // -1: the map's windows (0 there: all)
  int64_t verify_ctx = 0;       // 0: the map's ctx
  bool active() const { return target_bpw.has_value(); }
  TargetOptions options() const;  // for calq::quantize
};

void add_target_flags(CLI::App* cmd, TargetFlags& flags);

// Flag combinations, before any work: the other flags need --target-bpw, which needs
// --candidates and one of --sensitivity (a map file) or --sensitivity-text (measure the map now);
// a --verify-text file must exist. Error otherwise.
void check_target_flags(const TargetFlags& flags);

}  // namespace calq::cli
