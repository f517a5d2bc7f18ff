// LoRA adapters on a (quantized) base model, as PEFT adapter folders (adapter_model.safetensors,
// adapter_config.json, and calq's calq_adapter.json recording the base model's hash): the hash
// calq checks them against, what an evaluation loaded (EvalJob::adapter), and merging them into
// a new float GGUF.
//
// Contract of merge_adapters(job): loads `model` and the adapters of `adapter` (the base hash
// checked unless adapter_skip_hash_check), computes every adapted weight as the base weight
// (dequantized) + (lora_alpha / r)·B·A in float32, and writes a GGUF (`out`) whose every matrix
// (linears, embedding, head) is in `type` ("f16", default; "bf16"; "f32"), norms float32, with the
// model's tokenizer and calq's keys (calq.adapter.*). Its logits equal the adapted model's up to
// the rounding of `type`. Errors (nothing written): an existing `out` without force, the input as
// output, an unknown type, and every adapter-folder error (model/peft_adapter.h).
#pragma once

#include <cstdint>
#include <string>

#include "calq/progress.h"

namespace calq {

// The base model's hash that adapter folders record and are checked against:
//  * a GGUF file: the SHA-256 of the file (what `sha256sum model.gguf` prints);
//  * a Hugging Face folder: the SHA-256 of its *.safetensors files, in byte order of their names,
//    followed by config.json, concatenated (`cat $(LC_ALL=C ls *.safetensors) config.json | sha256sum`).
// Reads every byte of the weights. Errors name the path.
std::string model_sha256(const std::string& path);

// What was loaded onto a model from an adapter folder.
struct AdapterInfo {
  std::string folder;
  int64_t count = 0;  // adapted linears
  int64_t r = 0, rank_min = 0, rank_max = 0;
  double lora_alpha = 0;
  uint64_t bytes = 0;          // float32 A and B, counted in the model's bits per weight
  double bits_per_weight = 0;  // the adapters' share of the model's bits per weight
  bool hash_checked = false;   // false with adapter_skip_hash_check
  std::string base_model_sha256;  // recorded in the folder ("" when it has no calq_adapter.json)
};

struct AdapterMergeJob {
  std::string model;    // Hugging Face folder or GGUF file: the adapters' base
  std::string adapter;  // PEFT adapter folder
  std::string out;      // GGUF file to write
  std::string type = "f16";  // "f16", "bf16" or "f32"
  bool adapter_skip_hash_check = false;
  bool force = false;  // overwrite an existing `out`
  size_t threads = 0;
  ProgressFn progress;
};

struct AdapterMergeReport {
  std::string out, type;
  AdapterInfo adapters;
  int64_t n_params = 0;
  uint64_t bytes_out = 0;  // weights as written
  double bits_per_weight = 0;
  double seconds = 0;
};

AdapterMergeReport merge_adapters(const AdapterMergeJob& job);

}  // namespace calq
