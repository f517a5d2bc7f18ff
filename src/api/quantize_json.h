// The JSON document of a quantize report (what QuantizeJob::json_out and `calq quantize --json`
// write); its keys are listed at QuantizeReport::json (calq/quantize.h).
#pragma once

#include <string>

#include "calq/quantize.h"

namespace calq::api {

std::string quantize_report_json(const QuantizeReport& report);

}  // namespace calq::api
