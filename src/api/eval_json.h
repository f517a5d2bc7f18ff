// The JSON document of an evaluation report (what `calq eval --json` and EvalJob::json_out write):
// without a reference, one model's perplexity run; with one, the comparison ("candidates"); then
// "multiple_choice" and "generate" when those ran, and "warnings".
#pragma once

#include <string>

#include "calq/evaluate.h"

namespace calq::api {

std::string eval_report_json(const EvalReport& report);

}  // namespace calq::api
