// synthesize(job) -> report: a model of any shape of a supported architecture with deterministic
// random weights and a small generated tokenizer, written as a Hugging Face folder and, on
// request, as a GGUF file (src/model/synth.h says how the weights are drawn and scaled).
//
// Contract: the same job (seed included) gives the same tensors on any machine and for any thread
// count. The folder holds config.json, model.safetensors (in `dtype`: "f32" or "bf16"; shards above
// 5 GB), tokenizer.json and tokenizer_config.json, and loads with calq and transformers alike; the
// GGUF (llama.cpp's layout, `gguf_type` "f32", "f16" or "bf16" for the matrices, norms and biases
// F32) carries the tokenizer converted as llama.cpp's converter would, so llama.cpp loads it. With
// dtype "bf16" the weights are bf16 numbers, which an F32 GGUF holds exactly. `weights` "outliers"
// draws them with the structure of trained models (row scales, outlier columns, norms whose few
// recurring channels are 10-50× the others: src/model/synth.h); "uniform" keeps the bytes of before.
// Memory: the folder is written tensor by tensor, never holding the model (about the largest
// tensor: 1 GB for Llama-3-8B's shapes in bf16), with a "tensor" progress line per tensor; the GGUF
// is made from the whole model in float32, so a job with `gguf` is refused up front when that
// (4 bytes a parameter) exceeds the memory available (MemAvailable in /proc/meminfo).
// Errors (nothing written): an unknown architecture, hyper-parameters that do not fit together
// (the message names the field), an unknown `weights`, an existing output without `force`, a GGUF
// that would not fit in memory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "calq/progress.h"

namespace calq {

struct SynthJob {
  std::string arch = "llama";  // config.json model_type: "llama", "qwen3", "mixtral", "qwen2_moe", ...
  int64_t layers = 2;
  int64_t hidden = 64;
  int64_t heads = 4;
  int64_t kv_heads = 0;  // 0: heads
  int64_t head_dim = 0;  // 0: hidden / heads
  int64_t ffn = 128;     // intermediate size
  int64_t vocab = 320;   // at least 260 (the tokenizer's 3 specials, 256 byte tokens and "▁")
  int64_t sliding_window = 0;  // 0: none (only architectures with a window rule take one)
  bool tied = false;           // tie the output head to the embedding
  int64_t max_position = 4096;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  // Rotary scaling: "" (none), "linear" (rope_factor) or "llama3" (all four, as Llama 3.1 writes).
  std::string rope_scaling;
  double rope_factor = 8.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;
  // Mixture-of-experts architectures only (0 = default; an error for a dense one): experts per
  // layer (4), picked per token (2), each expert's width (ffn), the shared expert's width (ffn;
  // qwen2_moe), renormalising the picked weights (default: what llama.cpp does for the type).
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  int64_t expert_ffn = 0;
  int64_t shared_ffn = 0;
  std::optional<bool> norm_topk_prob;
  uint64_t seed = 0;
  std::string dtype = "f32";  // of the Hugging Face folder (and of the weights): "f32" or "bf16"
  std::string weights = "uniform";  // "uniform" or "outliers" (src/model/synth.h)
  std::string out;            // Hugging Face folder to write (required)
  std::string gguf;           // GGUF file to write too ("" = none)
  std::string gguf_type = "f32";  // matrices of the GGUF: "f32", "f16" or "bf16"
  bool force = false;             // replace existing outputs
  size_t threads = 0;
  ProgressFn progress;
};

struct SynthReport {
  std::string arch, out, gguf;
  std::string config_json;  // the folder's config.json
  int64_t n_params = 0;
  int64_t vocab = 0;
  uint64_t bytes_hf = 0, bytes_gguf = 0;  // sizes of what was written
  double seconds = 0;
};

SynthReport synthesize(const SynthJob& job);

}  // namespace calq
