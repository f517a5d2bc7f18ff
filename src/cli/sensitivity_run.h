// The measurement behind `calq sensitivity` and `calq quantize --target-bpw` without a map file:
// statistics of the float model (a --stats file, or a --calib pass with float inputs), one whole-
// model quantization per format (rtn or gptq), then every tensor (or layer) swapped alone into the
// FP model and evaluated on windows of a text (pipeline/sensitivity.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/calib_flags.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "pipeline/sensitivity.h"
#include "quant/recipe.h"

namespace calq::cli {

struct SensitivityRequest {
  std::string model;      // path of the full-precision model
  std::string eval_text;  // the text the KLD is measured on
  std::vector<const Format*> formats;
  quant::Recipe recipe;   // rtn or gptq only (transforms fold into neighbours: an Error)
  std::string observer = "minmax";
  const CalibFlags* calib = nullptr;  // --calib (and its sampling flags); may be empty
  std::string stats;                  // --stats file, or ""
  bool use_importance = true;
  bool include_head = true;
  pipeline::Granularity granularity = pipeline::Granularity::kTensor;
  int64_t ctx = 512;
  int64_t max_windows = 8;
  bool quiet = false;
  std::string progress_prefix = "calq sensitivity";  // for stderr lines
};

// Checks the request (methods, statistics for gptq, ctx) and measures the map. Errors from
// outside (files, flags, shapes) throw calq::Error.
pipeline::SensitivityMap measure_sensitivity_map(const SensitivityRequest& request, ThreadPool& pool,
                                                 std::string* tokenizer_source = nullptr);

}  // namespace calq::cli
