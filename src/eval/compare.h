// Honest evaluation of quantized models: one full-precision reference model and one or more
// candidate models run on identical token windows (the `gptq-windows` protocol of perplexity.h),
// compared position by position.
//
// Per predicted position t (every position of a window but the last, as in perplexity.h):
//  * NLL of the next token under both models, computed exactly as sequence_nll() does, so that
//    ppl_ref and ppl equal evaluate_perplexity() of each model bit for bit;
//  * KL(P_ref ‖ P_q) = Σ_v p_ref(v)·(log p_ref(v) − log p_q(v)), with both log-softmaxes and the sum
//    in double (std::exp/std::log in double, not the float polynomial of the perplexity path);
//  * top-1 agreement: whether argmax_v of both logit rows is the same token (ties go to the
//    lowest index).
//  * next-token accuracy: whether each model's argmax is the actual next token; "flips" count the
//    positions where the reference was right and the candidate wrong (lost) and the reverse (gained);
//  * calibration: expected calibration error (Guo et al. 2017) of each model's top-1 probability
//    against its top-1 correctness, over kEceBins equal-width bins (EceBins below).
// Window-level sums give 95% confidence intervals that treat windows as the independent units
// (tokens of one window are correlated): Student-t intervals of the mean over windows for KLD,
// top-1 agreement and the paired per-window NLL difference d; ΔPPL's interval is that of d mapped
// through ΔPPL = ppl_ref·(exp(d) − 1) with ppl_ref fixed (per-window log-ratio method). Per-token
// KL values are kept for percentiles (linear interpolation between order statistics, Hyndman and
// Fan's type 7 — numpy's default). docs/ACCURACY.md states the formulas.
//
// Contract: only the current window's logits are held — per worker the reference's and one
// candidate's [ctx, vocab] matrices, never the logits of the whole text. Windows are spread over the
// pool one per worker (each forward pass single-threaded inside, as in evaluate_perplexity); every
// per-window value is stored by window index and reduced in window order, so every result except
// the timings is bit-identical for any thread count. A candidate whose vocabulary size differs
// from the reference's is an ErrorKind::kInvalidArgument error naming both models; too few tokens
// for one window is an ErrorKind::kInvalidArgument error.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::eval {

struct CompareOptions {
  int64_t ctx = 512;
  int64_t max_windows = 0;  // 0 = all windows
  // Called after each finished window (reference and all candidates) with (windows done, windows
  // total); may run on any thread but never concurrently with itself.
  std::function<void(int64_t, int64_t)> on_progress;
};

// A two-sided 95% confidence interval; both ends are NaN when it is undefined (one window).
struct Interval {
  double lo = 0.0;
  double hi = 0.0;
};

struct KldPercentiles {
  double median = 0.0;
  double p90 = 0.0;
  double p99 = 0.0;
  double p999 = 0.0;
  double max = 0.0;
};

inline constexpr int kEceBins = 15;

// Expected calibration error of top-1 predictions: bin b (0-based) holds confidences p in
// (b/M, (b+1)/M] (p = 0 in bin 0), M = kEceBins; ECE = Σ_b (n_b / N)·|accuracy_b − mean p_b|.
struct EceBins {
  std::array<int64_t, kEceBins> count{};
  std::array<double, kEceBins> confidence{};  // Σ p in the bin
  std::array<int64_t, kEceBins> correct{};    // top-1 correct in the bin
  static int bin_of(double p);
  void add(double p, bool is_correct);
  void merge(const EceBins& other);
  int64_t total() const;
  double ece() const;  // 0 when empty
};

// One candidate against the reference.
struct CompareResult {
  int64_t ctx = 0;
  int64_t n_windows = 0;
  int64_t n_predicted = 0;  // n_windows * (ctx - 1)
  double ppl_ref = 0.0;
  double ppl = 0.0;
  double delta_ppl = 0.0;  // ppl − ppl_ref
  Interval delta_ppl_ci;
  double ppl_ratio = 0.0;  // ppl / ppl_ref = exp(mean per-token NLL difference)
  Interval ppl_ratio_ci;
  double kld_mean = 0.0;  // nats per predicted token
  Interval kld_mean_ci;
  KldPercentiles kld;
  double top1_agreement = 0.0;  // share of predicted positions with equal argmax
  Interval top1_agreement_ci;
  double accuracy = 0.0;      // share of predicted positions where argmax is the next token
  double ece = 0.0;           // EceBins::ece() of this model
  double ece_delta = 0.0;     // ece − the reference's
  int64_t flips_lost = 0;     // reference right, candidate wrong
  int64_t flips_gained = 0;   // reference wrong, candidate right
  EceBins ece_bins;
  std::vector<double> nll_ref_per_window;  // NLL sums, as PerplexityResult::nll_per_window
  std::vector<double> nll_per_window;
  std::vector<double> kld_per_window;     // KL sums of each window
  std::vector<int64_t> top1_per_window;   // agreeing positions of each window
  std::vector<double> kld_per_token;      // n_predicted values, window-major
  double forward_seconds = 0.0;           // this model's forward passes, summed over workers
  double tokens_per_second = 0.0;         // n_windows·ctx / forward_seconds × workers used
};

struct CompareReport {
  int64_t ctx = 0;
  int64_t n_windows = 0;
  int64_t n_predicted = 0;
  size_t workers = 0;                  // min(threads, windows): windows evaluated at once
  double ref_forward_seconds = 0.0;    // the reference's forward passes, summed over workers
  double ref_tokens_per_second = 0.0;
  double seconds = 0.0;                // wall time of the whole comparison
  double ref_accuracy = 0.0;           // the reference's next-token accuracy
  double ref_ece = 0.0;
  EceBins ref_ece_bins;
  std::vector<CompareResult> candidates;  // in the order given
};

CompareReport compare_models(const model::Model& ref, std::span<const model::Model* const> candidates,
                             std::span<const int32_t> ids, const CompareOptions& options, ThreadPool& pool);

// Building blocks, exposed for tests.

// log Σ_v exp(row[v]) in double (max-shifted).
double log_sum_exp(const float* row, int64_t n);
// Σ_v p_ref(v)·(log p_ref(v) − log p_q(v)) with log p(v) = row[v] − log_z, in double.
double kl_divergence_row(const float* ref, double ref_log_z, const float* q, double q_log_z, int64_t n);
// Index of the largest value (n > 0); the lowest such index on ties.
int64_t argmax_row(const float* row, int64_t n);

// Type-7 percentile of ascending `sorted` (non-empty), q in [0, 1]: with h = (n − 1)·q,
// sorted[⌊h⌋] + (h − ⌊h⌋)·(sorted[⌊h⌋ + 1] − sorted[⌊h⌋]).
double percentile_sorted(std::span<const double> sorted, double q);
KldPercentiles kld_percentiles(std::vector<double> values);

// The 0.975 quantile of Student's t with `df` ≥ 1 degrees of freedom (exact for 1 and 2, the
// Cornish–Fisher expansion of Abramowitz & Stegun 26.7.5 above, slightly low: relative error
// 1.2e-3 at df 3, 1.1e-4 at df 5, 3.6e-6 at df 10, 1.2e-7 at df 20, less beyond).
double student_t975(int64_t df);
// mean ± t975(n−1)·s/√n of `values` (s: sample standard deviation); NaN ends when n < 2.
Interval mean_interval(std::span<const double> values);

}  // namespace calq::eval
