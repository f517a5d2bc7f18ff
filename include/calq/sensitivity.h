// sensitivity(job) -> report: the KLD cost of quantizing each tensor (or layer) alone to each of
// some formats, everything else in full precision — the map a bit allocation reads
// (QuantizeJob::target.sensitivity). Each format quantizes the whole model once (rtn or gptq, with
// statistics of the float model), then every tensor is swapped alone into the full-precision model
// and evaluated on windows of a text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calq/calibrate.h"
#include "calq/progress.h"

namespace calq {

struct SensitivityJob {
  std::string model;                 // full-precision model
  std::string eval_text;             // the text the KLD is measured on (not the text results are judged on)
  std::vector<std::string> formats;  // e.g. {"q3_k", "q4_k", "q5_k", "q6_k", "q8_0"}
  std::string granularity = "tensor";  // or "layer"
  std::string method = "rtn";          // a weight quantizer: rtn or gptq (gptq needs statistics)
  std::string observer = "minmax";
  CalibrationData calibration;  // calibrate now (text set), or:
  std::string stats;            // a statistics file
  bool use_importance = true;
  bool include_head = true;  // the embedding and head in the map
  int64_t ctx = 512;
  int64_t max_windows = 8;  // 0 = the whole text
  std::string json_out;     // write the map (the file quantize reads) here; "" = not
  std::string svg_out;      // heat-map(s): one file per format (NAME-<format>.svg when several); "" = not
  // The forward passes on the exact path instead of the fast kernels (calq/evaluate.h, EvalJob::exact).
  bool exact = false;
  size_t threads = 0;
  ProgressFn progress;
};

struct SensitivityEntry {
  std::string tensor;  // GGUF name, or "blk.N" for a layer entry
  int64_t layer = -1;
  std::string role;
  int64_t params = 0;
  std::vector<double> kld;  // per format, mean KL nats per predicted token
};

struct SensitivityReport {
  std::vector<std::string> formats;
  std::vector<SensitivityEntry> entries;
  int64_t ctx = 0, windows = 0, evaluations = 0;
  double seconds = 0;
  std::string table;                 // ranked table, for printing
  std::string json;                  // the map as JSON (what json_out holds)
  std::vector<std::string> written;  // files written
};

SensitivityReport sensitivity(const SensitivityJob& job);

}  // namespace calq
