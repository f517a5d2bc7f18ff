// check(path) -> report: whether llama.cpp's loader would accept a GGUF file (ggml types and
// block sizes, alignment, data inside the file, general.architecture, the llama/qwen2
// hyper-parameter and tokenizer keys, tensor names and shapes, no calq-specific tensors).
// A folder is a Hugging Face model: it checks that calq's reader takes it whole — config, every
// tensor's name, dtype and shape, and for a GPTQ / AWQ / compressed-tensors checkpoint every packed
// tensor against its quantization_config (an error finding with the reader's message otherwise) —
// and warns where vLLM's fast kernels would not take it (GPTQ Marlin: 4/8-bit symmetric, group size
// −1/32/64/128, outputs a multiple of 64 and inputs of 128 per tensor) or the tokenizer is missing.
//
// Contract: never throws for a file it cannot read or parse — that is an error finding; ok is
// true when there are no error findings (warnings alone pass).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace calq {

struct CheckFinding {
  std::string level;  // "error" or "warning"
  std::string where;  // the tensor or key concerned ("" for the file)
  std::string message;
};

struct CheckReport {
  std::string file;
  bool ok = false;
  bool calq_only = false;  // holds calq-specific tensors (only calq reads it)
  int64_t errors = 0, warnings = 0;
  std::vector<CheckFinding> findings;  // in the order checked
  std::string summary;                 // one line: what held or failed
  std::string json;                    // the report as JSON (`calq check --json`)
};

CheckReport check(const std::string& path);

}  // namespace calq
