// evaluate(job) -> report: models against a full-precision reference on the same token ids
// (ΔPPL, KL(reference‖model), top-1 agreement, accuracy and ECE, each with a 95% interval over
// windows), or one model's perplexity; HellaSwag-style multiple choice and greedy generation on
// the same models. The report's `json` is the document `calq eval --json` writes.
//
// Contract: every model (and the reference) is evaluated on the token ids of one tokenizer —
// `tokenizer` when given, else the reference's own (without a reference, the model's own: for a
// GGUF file its embedded vocabulary, segmented as llama.cpp does). Intervals are NaN at both ends
// when undefined (one window). Results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "calq/adapters.h"
#include "calq/progress.h"

namespace calq {

struct EvalJob {
  std::string reference;            // full-precision model ("" = perplexity of models[0] alone)
  std::vector<std::string> models;  // Hugging Face folders or GGUF files
  std::string text;                 // plain-text file for perplexity / comparison ("" = none)
  int64_t ctx = 512;                // window length in tokens (protocol gptq-windows)
  int64_t max_windows = 0;          // 0 = all
  std::string tokenizer;            // tokenizer.json for every model ("" = the reference's own)
  std::vector<std::string> kv_cache;  // KV-cache formats of the models (not the reference); each model runs once per entry
  std::string hellaswag;            // multiple-choice JSONL file ("" = none)
  int64_t mc_items = 0;             // score at most this many items (0 = all)
  std::vector<std::string> generate;  // prompts for greedy generation by every model
  int64_t max_new_tokens = 48;
  std::string json_out;  // write the report's JSON here (atomically); "" = not
  // LoRA adapters (a PEFT folder, calq/adapters.h) loaded onto every model of `models` (not the
  // reference); their base hash (calq_adapter.json) must be the model's unless
  // adapter_skip_hash_check. Their bytes count in the models' bits per weight.
  std::string adapter;
  bool adapter_skip_hash_check = false;
  // false (default): the models run on the fast kernels — quantized weights on integer dot
  // products where their format has an integer codec (every GGUF block type: x quantized per block
  // to 8 bits, as llama.cpp does), float32/f16/bf16 weights on calq's AVX-512 FMA kernel where the
  // CPU has it; true: the exact path (OpenBLAS sgemm, quantized weights dequantized to float32).
  // The reference runs the same float kernel but never the integer kernels.
  bool exact = false;
  size_t threads = 0;
  ProgressFn progress;
};

struct Interval {
  double lo = 0, hi = 0;
};

// What simulated activation quantization did in one linear of a model (LLM.int8(): outlier
// columns kept in float; int8-tensor: values its static scale saturated), summed over the run.
struct ActQuantCounts {
  int64_t layer = 0;  // -1: the output head
  std::string role, kind;
  int64_t calls = 0, rows = 0, columns = 0, outlier_columns = 0, saturated = 0;
  double outlier_share = 0;
};

struct ModelScore {
  std::string model;  // path as given
  std::string name;   // display name (file name, plus " kv:<format>")
  std::string format, architecture, kv_cache;
  double bits_per_weight = 0;
  double ppl = 0, ppl_ref = 0, delta_ppl = 0;
  Interval delta_ppl_ci;
  double ppl_ratio = 0;
  Interval ppl_ratio_ci;
  double kld_mean = 0;
  Interval kld_mean_ci;
  double kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_p999 = 0, kld_max = 0;
  double top1_agreement = 0;
  Interval top1_agreement_ci;
  double accuracy = 0, ece = 0, ece_delta = 0;
  int64_t flips_lost = 0, flips_gained = 0;
  std::vector<double> nll_per_window, kld_per_window;  // sums per window
  std::vector<int64_t> top1_per_window;                 // agreeing positions per window
  std::vector<ActQuantCounts> activation_quant;         // empty without activation quantization
  std::optional<AdapterInfo> adapters;                  // EvalJob::adapter's, when given
  double forward_seconds = 0, tokens_per_second = 0;
};

// Multiple choice: per model (the reference first when there is one).
struct ChoiceScore {
  std::string model;  // display name
  double acc = 0, acc_norm = 0;
  Interval acc_ci, acc_norm_ci;
  // Share of items answered as the reference did (models after the reference only).
  std::optional<double> agreement, agreement_norm;
  Interval agreement_ci, agreement_norm_ci;
  std::vector<int64_t> chosen, chosen_norm;  // per item
};

struct ChoiceReport {
  std::string file;
  int64_t n_items = 0;
  int64_t n_fallback_endings = 0;  // endings tokenized on their own
  std::vector<ChoiceScore> models;
  double seconds = 0;
};

struct Generation {
  struct Output {
    std::string model;  // display name
    std::vector<int32_t> ids;
    std::string text;
    int64_t same_prefix_as_first = 0;  // leading tokens equal to the first model's
  };
  std::string prompt;
  std::vector<int32_t> prompt_ids;  // with the tokenizer's special tokens (e.g. BOS)
  std::vector<Output> outputs;      // the reference first when there is one
};

struct EvalReport {
  std::string reference, tokenizer, text;
  // Perplexity / comparison (when `text` was given).
  bool has_text = false;
  int64_t n_tokens = 0, n_windows = 0, n_predicted = 0, ctx = 0;
  std::string token_ids_sha256;
  std::vector<int32_t> first_ids;  // the first 64 token ids
  double ppl_ref = 0, ref_accuracy = 0, ref_ece = 0;
  std::vector<double> nll_ref_per_window;
  double ref_forward_seconds = 0, ref_tokens_per_second = 0;
  std::string reference_format, reference_architecture;
  std::vector<ModelScore> models;
  std::optional<ChoiceReport> multiple_choice;
  std::vector<Generation> generations;
  std::vector<std::string> warnings;  // e.g. a GGUF vocabulary that segments unlike its source tokenizer
  double seconds = 0;
  int threads = 0;
  // Which matmul kernels ran: the CPU's kernel level in use ("avx512-vnni", "avx-vnni", "avx2",
  // "scalar"; CALQ_KERNEL_LEVEL lowers it) and calls per kernel ("int8/<level>/<format>" for the
  // integer path, "float/<format>" for the exact path, "float-avx512/<format>" for the float kernel:
  // f32, f16, bf16 and the 4-bit table formats nf4, fp4, mxfp4, nvfp4), counted
  // over this evaluation (process-wide counters: evaluations running at the same time in one process
  // see each other's calls).
  std::string kernel_level;
  std::vector<std::pair<std::string, int64_t>> kernel_calls;
  std::string json;  // the whole report as JSON (what json_out holds)
};

EvalReport evaluate(const EvalJob& job);

}  // namespace calq
