#include "grad/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace calq::grad {
namespace {

// fn(row) → double for each row, in parallel; returns the per-row values summed in row order.
template <typename Fn>
double sum_rows(ThreadPool& pool, int64_t rows, const Fn& fn) {
  std::vector<double> per_row(static_cast<size_t>(rows));
  pool.parallel_for(0, static_cast<size_t>(rows), Grain{.min_items = 4}, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) per_row[r] = fn(static_cast<int64_t>(r));
  });
  double total = 0.0;
  for (const double v : per_row) total += v;
  return total;
}

// log Σ exp(x) over the row, with max subtraction; in double.
template <typename T>
double log_sum_exp(const T* x, int64_t n) {
  const double mx = static_cast<double>(*std::max_element(x, x + n));
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
  return mx + std::log(s);
}

}  // namespace

std::vector<int32_t> next_token_targets(std::span<const int32_t> ids, int64_t seq_len) {
  std::vector<int32_t> targets(ids.size(), -1);
  for (size_t t = 0; t < ids.size(); ++t) {
    if ((static_cast<int64_t>(t) + 1) % seq_len != 0) targets[t] = ids[t + 1];
  }
  return targets;
}

template <typename T>
double cross_entropy(ThreadPool& pool, const T* logits, int64_t rows, int64_t vocab, std::span<const int32_t> targets,
                     T* dlogits) {
  int64_t counted = 0;
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] >= vocab) {
      fail(ErrorKind::kInvalidArgument, "target token {} at row {} is outside the vocabulary [0, {})", targets[r], r,
           vocab);
    }
    counted += targets[r] >= 0 ? 1 : 0;
  }
  const double inv_count = counted > 0 ? 1.0 / static_cast<double>(counted) : 0.0;
  const double total = sum_rows(pool, rows, [&](int64_t r) {
    const T* x = logits + r * vocab;
    const int32_t target = targets[static_cast<size_t>(r)];
    if (target < 0) {
      if (dlogits != nullptr) std::fill_n(dlogits + r * vocab, vocab, T(0));
      return 0.0;
    }
    const double lse = log_sum_exp(x, vocab);
    if (dlogits != nullptr) {
      T* d = dlogits + r * vocab;
      for (int64_t i = 0; i < vocab; ++i) d[i] = static_cast<T>(std::exp(static_cast<double>(x[i]) - lse) * inv_count);
      d[target] -= static_cast<T>(inv_count);
    }
    return lse - static_cast<double>(x[target]);
  });
  return total * inv_count;
}

template <typename T>
double kl_divergence(ThreadPool& pool, const T* student, const T* teacher, int64_t rows, int64_t vocab, T* dstudent) {
  const double inv_rows = rows > 0 ? 1.0 / static_cast<double>(rows) : 0.0;
  const double total = sum_rows(pool, rows, [&](int64_t r) {
    const T* s = student + r * vocab;
    const T* t = teacher + r * vocab;
    const double lse_s = log_sum_exp(s, vocab);
    const double lse_t = log_sum_exp(t, vocab);
    double kl = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double log_pt = static_cast<double>(t[i]) - lse_t;
      const double log_ps = static_cast<double>(s[i]) - lse_s;
      const double pt = std::exp(log_pt);
      kl += pt * (log_pt - log_ps);
      if (dstudent != nullptr) dstudent[r * vocab + i] = static_cast<T>((std::exp(log_ps) - pt) * inv_rows);
    }
    return kl;
  });
  return total * inv_rows;
}

template <typename T>
double mse(ThreadPool& pool, const T* a, const T* b, int64_t n, T* da) {
  // Fixed chunks of elements, summed in chunk order.
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const double inv_n = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
  const double total = sum_rows(pool, chunks, [&](int64_t c) {
    double s = 0.0;
    for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
      const double diff = static_cast<double>(a[i]) - static_cast<double>(b[i]);
      s += diff * diff;
      if (da != nullptr) da[i] = static_cast<T>(2.0 * diff * inv_n);
    }
    return s;
  });
  return total * inv_n;
}

template double cross_entropy<float>(ThreadPool&, const float*, int64_t, int64_t, std::span<const int32_t>, float*);
template double cross_entropy<double>(ThreadPool&, const double*, int64_t, int64_t, std::span<const int32_t>,
                                      double*);
template double kl_divergence<float>(ThreadPool&, const float*, const float*, int64_t, int64_t, float*);
template double kl_divergence<double>(ThreadPool&, const double*, const double*, int64_t, int64_t, double*);
template double mse<float>(ThreadPool&, const float*, const float*, int64_t, float*);
template double mse<double>(ThreadPool&, const double*, const double*, int64_t, double*);

}  // namespace calq::grad
