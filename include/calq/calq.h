// calq's public API: open a model, calibrate, quantize, evaluate, fine-tune LoRA adapters,
// sensitivity, bisect and calibration drift, inspect a model, check a GGUF file; number formats on
// arrays; LoRA adapter folders (merge into a model); synthetic random-weight models.
// Every function throws calq::Error (calq/error.h) for bad input; none prints.
#pragma once

#include "calq/adapters.h"
#include "calq/bisect.h"
#include "calq/calibrate.h"
#include "calq/check.h"
#include "calq/error.h"
#include "calq/evaluate.h"
#include "calq/finetune.h"
#include "calq/formats.h"
#include "calq/inspect.h"
#include "calq/model.h"
#include "calq/progress.h"
#include "calq/quantize.h"
#include "calq/sensitivity.h"
#include "calq/synth.h"

namespace calq {
// The library's version, "0.1.0".
const char* version();
}  // namespace calq
