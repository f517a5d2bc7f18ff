// The forms of calq::quantize (calq/quantize.h), one file each: quantize_mix.cpp (llama.cpp's
// mixes) and quantize_format.cpp (any format, methods, bit allocation).
#pragma once

#include <cstdint>
#include <string>

#include "api/reporter.h"
#include "calq/quantize.h"

namespace calq::api {

QuantizeReport quantize_mix(const QuantizeJob& job, Reporter& report);
QuantizeReport quantize_format(const QuantizeJob& job, Reporter& report);

}  // namespace calq::api
