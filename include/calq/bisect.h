// Diagnostics of a quantization:
//  * bisect(job): the fewest tensors of a quantized model that, restored to full precision (or
//    re-quantized to `restore_format`), bring KL(full precision ‖ hybrid) back to a goal —
//    target + tolerance — with the number of evaluations it took.
//  * calib_check(job): per-channel activation statistics of a calibration text against those
//    of the evaluation text, flagged when they drift beyond a threshold (statistics from a text
//    unlike the one the model will see may tune the quantization for other inputs).
// Both measure on windows of a text with the model's own tokenizer (or `tokenizer`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "calq/progress.h"

namespace calq {

struct BisectJob {
  std::string model;      // the full-precision model
  std::string quantized;  // a quantized model (GGUF) of the same architecture and shapes
  std::string eval_text;
  std::string tokenizer;  // tokenizer.json instead of the model's own ("" = the model's)
  double target = 0.0;    // KLD to come back to (0: the full-precision model)
  std::optional<double> tolerance;  // > 0; default: half the gap between target and KLD(quantized)
  std::string restore_format;       // "" = restore in full precision
  int64_t ctx = 512;
  int64_t max_windows = 8;  // 0 = the whole text
  std::string json_out;     // write the steps and the result here; "" = not
  // The forward passes on the exact path instead of the fast kernels (calq/evaluate.h, EvalJob::exact).
  bool exact = false;
  size_t threads = 0;
  ProgressFn progress;
};

struct BisectStep {
  std::vector<std::string> restored;  // tensor names
  double kld = 0;
  bool ok = false;  // at or under the goal
};

struct BisectReport {
  int64_t windows = 0;
  std::string restore_format;          // "f32" when restoring in full precision
  std::vector<std::string> candidates;  // tensors that differ from the restore source
  double kld_q = 0;                     // nothing restored
  double goal = 0;
  bool found = false;
  std::vector<std::string> restored;  // the set found
  double kld = 0;                     // with the set restored
  int64_t evaluations = 0;
  std::vector<BisectStep> steps;
  std::string json;
};

BisectReport bisect(const BisectJob& job);

struct CalibCheckJob {
  std::string model;
  std::string calib;      // the calibration text, or "generate:N" (see CalibrationData)
  std::string eval_text;  // the text the model will be judged (or used) on
  int64_t samples = 32;   // windows drawn from each text
  int64_t seq_len = 512;
  uint64_t seed = 0;
  std::string tokenizer;
  double threshold = 0.15;  // drift score above which the calibration text is flagged
  std::string json_out;
  size_t threads = 0;
  ProgressFn progress;
};

struct SiteDrift {
  int64_t layer = 0;  // -1: the head's input
  std::string site;   // "attn_in", ..., "head_in" (the linear inputs of a block)
  int64_t cols = 0;
  double absmax_median = 0, absmax_max = 0;
  double mean_abs_median = 0, mean_abs_max = 0;
  int64_t worst_channel = 0;
  bool flagged = false;
};

struct CalibCheckReport {
  std::vector<SiteDrift> sites;
  double score = 0;         // mean over sites of the median mean|x| drift
  double absmax_score = 0;  // the same for absmax
  double threshold = 0;
  bool flagged = false;
  std::string json;
};

CalibCheckReport calib_check(const CalibCheckJob& job);

}  // namespace calq
