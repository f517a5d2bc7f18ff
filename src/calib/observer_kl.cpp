// The KL observer: TensorRT's entropy calibration (Migacz 2017, "8-bit Inference with TensorRT").
//
// Given B bins of |x| over [0, range) and a grid with L positive levels, each candidate keeps the
// first i bins (L <= i <= B):
//  * P = those i bins, with the tail mass (everything in bins >= i) added to bin i − 1;
//  * Q = the i bins without the tail, merged into L chunks — chunk j covers bins
//    [⌊j·i/L⌋, ⌊(j+1)·i/L⌋), as equal as integers allow — and each chunk's total spread evenly
//    over the bins of the chunk where P is nonzero (zero where P is zero);
//  * KL(P‖Q) = Σ_{P_k>0} p_k ln(p_k / q_k) of the normalised distributions. Smoothing: a Q bin that
//    is zero under a nonzero P bin (a chunk holding only tail mass) counts as 1e-4 of a value
//    (the usual ε of the MXNet / TensorRT implementations, in count units, without their
//    re-balancing of the other bins); Q is normalised including those ε.
//  * Candidates i < B whose P is a point mass (every value at or beyond bin i − 1) are skipped: P
//    and Q are then the same single spike, KL = 0 however much was clipped. (TensorRT never meets
//    this: it starts at i = 128 of 2048 bins of dense activation histograms; a weight group of 128
//    values does, at the small i a few-level grid allows.)
// The candidate with the least KL wins; ties keep the larger i (less clipping). The threshold is
// the upper edge of the kept bins, T = i · bin_width (TensorRT uses (i + 0.5) · width; the upper
// edge makes i = B exactly the min-max range, so an unclipped distribution keeps its max).
//
// Evaluation: prefix sums over the bins of the counts and of the number of nonzero bins, and
// Σ c·ln c below the candidate (lowered incrementally as candidates descend), make one candidate
// O(L) (one pass over the chunks; logs of integer counts from a table), so a histogram costs
// O(B + candidates · L).
//
//  * Weights (per group/channel/tensor): B = kl_bins bins over [0, max|x|] (bin of |x| =
//    min(⌊|x|·B / max|x|⌋, B − 1) in double), L = grid_levels(grid). Candidates are i = L, L + s,
//    L + 2s, ... and always B, with stride s = max(1, (B − L) / K), K = clamp(2048 / L, 32, 128)
//    (128 candidates for int2..int5 grids, 66 for int6, 32 for int8): a group of 32..256 values
//    is far too sparse for 2048 distinct candidates to matter, and a whole model has ~200 k groups.
//    Symmetric grids: range [−T, T]; asymmetric grids: [max(min x, −T), min(max x, T)] (the |x|
//    threshold clips both sides; lo ≤ 0 ≤ hi kept). Importance weights are ignored.
//    Caveat (measured, observer_test): KL sees the clipped tail as one bin's worth of mass, not as
//    an error proportional to how far it was moved, so on heavy-tailed weights it clips outliers
//    that min-max/MSE keep — e.g. int4-g128 on Student-t(3) data doubles the MSE, int8 per channel
//    multiplies it ~80×. It is meant for activations (TensorRT calibrates weights by max).
//  * Activations: the AbsHistogram's bins up to its highest nonzero one (h + 1 bins, 1024..2048
//    for a histogram whose range was set by its data), merged in groups of g = ⌈(h + 1)/kl_bins⌉
//    consecutive bins when there are more than kl_bins; every i from `levels` up is a candidate.
#include <algorithm>
#include <array>
#include <cassert>
#include <climits>
#include <cmath>
#include <span>
#include <vector>

#include "calib/observer.h"

namespace calq::calib {
namespace {

// Weight candidates: about kWeightChunkBudget / L of them (each costs O(L)), within [min, max].
constexpr int64_t kWeightChunkBudget = 2048;
constexpr int64_t kWeightMinCandidates = 32;
constexpr int64_t kWeightMaxCandidates = 128;
constexpr double kEpsilon = 1e-4;

constexpr int64_t kLogTableSize = 4096;

// ln k for integer counts; a table for the small counts weight groups produce.
double ln_count(int64_t k) {
  static const std::array<double, kLogTableSize> table = [] {
    std::array<double, kLogTableSize> t{};
    t[0] = 0.0;  // never used as a log: 0·ln 0 terms are skipped by the callers
    for (int64_t i = 1; i < kLogTableSize; ++i) t[static_cast<size_t>(i)] = std::log(static_cast<double>(i));
    return t;
  }();
  return k < kLogTableSize ? table[static_cast<size_t>(k)] : std::log(static_cast<double>(k));
}

double xlogx(int64_t k) { return k > 1 ? static_cast<double>(k) * ln_count(k) : 0.0; }

// Prefix sums over the bins: count[k] = Σ_{m<k} c_m and nonzero[k] = #{m < k : c_m > 0}. T is
// int32_t for weight groups (a smaller, faster table) and int64_t for activation histograms.
template <typename T>
struct Prefix {
  std::vector<T> count;
  std::vector<T> nonzero;
};

// The number of bins to keep (in [min(levels, B), B]) by least KL(P‖Q); see the header comment.
template <typename T>
int64_t kl_best_bins(std::span<const T> c, int64_t levels, int64_t stride, Prefix<T>& pre) {
  const auto bins = static_cast<int64_t>(c.size());
  if (levels >= bins) return bins;
  pre.count.resize(c.size() + 1);
  pre.nonzero.resize(c.size() + 1);
  pre.count[0] = 0;
  pre.nonzero[0] = 0;
  double xlx_all = 0;  // Σ c ln c over all bins
  T count = 0, nonzero = 0;
  for (size_t k = 0; k < c.size(); ++k) {
    count += c[k];
    nonzero += c[k] > 0 ? 1 : 0;
    pre.count[k + 1] = count;
    pre.nonzero[k + 1] = nonzero;
    if (c[k] > 1) xlx_all += xlogx(c[k]);
  }
  const int64_t total = pre.count[c.size()];
  if (total == 0) return bins;
  const double inv_total = 1.0 / static_cast<double>(total);
  const double ln_total = ln_count(total);
  const double ln_eps = std::log(kEpsilon);

  int64_t best_i = bins;
  double best_kl = 0;
  bool have_best = false;
  // Candidates from the top down, so that on ties (strictly-less replaces) the larger i stays.
  const int64_t first = levels;
  // The next candidate below i: the stride grid L + k·s (B itself may be off that grid).
  const auto next_candidate = [&](int64_t from) {
    return from == bins && (bins - first) % stride != 0 ? first + (bins - first) / stride * stride : from - stride;
  };
  // Σ_{k < below} c_k ln c_k, lowered as the candidates descend (O(B) in all).
  int64_t below = bins;
  double xlx_below = xlx_all;
  int64_t i = bins;
  while (i >= first) {
    // A point-mass P (no value below bin i − 1: all of it clipped into one bin) matches its Q
    // exactly whatever is lost, since KL compares shapes only; such candidates are skipped
    // (B itself always counts, so an all-in-one-bin histogram keeps its max).
    if (i < bins && pre.nonzero[static_cast<size_t>(i - 1)] == 0) {
      i = next_candidate(i);
      continue;
    }
    const int64_t kept = pre.count[static_cast<size_t>(i)];
    const int64_t tail = total - kept;
    const int64_t last = i - 1;
    const int64_t p_last = c[static_cast<size_t>(last)] + tail;
    while (below > last) {
      --below;
      if (c[static_cast<size_t>(below)] > 1) xlx_below -= xlogx(c[static_cast<size_t>(below)]);
    }
    double sum_m_lnq = 0;  // Σ_j M_j · ln q_j (M_j: P mass of chunk j, q_j: Q value of its nonzero bins)
    double eps_bins = 0;
    // Chunk bounds ⌊j·i/L⌋ by exact incremental division.
    const int64_t q_step = i / levels, r_step = i % levels;
    int64_t a = 0, rem = 0;
    for (int64_t j = 0; j < levels; ++j) {
      int64_t b = a + q_step;
      rem += r_step;
      if (rem >= levels) {
        ++b;
        rem -= levels;
      }
      const int64_t r = pre.count[static_cast<size_t>(b)] - pre.count[static_cast<size_t>(a)];
      if (j + 1 < levels) {
        if (r > 0) {
          const int64_t z = pre.nonzero[static_cast<size_t>(b)] - pre.nonzero[static_cast<size_t>(a)];
          // r == z (every nonzero bin holds one value, common in weight groups) contributes 0.
          if (r != z) sum_m_lnq += static_cast<double>(r) * (ln_count(r) - ln_count(z));
        }
      } else {  // the last chunk holds bin i − 1, whose P includes the tail
        const int64_t z =
            pre.nonzero[static_cast<size_t>(last)] - pre.nonzero[static_cast<size_t>(a)] + (p_last > 0 ? 1 : 0);
        const int64_t m = r + tail;
        if (m > 0) {
          if (r > 0) {
            sum_m_lnq += static_cast<double>(m) * (ln_count(r) - ln_count(z));
          } else {
            sum_m_lnq += static_cast<double>(m) * ln_eps;
            eps_bins += static_cast<double>(z);
          }
        }
      }
      a = b;
    }
    const double sum_p_lnp = xlx_below + xlogx(p_last);
    const double ln_q_total =
        eps_bins == 0 ? ln_count(kept) : std::log(static_cast<double>(kept) + kEpsilon * eps_bins);
    const double kl = (sum_p_lnp - sum_m_lnq) * inv_total - ln_total + ln_q_total;
    if (!have_best || kl < best_kl) {
      best_kl = kl;
      best_i = i;
      have_best = true;
    }
    i = next_candidate(i);
  }
  return best_i;
}

// B bins of |x| over [0, amax] (see the header comment) and the bins to keep; counts of type T.
template <typename T>
int64_t weight_keep(std::span<const float> x, float amax, int64_t bins, int64_t levels, int64_t stride) {
  // Scratch per thread: the formats call choose() from every pool thread, once per group.
  thread_local std::vector<T> counts;
  thread_local Prefix<T> prefix;
  counts.assign(static_cast<size_t>(bins), 0);
  const double to_bin = static_cast<double>(bins) / static_cast<double>(amax);
  for (const float v : x) {
    const auto k = std::min(static_cast<int64_t>(std::fabs(static_cast<double>(v)) * to_bin), bins - 1);
    ++counts[static_cast<size_t>(k)];
  }
  return kl_best_bins<T>(counts, levels, stride, prefix);
}

class KlRange final : public RangeChooser {
 public:
  explicit KlRange(int bins) : bins_(bins) {}
  std::string_view name() const override { return "kl"; }

  QuantParams choose(const RangeInput& in, const QuantGrid& grid) const override {
    float lo = 0.0f, hi = 0.0f;
    for (const float v : in.x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    const float amax = std::max(-lo, hi);
    if (amax == 0.0f) return params_for_range(lo, hi, grid);
    const int64_t levels = grid_levels(grid);
    const int64_t candidates =
        std::clamp<int64_t>(kWeightChunkBudget / levels, kWeightMinCandidates, kWeightMaxCandidates);
    const int64_t stride = std::max<int64_t>(1, (bins_ - levels) / candidates);
    const int64_t keep = in.x.size() <= static_cast<size_t>(INT32_MAX)
                             ? weight_keep<int32_t>(in.x, amax, bins_, levels, stride)
                             : weight_keep<int64_t>(in.x, amax, bins_, levels, stride);
    const auto t =
        static_cast<float>(static_cast<double>(keep) * static_cast<double>(amax) / static_cast<double>(bins_));
    if (grid.symmetric) return params_for_range(-t, t, grid);
    return params_for_range(std::max(lo, -t), std::min(hi, t), grid);
  }

 private:
  int64_t bins_;
};

class KlObserver final : public Observer {
 public:
  explicit KlObserver(int bins) : bins_(bins), range_(bins) {}
  std::string_view name() const override { return "kl"; }
  const RangeChooser& weight_range() const override { return range_; }

  double activation_clip(const AbsHistogram& hist, int levels) const override {
    assert(levels >= 1);
    const double max_edge = histogram_max_edge(hist);
    if (max_edge == 0.0) return 0.0;
    const int64_t used = std::llround(max_edge / hist.bin_width());  // h + 1
    const int64_t group = (used + bins_ - 1) / bins_;
    std::vector<int64_t> counts(static_cast<size_t>((used + group - 1) / group), 0);
    for (int64_t k = 0; k < used; ++k) counts[static_cast<size_t>(k / group)] += hist.counts()[static_cast<size_t>(k)];
    Prefix<int64_t> prefix;
    const int64_t keep = kl_best_bins<int64_t>(counts, levels, 1, prefix);
    // The last merged bin may reach past the highest nonzero one; the max edge bounds T.
    return static_cast<double>(std::min(keep * group, used)) * hist.bin_width();
  }

 private:
  int64_t bins_;
  KlRange range_;
};

}  // namespace

std::unique_ptr<Observer> make_kl_observer(const ObserverOptions& options) {
  return std::make_unique<KlObserver>(options.kl_bins);
}

}  // namespace calq::calib
