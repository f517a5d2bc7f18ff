#include "cli/quantize_target.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/error.h"

namespace calq::cli {

void add_target_flags(CLI::App* cmd, TargetFlags& f) {
  cmd->add_option("--target-bpw", f.target_bpw,
                  "Bit allocation: choose a format per tensor from --candidates minimizing the predicted KLD "
                  "(--sensitivity) with the whole file at most this many bits per weight");
  cmd->add_option("--candidates", f.candidates, "--target-bpw: candidate formats, e.g. q3_k,q4_k,q5_k,q6_k,q8_0");
  cmd->add_option("--sensitivity", f.sensitivity,
                  "--target-bpw: sensitivity map JSON from calq sensitivity (per-tensor KLD of every candidate)");
  cmd->add_option("--sensitivity-text", f.sensitivity_text,
                  "--target-bpw without --sensitivity: measure the map now (as calq sensitivity --format CANDIDATES "
                  "with this --method, --stats/--calib and --observer) on this text; use calibration text, not the "
                  "text the result will be judged on");
  cmd->add_option("--sensitivity-windows", f.sensitivity_windows, "--sensitivity-text: windows of --sensitivity-ctx tokens")
      ->capture_default_str();
  cmd->add_option("--sensitivity-ctx", f.sensitivity_ctx, "--sensitivity-text: tokens per window")
      ->capture_default_str();
  cmd->add_option("--verify-text", f.verify_text,
                  "--target-bpw: after writing, measure KL(full precision || output) on this text and print it "
                  "beside the prediction");
  cmd->add_option("--verify-windows", f.verify_windows, "--verify-text: windows (default: the map's; 0 = all)");
  cmd->add_option("--verify-ctx", f.verify_ctx, "--verify-text: tokens per window (default: the map's ctx)");
}

TargetOptions TargetFlags::options() const {
  TargetOptions o{.bits_per_weight = target_bpw.value_or(0.0), .candidates = {}, .sensitivity = sensitivity,
                  .sensitivity_text = sensitivity_text, .sensitivity_windows = sensitivity_windows,
                  .sensitivity_ctx = sensitivity_ctx, .verify_text = verify_text, .verify_windows = verify_windows,
                  .verify_ctx = verify_ctx};
  size_t start = 0;
  while (!candidates.empty() && start <= candidates.size()) {
    size_t end = candidates.find(',', start);
    if (end == std::string::npos) end = candidates.size();
    o.candidates.push_back(candidates.substr(start, end - start));
    start = end + 1;
  }
  return o;
}

void check_target_flags(const TargetFlags& f) {
  if (!f.active()) {
    const char* stray = !f.candidates.empty()         ? "--candidates"
                        : !f.sensitivity.empty()        ? "--sensitivity"
                        : !f.sensitivity_text.empty()   ? "--sensitivity-text"
                        : !f.verify_text.empty()        ? "--verify-text"
                                                        : nullptr;
    if (stray != nullptr) fail(ErrorKind::kInvalidArgument, "{} goes with --target-bpw", stray);
    return;
  }
  if (!(*f.target_bpw > 0)) fail(ErrorKind::kInvalidArgument, "--target-bpw must be > 0");
  if (f.candidates.empty()) {
    fail(ErrorKind::kInvalidArgument, "--target-bpw needs --candidates, e.g. --candidates q3_k,q4_k,q5_k,q6_k,q8_0");
  }
  if (f.sensitivity.empty() == f.sensitivity_text.empty()) {
    fail(ErrorKind::kInvalidArgument,
         "--target-bpw needs one of --sensitivity FILE (the per-tensor KLD map written by `calq sensitivity --format "
         "{}`) or --sensitivity-text TEXT (measure that map now)",
         f.candidates);
  }
  if (f.sensitivity_windows < 1) fail(ErrorKind::kInvalidArgument, "--sensitivity-windows must be >= 1");
  if (f.sensitivity_ctx < 2) fail(ErrorKind::kInvalidArgument, "--sensitivity-ctx must be >= 2");
  std::error_code ec0;
  if (!f.sensitivity_text.empty() && !std::filesystem::is_regular_file(f.sensitivity_text, ec0)) {
    fail(ErrorKind::kIo, "{}: --sensitivity-text file not found", f.sensitivity_text);
  }
  if (f.verify_text.empty() && (f.verify_windows != -1 || f.verify_ctx != 0)) {
    fail(ErrorKind::kInvalidArgument, "--verify-windows and --verify-ctx go with --verify-text");
  }
  if (f.verify_windows < -1 || f.verify_ctx < 0 || f.verify_ctx == 1) {
    fail(ErrorKind::kInvalidArgument, "--verify-windows must be ≥ 0 and --verify-ctx ≥ 2");
  }
  std::error_code ec;
  if (!f.verify_text.empty() && !std::filesystem::is_regular_file(f.verify_text, ec)) {
    fail(ErrorKind::kIo, "{}: --verify-text file not found", f.verify_text);
  }
}

}  // namespace calq::cli
