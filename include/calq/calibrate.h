// Calibration: token samples of a text run through the model layer by layer, the statistics of
// every linear layer's input collected and written to a statistics file (a GGUF container) that
// quantize() reuses (QuantizeJob::stats).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calq/progress.h"

namespace calq {

// How calibration samples are drawn from a text: `samples` windows of `seq_len` tokens, at
// positions drawn with `seed` from the documents (separated by blank lines) joined by EOS.
// Data-free: text "generate:N[,greedy=G][,top_k=K]" samples N sequences of `seq_len` tokens from
// the model itself instead (LLM-QAT): the model's BOS (its EOS when it has none), a token drawn
// uniformly from the tokenizer's vocabulary, G argmax tokens (default 3), then tokens sampled from
// the softmax at temperature 1 (among the K most likely when K > 0), with `seed`; `samples` is not
// used. The statistics file records "generated:n=N,seq_len=...,seed=...,..." instead of a file hash.
struct CalibrationData {
  std::string text;       // plain-text or JSONL file, or "generate:N" ("" = no calibration)
  int64_t samples = 128;  // below 128 is allowed, with a warning (noisier statistics)
  int64_t seq_len = 512;
  uint64_t seed = 0;
  std::string tokenizer;  // tokenizer.json instead of the model's own ("" = the model's)
};

struct CalibrateJob {
  std::string model;  // Hugging Face folder or GGUF file
  std::string out;    // statistics file to write
  CalibrationData data;
  // Statistics to collect: comma list of absmax, mean_abs, mean_sq, histogram, hessian.
  std::string stats = "absmax,mean_abs,mean_sq,histogram";
  size_t threads = 0;  // 0 = all cores
  bool force = false;  // overwrite an existing `out`
  // false (default): the forward pass runs on the fast kernels (calq/evaluate.h, EvalJob::exact);
  // true: on the exact path. The statistics differ only by float rounding.
  bool exact = false;
  // Mixture-of-experts models: gather every expert's statistics on every token ("all experts";
  // the outputs still follow the router), and the routed token count under which the coverage
  // report flags an expert (0: the expert's input width).
  bool all_experts = false;
  int64_t expert_min_tokens = 0;
  ProgressFn progress;
};

struct SiteSummary {
  int64_t layer = 0;  // -1: the output head's input
  std::string site;   // "attn_in", "attn_out", "mlp_in", "mlp_down", "head_in"
  int64_t cols = 0, rows = 0;
  double absmax = 0;   // 0 when absmax was not collected
  double mean_sq = 0;  // 0 when mean_sq was not collected
};

// How many calibration tokens the router sent to the experts of one MoE layer.
struct ExpertCoverage {
  int64_t layer = 0;
  int64_t experts = 0;
  int64_t min_tokens = 0, median_tokens = 0, max_tokens = 0;  // per expert
  int64_t threshold = 0;                  // CalibrateJob::expert_min_tokens as applied
  std::vector<int64_t> under_covered;     // experts with fewer tokens than the threshold
  std::vector<int64_t> tokens;            // per expert
};

struct CalibrateReport {
  std::string out;
  int64_t samples = 0, seq_len = 0;
  int64_t n_documents = 0, n_windows = 0;  // of the text
  std::string stats;                       // what was collected
  std::vector<SiteSummary> sites;
  std::vector<ExpertCoverage> experts;     // MoE models: one per layer (also in the stats file)
  double seconds = 0;
  double activation_mib = 0;  // activations held at once
  double peak_rss_mib = 0;    // peak resident memory of the process so far
  int threads = 0;
};

CalibrateReport calibrate(const CalibrateJob& job);

// Combines statistics files (same model, disjoint samples) into `out`. Returns the sample count.
struct MergeReport {
  std::string out;
  int64_t files = 0, samples = 0, sites = 0;
};
MergeReport merge_statistics(const std::vector<std::string>& files, const std::string& out, bool force);

}  // namespace calq
