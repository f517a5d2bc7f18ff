// The calibration flags shared by `calq calibrate`, `calq quantize --format` and `calq
// sensitivity`: --calib, --samples, --seq-len, --seed, --tokenizer (calq::CalibrationData).
#pragma once

#include <CLI/CLI.hpp>

#include "calq/calibrate.h"

namespace calq::cli {

using CalibFlags = CalibrationData;

void add_calib_flags(CLI::App* cmd, CalibFlags& flags);

}  // namespace calq::cli
