// inspect(job) -> report: what a model file holds and, on request, its outlier statistics.
//  * A Hugging Face folder: architecture, hyper-parameters and tensor list, from headers only.
//  * A GGUF file: header, every metadata key and every tensor with its ggml type and ne.
//  * weights: per weight tensor min/max/mean/std/excess kurtosis, share beyond 6 sigma, per input
//    channel max |w| and outlier channels.
//  * activations: `samples` windows of `ctx` tokens of `text` through the model (evenly spaced over
//    the text's non-overlapping windows); per linear input the per-channel max |x|, max/median
//    ratio, channels above LLM.int8()'s threshold 6.0.
// The report holds the listing and tables as text (what `calq inspect` prints) and everything as
// JSON (per-channel vectors included).
#pragma once

#include <cstdint>
#include <string>

#include "calq/progress.h"

namespace calq {

struct InspectJob {
  std::string model;  // Hugging Face folder or GGUF file
  bool weights = false;
  bool activations = false;
  std::string text;       // activations: the text the windows come from
  std::string tokenizer;  // tokenizer.json instead of the model's own ("" = the model's)
  int64_t samples = 128;  // activations: windows
  int64_t ctx = 512;      // activations: tokens per window
  size_t top = 8;         // top channels listed per tensor/input in the JSON (the text shows 3)
  std::string json_out;   // write the JSON here; "" = not
  size_t threads = 0;
  ProgressFn progress;
};

struct InspectReport {
  std::string format;        // "hf" or "gguf"
  std::string architecture;  // "" for a GGUF file that does not say
  std::string text;          // listing and tables, as `calq inspect` prints them
  std::string json;
};

InspectReport inspect(const InspectJob& job);

}  // namespace calq
