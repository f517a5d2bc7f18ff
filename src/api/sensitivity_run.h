// The measurement behind `calq sensitivity` and `calq quantize --target-bpw` without a map file:
// statistics of the float model (a statistics file, or a calibration pass with float inputs), one whole-
// model quantization per format (rtn or gptq), then every tensor (or layer) swapped alone into the
// FP model and evaluated on windows of a text (pipeline/sensitivity.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "api/reporter.h"
#include "calq/calibrate.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "pipeline/sensitivity.h"
#include "quant/recipe.h"

namespace calq::api {

struct SensitivityRequest {
  std::string model;      // path of the full-precision model
  std::string eval_text;  // the text the KLD is measured on
  std::vector<const Format*> formats;
  quant::Recipe recipe;   // rtn or gptq only (transforms fold into neighbours: an Error)
  std::string observer = "minmax";
  const CalibrationData* calib = nullptr;  // calibrate now (text set); may be nullptr or empty
  std::string stats;                       // a statistics file, or ""
  bool use_importance = true;
  bool include_head = true;
  pipeline::Granularity granularity = pipeline::Granularity::kTensor;
  int64_t ctx = 512;
  int64_t max_windows = 8;
  bool exact = false;  // the exact path instead of the fast kernels (calq/evaluate.h, EvalJob::exact)
};

// Checks the request (methods, statistics for gptq, ctx) and measures the map. Errors from
// outside (files, flags, shapes) throw calq::Error.
pipeline::SensitivityMap measure_sensitivity_map(const SensitivityRequest& request, ThreadPool& pool, Reporter& report,
                                                 std::string* tokenizer_source = nullptr);

}  // namespace calq::api
