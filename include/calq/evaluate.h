// evaluate(job) -> report: models against a full-precision reference on the same token ids
// (ΔPPL, KL(reference‖model), top-1 agreement, accuracy and ECE, each with a 95% interval over
// windows), or one model's perplexity. (HellaSwag and generation: `calq eval`, not yet here.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calq/progress.h"

namespace calq {

struct EvalJob {
  std::string reference;            // full-precision model ("" = perplexity of models[0] alone)
  std::vector<std::string> models;  // Hugging Face folders or GGUF files
  std::string text;                 // plain-text file for perplexity / comparison
  int64_t ctx = 512;                // window length in tokens (protocol gptq-windows)
  int64_t max_windows = 0;          // 0 = all
  std::string tokenizer;            // tokenizer.json for every model ("" = the reference's own)
  std::vector<std::string> kv_cache;  // KV-cache formats; each model runs once per entry
  size_t threads = 0;
  ProgressFn progress;
};

struct Interval {
  double lo = 0, hi = 0;
};

struct ModelScore {
  std::string model;  // path as given
  std::string name;   // display name (file name, plus " kv:<format>")
  std::string format, architecture, kv_cache;
  double bits_per_weight = 0;
  double ppl = 0, ppl_ref = 0, delta_ppl = 0;
  Interval delta_ppl_ci;
  double kld_mean = 0;
  Interval kld_mean_ci;
  double kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_p999 = 0, kld_max = 0;
  double top1_agreement = 0;
  Interval top1_agreement_ci;
  double accuracy = 0, ece = 0, ece_delta = 0;
  int64_t flips_lost = 0, flips_gained = 0;
  double tokens_per_second = 0;
};

struct EvalReport {
  std::string reference, tokenizer, text;
  int64_t n_tokens = 0, n_windows = 0, n_predicted = 0, ctx = 0;
  std::string token_ids_sha256;
  double ppl_ref = 0, ref_accuracy = 0, ref_ece = 0;
  std::vector<ModelScore> models;
  double seconds = 0;
  int threads = 0;
};

EvalReport evaluate(const EvalJob& job);

}  // namespace calq
