// The calibration samples of a job (calq::CalibrationData): io::load_calibration_set with the
// model's EOS between documents, checked against the model's vocabulary.
#pragma once

#include "api/reporter.h"
#include "calq/calibrate.h"
#include "io/dataset/calib_data.h"
#include "io/tokenizer.h"
#include "model/config.h"

namespace calq::api {

// Warns (reporter) below 128 samples, the smallest count the literature advises.
io::CalibrationSet load_calibration(const CalibrationData& data, const io::Tokenizer& tokenizer,
                                    const model::ModelConfig& config, Reporter& reporter);

}  // namespace calq::api
