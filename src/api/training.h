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

// The layer-sequential pass's own peak, made before any work (pipeline/sequential.h, layer_store.h):
// the larger of a layer's phase — its linears in float32, its statistics (Hessians when the recipe
// reads them, one per site), GPTQ's working copies of the widest site, the calibration hidden
// states and per-worker scratch, 256 MiB for the program — and the output head's (vocab × hidden
// float32 with the hidden states). Whatever the depth: finished layers go to the layer store.
// Reported as method "layer pass".
TrainingMemoryReport estimate_layer_pass_memory(const quant::Recipe& recipe, const model::Model& model,
                                                const CalibrationData& calibration, int64_t threads);

// kInvalidArgument Error, with the estimate's text and the number, when `estimate` is above what
// /proc/meminfo calls MemAvailable (no check where that cannot be read).
void check_available_memory(const TrainingMemoryReport& estimate);

// kInvalidArgument Error when an estimate is over max_memory (> 0): "qat-e2e needs an estimated
// 2.49 GiB (weights ..., ...), more than max_memory 1.00 GiB".
void check_max_memory(const std::vector<TrainingMemoryReport>& estimates, uint64_t max_memory);

// The records of the training steps' events (those with a training stage), in run order.
std::vector<TrainingRecord> training_records(const std::vector<quant::MethodEvent>& events);

}  // namespace calq::api
