#include "eval/compare.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <numbers>

#include "core/stopwatch.h"
#include "core/error.h"
#include "eval/perplexity.h"
#include "model/forward.h"

namespace calq::eval {
namespace {

using Clock = std::chrono::steady_clock;

// t975(n−1)·s/√n of `values`; NaN when n < 2.
double ci95_half_width(std::span<const double> values) {
  const size_t n = values.size();
  if (n < 2) return std::numeric_limits<double>::quiet_NaN();
  double mean = 0.0;
  for (const double v : values) mean += v;
  mean /= static_cast<double>(n);
  double ss = 0.0;
  for (const double v : values) ss += (v - mean) * (v - mean);
  const double sd = std::sqrt(ss / static_cast<double>(n - 1));
  return student_t975(static_cast<int64_t>(n) - 1) * sd / std::sqrt(static_cast<double>(n));
}

Interval around(double point, double half) { return {point - half, point + half}; }

double sum_in_order(std::span<const double> v) {
  double s = 0.0;
  for (const double x : v) s += x;
  return s;
}

// Per-window values of one candidate, written by the worker that owns the window.
struct CandidateAccum {
  std::vector<double> nll, kld, seconds;
  std::vector<int64_t> top1, correct, lost, gained;
  std::vector<EceBins> ece;
  std::vector<double> kld_per_token;
};

CompareResult finish_candidate(CandidateAccum& a, const std::vector<double>& nll_ref, int64_t ctx,
                               int64_t n_windows, size_t workers) {
  CompareResult r;
  r.ctx = ctx;
  r.n_windows = n_windows;
  r.n_predicted = n_windows * (ctx - 1);
  const auto per_token = static_cast<double>(ctx - 1);
  const auto n_pred = static_cast<double>(r.n_predicted);

  const double nll_ref_sum = sum_in_order(nll_ref);
  const double nll_sum = sum_in_order(a.nll);
  r.ppl_ref = std::exp(nll_ref_sum / n_pred);  // = ppl_of_prefix(), same order of operations
  r.ppl = std::exp(nll_sum / n_pred);
  r.delta_ppl = r.ppl - r.ppl_ref;

  // Paired per-window difference of the mean NLL per token: its mean is log(ppl / ppl_ref).
  std::vector<double> diff(static_cast<size_t>(n_windows));
  double diff_sum = 0.0;
  for (size_t w = 0; w < diff.size(); ++w) {
    const double d = a.nll[w] - nll_ref[w];
    diff_sum += d;
    diff[w] = d / per_token;
  }
  const double d_mean = diff_sum / n_pred;
  const double d_half = ci95_half_width(diff);
  r.ppl_ratio = r.ppl / r.ppl_ref;
  r.ppl_ratio_ci = {std::exp(d_mean - d_half), std::exp(d_mean + d_half)};
  r.delta_ppl_ci = {r.ppl_ref * std::expm1(d_mean - d_half), r.ppl_ref * std::expm1(d_mean + d_half)};

  std::vector<double> per_window(diff.size());
  for (size_t w = 0; w < diff.size(); ++w) per_window[w] = a.kld[w] / per_token;
  r.kld_mean = sum_in_order(a.kld) / n_pred;
  r.kld_mean_ci = around(r.kld_mean, ci95_half_width(per_window));

  int64_t agree = 0;
  for (size_t w = 0; w < diff.size(); ++w) {
    agree += a.top1[w];
    per_window[w] = static_cast<double>(a.top1[w]) / per_token;
  }
  r.top1_agreement = static_cast<double>(agree) / n_pred;
  r.top1_agreement_ci = around(r.top1_agreement, ci95_half_width(per_window));

  int64_t correct = 0;
  for (size_t w = 0; w < diff.size(); ++w) {
    correct += a.correct[w];
    r.flips_lost += a.lost[w];
    r.flips_gained += a.gained[w];
    r.ece_bins.merge(a.ece[w]);
  }
  r.accuracy = static_cast<double>(correct) / n_pred;
  r.ece = r.ece_bins.ece();

  r.kld = kld_percentiles(a.kld_per_token);
  r.forward_seconds = sum_in_order(a.seconds);
  r.tokens_per_second =
      static_cast<double>(n_windows * ctx) / r.forward_seconds * static_cast<double>(workers);
  r.nll_ref_per_window = nll_ref;
  r.nll_per_window = std::move(a.nll);
  r.kld_per_window = std::move(a.kld);
  r.top1_per_window = std::move(a.top1);
  r.kld_per_token = std::move(a.kld_per_token);
  return r;
}

}  // namespace

int EceBins::bin_of(double p) {
  const int b = static_cast<int>(std::ceil(p * kEceBins)) - 1;
  return std::clamp(b, 0, kEceBins - 1);
}

void EceBins::add(double p, bool is_correct) {
  const int b = bin_of(p);
  ++count[static_cast<size_t>(b)];
  confidence[static_cast<size_t>(b)] += p;
  correct[static_cast<size_t>(b)] += is_correct ? 1 : 0;
}

void EceBins::merge(const EceBins& o) {
  for (size_t b = 0; b < kEceBins; ++b) {
    count[b] += o.count[b];
    confidence[b] += o.confidence[b];
    correct[b] += o.correct[b];
  }
}

int64_t EceBins::total() const {
  int64_t n = 0;
  for (const int64_t c : count) n += c;
  return n;
}

double EceBins::ece() const {
  const int64_t n = total();
  if (n == 0) return 0.0;
  double e = 0.0;
  for (size_t b = 0; b < kEceBins; ++b) {
    if (count[b] == 0) continue;
    const auto nb = static_cast<double>(count[b]);
    e += nb / static_cast<double>(n) * std::fabs(static_cast<double>(correct[b]) / nb - confidence[b] / nb);
  }
  return e;
}

double log_sum_exp(const float* row, int64_t n) {
  const double mx = *std::max_element(row, row + n);
  double s = 0.0;
  for (int64_t v = 0; v < n; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
  return mx + std::log(s);
}

double kl_divergence_row(const float* ref, double ref_log_z, const float* q, double q_log_z, int64_t n) {
  double kl = 0.0;
  for (int64_t v = 0; v < n; ++v) {
    const double lr = static_cast<double>(ref[v]) - ref_log_z;
    const double lq = static_cast<double>(q[v]) - q_log_z;
    kl += std::exp(lr) * (lr - lq);
  }
  return kl;
}

int64_t argmax_row(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t v = 1; v < n; ++v) {
    if (row[v] > row[best]) best = v;  // strict: the first maximum wins ties
  }
  return best;
}

double percentile_sorted(std::span<const double> sorted, double q) {
  const size_t n = sorted.size();
  const double h = static_cast<double>(n - 1) * q;
  const auto lo = static_cast<size_t>(std::floor(h));
  if (lo + 1 >= n) return sorted[n - 1];
  return sorted[lo] + (h - static_cast<double>(lo)) * (sorted[lo + 1] - sorted[lo]);
}

KldPercentiles kld_percentiles(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  return {.median = percentile_sorted(values, 0.5),
          .p90 = percentile_sorted(values, 0.9),
          .p99 = percentile_sorted(values, 0.99),
          .p999 = percentile_sorted(values, 0.999),
          .max = values.back()};
}

double student_t975(int64_t df) {
  assert(df >= 1);
  if (df == 1) return std::tan(std::numbers::pi * 0.475);  // Cauchy: tan(π(p − 1/2))
  if (df == 2) return 0.95 / std::sqrt(2.0 * 0.975 * 0.025);  // (2p − 1)/√(2p(1 − p))
  const double z = 1.959963984540054;  // standard normal 0.975 quantile
  const double z2 = z * z;
  const double g1 = z * (z2 + 1.0) / 4.0;
  const double g2 = z * ((5.0 * z2 + 16.0) * z2 + 3.0) / 96.0;
  const double g3 = z * (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) / 384.0;
  const double g4 = z * ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) / 92160.0;
  const double nu = static_cast<double>(df);
  return z + (g1 + (g2 + (g3 + g4 / nu) / nu) / nu) / nu;
}

Interval mean_interval(std::span<const double> values) {
  double mean = 0.0;
  for (const double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  return around(mean, ci95_half_width(values));
}

CompareReport compare_models(const model::Model& ref, std::span<const model::Model* const> candidates,
                             std::span<const int32_t> ids, const CompareOptions& options, ThreadPool& pool) {
  const int64_t vocab = ref.config.vocab_size;
  for (const model::Model* c : candidates) {
    if (c->config.vocab_size != vocab) {
      fail(ErrorKind::kInvalidArgument,
           "{}: vocabulary of {} tokens, but the reference model {} has {}; models compared on the same "
           "token ids need the same vocabulary",
           c->source.string(), c->config.vocab_size, ref.source.string(), vocab);
    }
  }
  const int64_t ctx = options.ctx;
  if (ctx < 2) fail(ErrorKind::kInvalidArgument, "ctx must be at least 2, got {}", ctx);
  int64_t n_windows = static_cast<int64_t>(ids.size()) / ctx;
  if (n_windows == 0) {
    fail(ErrorKind::kInvalidArgument, "the text has {} tokens, fewer than one window of ctx {}", ids.size(), ctx);
  }
  if (options.max_windows > 0) n_windows = std::min(n_windows, options.max_windows);
  const int64_t rows = ctx - 1;  // predicted positions per window
  const auto nw = static_cast<size_t>(n_windows);

  std::vector<double> nll_ref(nw), ref_seconds(nw);
  std::vector<int64_t> ref_correct(nw, 0);
  std::vector<EceBins> ref_ece(nw);
  std::vector<CandidateAccum> acc(candidates.size());
  for (auto& a : acc) {
    a.nll.assign(nw, 0.0);
    a.kld.assign(nw, 0.0);
    a.seconds.assign(nw, 0.0);
    a.top1.assign(nw, 0);
    a.correct.assign(nw, 0);
    a.lost.assign(nw, 0);
    a.gained.assign(nw, 0);
    a.ece.assign(nw, EceBins{});
    a.kld_per_token.assign(static_cast<size_t>(n_windows * rows), 0.0);
  }

  std::mutex progress_mutex;
  int64_t done = 0;
  const auto start = Clock::now();
  pool.parallel_for(0, nw, Grain{.min_items = 1}, [&](size_t w0, size_t w1) {
    std::vector<double> ref_log_z(static_cast<size_t>(rows));
    std::vector<int64_t> ref_top(static_cast<size_t>(rows));
    // The chunk's two logits buffers, reused for every window and candidate (model::forward_into).
    std::vector<float> ref_logits(static_cast<size_t>(ctx * vocab)), q_logits(ref_logits.size());
    for (size_t w = w0; w < w1; ++w) {
      const auto window = ids.subspan(w * static_cast<size_t>(ctx), static_cast<size_t>(ctx));
      auto t0 = Clock::now();
      model::forward_into(ref, window, ref_logits.data(), pool);
      ref_seconds[w] = seconds_since(t0);
      const float* rl = ref_logits.data();
      nll_ref[w] = sequence_nll(rl, ctx, vocab, window.subspan(1));
      for (int64_t t = 0; t < rows; ++t) {
        const float* row = rl + t * vocab;
        const double lz = log_sum_exp(row, vocab);
        const int64_t top = argmax_row(row, vocab);
        ref_log_z[static_cast<size_t>(t)] = lz;
        ref_top[static_cast<size_t>(t)] = top;
        const bool ok = top == window[static_cast<size_t>(t + 1)];
        ref_correct[w] += ok ? 1 : 0;
        ref_ece[w].add(std::exp(static_cast<double>(row[top]) - lz), ok);
      }
      for (size_t c = 0; c < candidates.size(); ++c) {
        CandidateAccum& a = acc[c];
        t0 = Clock::now();
        model::forward_into(*candidates[c], window, q_logits.data(), pool);
        a.seconds[w] = seconds_since(t0);
        const float* ql = q_logits.data();
        a.nll[w] = sequence_nll(ql, ctx, vocab, window.subspan(1));
        double kl_sum = 0.0;
        int64_t agree = 0;
        double* kl_out = a.kld_per_token.data() + w * static_cast<size_t>(rows);
        for (int64_t t = 0; t < rows; ++t) {
          const float* q_row = ql + t * vocab;
          const double q_log_z = log_sum_exp(q_row, vocab);
          const double kl = kl_divergence_row(rl + t * vocab, ref_log_z[static_cast<size_t>(t)], q_row, q_log_z, vocab);
          kl_out[t] = kl;
          kl_sum += kl;
          const int64_t top = argmax_row(q_row, vocab);
          const int64_t rtop = ref_top[static_cast<size_t>(t)];
          agree += top == rtop ? 1 : 0;
          const int32_t target = window[static_cast<size_t>(t + 1)];
          const bool ok = top == target;
          const bool ref_ok = rtop == target;
          a.correct[w] += ok ? 1 : 0;
          a.lost[w] += ref_ok && !ok ? 1 : 0;
          a.gained[w] += !ref_ok && ok ? 1 : 0;
          a.ece[w].add(std::exp(static_cast<double>(q_row[top]) - q_log_z), ok);
        }
        a.kld[w] = kl_sum;
        a.top1[w] = agree;
      }
      if (options.on_progress) {
        std::lock_guard lock(progress_mutex);
        options.on_progress(++done, n_windows);
      }
    }
  });

  CompareReport report;
  report.ctx = ctx;
  report.n_windows = n_windows;
  report.n_predicted = n_windows * rows;
  report.workers = std::min(pool.num_threads(), nw);
  report.seconds = seconds_since(start);
  report.ref_forward_seconds = sum_in_order(ref_seconds);
  report.ref_tokens_per_second = static_cast<double>(n_windows * ctx) / report.ref_forward_seconds *
                                 static_cast<double>(report.workers);
  int64_t correct = 0;
  for (size_t w = 0; w < nw; ++w) {  // window order
    correct += ref_correct[w];
    report.ref_ece_bins.merge(ref_ece[w]);
  }
  report.ref_accuracy = static_cast<double>(correct) / static_cast<double>(report.n_predicted);
  report.ref_ece = report.ref_ece_bins.ece();
  for (auto& a : acc) {
    report.candidates.push_back(finish_candidate(a, nll_ref, ctx, n_windows, report.workers));
    report.candidates.back().ece_delta = report.candidates.back().ece - report.ref_ece;
  }
  return report;
}

}  // namespace calq::eval
