// Sensitivity map: how much each weight tensor (or each decoder layer) alone costs when quantized
// to a format, everything else kept in full precision — KL(FP ‖ hybrid) per predicted token on a
// fixed evaluation slice (kld_eval.h). `calq sensitivity` and `--target-bpw` bit allocation read it.
//
// Input: the full-precision model and, per format, the same model quantized WHOLE by the pipeline
// (model_quantize.h; one quantization per format instead of one per tensor). Entry e, format f is
// then the FP model with e's weights swapped for those of the f-quantized model (tensor_swap.h);
// all hybrids of all formats are evaluated in one KldEvaluator call, so the reference runs once
// per window.
//
// Entries, in model order: granularity kTensor — every linear weight, the token embedding (tied:
// also the head) and the untied head; kLayer — one entry per decoder layer ("blk.3": its seven
// linear weights swapped together) plus the embedding/head entries as in kTensor. A tensor that
// no variant stores in another format than the FP model (the pipeline kept it float) is left out.
//
// Contract: every variant has the FP model's layout (check_same_layout, else Error); results are
// bit-identical for any thread count (KldEvaluator).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "formats/format.h"
#include "model/model.h"
#include "pipeline/kld_eval.h"

namespace calq::pipeline {

enum class Granularity { kTensor, kLayer };
std::string_view granularity_name(Granularity g);  // "tensor", "layer"
Granularity granularity_by_name(std::string_view name);  // Error listing both otherwise

struct QuantizedVariant {
  const Format* format = nullptr;       // the format asked for (its name keys the results)
  const model::Model* model = nullptr;  // the whole model quantized to it
};

struct SensitivityEntry {
  std::string tensor;  // GGUF name ("blk.0.attn_q.weight"), "blk.N" for a layer entry
  int64_t layer = -1;  // -1: embedding / head
  std::string role;    // "attn_q", ..., "ffn_down", "token_embd", "output"; "layer" for a layer entry
  int64_t params = 0;
  std::vector<double> kld;                // per variant: mean KL nats per predicted token
  std::vector<uint64_t> bytes;            // per variant: bytes of the swapped weights as stored
  std::vector<std::string> stored_as;     // per variant: format actually stored (a fallback may differ)
};

struct SensitivityMap {
  Granularity granularity = Granularity::kTensor;
  std::vector<std::string> formats;  // variant order
  std::vector<SensitivityEntry> entries;
  int64_t ctx = 0;
  int64_t windows = 0;
  int64_t evaluations = 0;  // hybrid models evaluated
  double seconds = 0;
};

struct SensitivityOptions {
  Granularity granularity = Granularity::kTensor;
  bool include_head = true;
};

SensitivityMap measure_sensitivity(const model::Model& fp, std::span<const QuantizedVariant> variants,
                                   const SensitivityOptions& options, KldEvaluator& evaluator);

}  // namespace calq::pipeline
