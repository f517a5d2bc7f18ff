// quantize()'s plumbing around the training steps (qat-block, qat-e2e): the preflight memory
// estimate and its max_memory check, made before any work, and the report's training records.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calq/quantize.h"
#include "model/model.h"
#include "quant/method.h"
#include "quant/recipe.h"

namespace calq::api {

// "2.49 GiB", "512.0 MiB", "900 bytes".
std::string format_bytes(uint64_t bytes);

// One estimate per training step of `recipe` (Method::training_memory) for `model` (its storage as
// loaded is added as "model"), the job's calibration samples and seq_len, and `threads`.
std::vector<TrainingMemoryReport> estimate_training_memory(const quant::Recipe& recipe, const model::Model& model,
                                                           const CalibrationData& calibration, int64_t threads);

// kInvalidArgument Error when an estimate is over max_memory (> 0): "qat-e2e needs an estimated
// 2.49 GiB (weights ..., ...), more than max_memory 1.00 GiB".
void check_max_memory(const std::vector<TrainingMemoryReport>& estimates, uint64_t max_memory);

// The records of the training steps' events (those with a training stage), in run order.
std::vector<TrainingRecord> training_records(const std::vector<quant::MethodEvent>& events);

}  // namespace calq::api
