// quantize(job) -> report: a whole model into a GGUF file.
//
// Three forms, by which fields are set:
//  * `mix` (GGUF in): one of llama.cpp's mixes (q4_k_m, q3_k_s, ...) or one type for every weight,
//    optionally with an importance matrix (`imatrix`), as llama-quantize does. A mix with a method
//    chain other than "rtn", a recipe, calibration or a statistics file, an observer, rules, a head
//    format or activation quantization — or of a Hugging Face folder — runs the `format` form with
//    the mix's type per tensor (rules and head_format still first), so GPTQ or AWQ write llama.cpp's
//    mixes; `format`, a target and an imatrix are refused with it.
//  * `format` (Hugging Face folder or GGUF in): any registered number format for the linear weights,
//    a method chain or recipe (rtn, gptq, awq, smoothquant, rotate, ...), statistics from
//    calibration (`calibration`) or a statistics file (`stats`), per-tensor `rules`.
//  * `target.bits_per_weight` > 0: the `format` form with one format per tensor from a bit allocation
//    over `target.candidates` driven by a sensitivity map (a file, or measured now on a text).
// The output is a GGUF llama.cpp loads when every type is GGUF-native, else a calq GGUF; or, with
// `export_scheme` (format form), a Hugging Face folder in the layout vLLM, SGLang and transformers
// load: "gptq" (checkpoint format v1), "gptq-v2", "awq" (GEMM) or "compressed-tensors" — every
// linear in the one `format`, which the scheme must hold (int formats with fp16 scales: gptq 2/3/4/8
// bits, awq 4 bits in groups, compressed-tensors 4/8 bits and fp8-e4m3[-pt]); the embedding and head
// stay in the source's float dtype unless `head_format` says otherwise; tokenizer files are copied
// from a Hugging Face source. Checked before any work: the scheme fits the format, no target, no
// rules, no activation quantization, the folder is new (or `force`).
// It is written to a temporary file (folder) and renamed: an error or a cancellation leaves no partial
// output.
// Deterministic: the same job gives the same bytes for any thread count.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "calq/calibrate.h"
#include "calq/progress.h"

namespace calq {

// An option of one step of the method chain, e.g. {"gptq", "damp", "0.02"}; `value` is JSON
// ("0.02", "true", "20"). A step the chain does not have is an error.
struct MethodOption {
  std::string method;
  std::string key;
  std::string value;
};

struct TargetOptions {
  double bits_per_weight = 0;           // 0: no bit allocation
  std::vector<std::string> candidates;  // e.g. {"q3_k", "q4_k", "q5_k"}
  std::string sensitivity;              // a sensitivity map file (calq sensitivity), or:
  std::string sensitivity_text;         // measure the map now on windows of this text
  int64_t sensitivity_windows = 8;
  int64_t sensitivity_ctx = 512;
  std::string verify_text;      // after writing: measure the file's KLD on this text
  int64_t verify_windows = -1;  // -1: the map's windows (0: all)
  int64_t verify_ctx = 0;       // 0: the map's ctx
};

struct QuantizeJob {
  std::string model;  // Hugging Face folder or GGUF file
  std::string out;    // GGUF file to write (a folder with export_scheme)
  std::string export_scheme;                  // "" (GGUF), gptq, gptq-v2, awq, compressed-tensors
  uint64_t max_shard_bytes = 5'000'000'000;   // export_scheme: safetensors shards of at most this size
  // mix form
  std::string mix;
  std::string imatrix;  // llama.cpp imatrix.dat or GGUF imatrix
  // format form
  std::string format;
  std::string method = "rtn";  // chain "awq+gptq"; or:
  std::string recipe;          // recipe file (JSON); exclusive with a non-default `method`
  std::vector<MethodOption> method_options;
  std::string observer = "minmax";  // minmax, percentile, kl, mse
  double percentile = 99.99;
  std::vector<std::string> rules;  // "REGEX=FORMAT", first match wins
  std::string head_format;         // embedding/head format ("" = by the main format's bits)
  CalibrationData calibration;     // calibrate now (text set), or:
  std::string stats;               // a statistics file from calibrate()
  bool float_inputs = false;       // calibrate every layer on float activations (default: true sequential)
  bool use_importance = true;      // weight the rounding error by E[x²]
  std::string act_quant = "none";  // none, int8-token, int8-tensor, llm-int8
  float llm_int8_threshold = 6.0f;
  // Mixture-of-experts models: how experts get their statistics — "natural" (their routed tokens),
  // "all" (every calibration token through every expert, for statistics only), "rtn-fallback"
  // (experts routed fewer than expert_min_tokens tokens are rounded to nearest with the layer's
  // shared input importance) — and that threshold (0: the expert's input width).
  std::string expert_policy = "natural";
  int64_t expert_min_tokens = 0;
  TargetOptions target;
  // Bytes the layer pass or a training step (qat-block, qat-e2e) may hold at its estimated peak (0:
  // no limit). The estimates (the layer pass's: one layer in float32, its statistics, GPTQ's working
  // copies, the hidden states, or the output head in float32; a training step's:
  // grad::estimate_training_memory for the step's settings, the calibration samples and threads,
  // plus the model as loaded) are made before any work; over the limit is a kInvalidArgument Error
  // naming both figures. The layer pass's estimate above the machine's MemAvailable is refused too,
  // limit or not. Format and target forms (and a mix with a method).
  uint64_t max_memory = 0;
  std::string json_out;  // write the report's JSON here (atomically, after the model); "" = not
  size_t threads = 0;  // 0 = all cores
  bool force = false;  // overwrite an existing `out`
  ProgressFn progress;
};

struct TensorReport {
  std::string name;
  std::vector<int64_t> shape;
  std::string from_type;  // mix form: the input type
  std::string type;       // what was written ("f32" when kept float)
  bool quantized = false;
  bool fell_back = false;  // the asked type could not store the row length
  bool used_importance = false;
  double seconds = 0;
};

struct VerifyReport {
  int64_t windows = 0, ctx = 0;
  double predicted_kld = 0, measured_kld = 0, measured_kld_lo = 0, measured_kld_hi = 0;
  std::string text;  // the line the CLI prints
};

// One run of a training step: a qat-block layer, or qat-e2e's whole model.
struct TrainingRecord {
  std::string method;          // "qat-block", "qat-e2e"
  int64_t layer = -1;          // the decoder layer; -1: the whole model
  int64_t steps = 0;           // optimizer steps taken
  double loss_start = 0;       // qat-block: the layer's output MSE over all samples; qat-e2e: the KL
  double loss_written = 0;     // of what was trained, as written (= loss_start when nothing trained)
  bool trained = false;        // something was trainable
  bool kept = false;           // the trained result was written (it lowered the loss)
  double seconds = 0;
  std::vector<double> curve;   // the loss of every optimizer step (its batch), in order
};

// The preflight memory estimate of one training step (QuantizeJob::max_memory).
struct TrainingMemoryReport {
  std::string method;
  uint64_t bytes = 0;  // the total
  std::vector<std::pair<std::string, uint64_t>> parts;  // ("weights", bytes), ..., ("model", bytes)
  std::string text;    // "qat-e2e: estimated peak 2.49 GiB (weights ..., ...)"
};

struct QuantizeReport {
  std::string out;
  std::string form;         // "mix", "format", "target"
  std::string description;  // mix: its name and description; else format/allocation and recipe
  std::string recipe;       // the calq.recipe metadata written (format and target forms)
  double bits_per_weight = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  int64_t n_tensors = 0, n_quantized = 0, n_with_importance = 0, n_fallback = 0;
  std::vector<TensorReport> tensors;
  std::vector<std::string> method_events;  // one line per method step and group/tensor
  std::optional<std::string> calibration;  // "calibration 128 samples x 512 tokens: ..." when it ran
  std::string allocation;                  // the allocation table (target form)
  double predicted_kld = 0;                // target form
  std::optional<VerifyReport> verify;
  double seconds = 0, seconds_encode = 0, seconds_convert = 0, seconds_write = 0;
  double peak_rss_mib = 0;
  int threads = 0;
  std::vector<std::string> warnings;  // also sent to the progress callback as "warning"
  std::vector<TrainingRecord> training;               // format and target forms, in run order
  std::vector<TrainingMemoryReport> training_memory;  // one per training step of the recipe
  // The whole report as JSON (what json_out holds). Keys: "out", "form", "description", "recipe",
  // "bits_per_weight", "bytes_in", "bytes_out", "n_tensors", "n_quantized", "n_with_importance",
  // "n_fallback", "tensors" [{"name", "shape", "from_type", "type", "quantized", "fell_back",
  // "used_importance", "seconds"}], "method_events" [lines], "calibration" (line or null),
  // "predicted_kld", "verify" ({"windows", "ctx", "predicted_kld", "measured_kld",
  // "measured_kld_ci": [lo, hi]} or null), "seconds", "seconds_encode", "seconds_convert",
  // "seconds_write", "peak_rss_mib", "threads", "warnings", "training_memory" [{"method", "bytes",
  // "parts": {name: bytes}}], and "training" [{"method", "layer" (-1: the model), "steps",
  // "loss_start", "loss_written", "trained", "kept", "seconds", "curve": [loss per step]}].
  std::string json;
};

QuantizeReport quantize(const QuantizeJob& job);

}  // namespace calq
