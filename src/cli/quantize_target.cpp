#include "cli/quantize_target.h"

namespace calq::cli {

void add_target_flags(CLI::App* cmd, TargetOptions& t) {
  cmd->add_option("--target-bpw", t.bits_per_weight,
                  "Bit allocation: choose a format per tensor from --candidates minimizing the predicted KLD "
                  "(--sensitivity) with the whole file at most this many bits per weight")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--candidates", t.candidates, "--target-bpw: candidate formats, e.g. q3_k,q4_k,q5_k,q6_k,q8_0")
      ->delimiter(',');
  cmd->add_option("--sensitivity", t.sensitivity,
                  "--target-bpw: sensitivity map JSON from calq sensitivity (per-tensor KLD of every candidate)");
  cmd->add_option("--sensitivity-text", t.sensitivity_text,
                  "--target-bpw without --sensitivity: measure the map now (as calq sensitivity --format CANDIDATES "
                  "with this --method, --stats/--calib and --observer) on this text; use calibration text, not the "
                  "text the result will be judged on");
  cmd->add_option("--sensitivity-windows", t.sensitivity_windows, "--sensitivity-text: windows of --sensitivity-ctx tokens")
      ->capture_default_str();
  cmd->add_option("--sensitivity-ctx", t.sensitivity_ctx, "--sensitivity-text: tokens per window")
      ->capture_default_str();
  cmd->add_option("--verify-text", t.verify_text,
                  "--target-bpw: after writing, measure KL(full precision || output) on this text and print it "
                  "beside the prediction");
  cmd->add_option("--verify-windows", t.verify_windows, "--verify-text: windows (default: the map's; 0 = all)");
  cmd->add_option("--verify-ctx", t.verify_ctx, "--verify-text: tokens per window (default: the map's ctx)");
}

}  // namespace calq::cli
