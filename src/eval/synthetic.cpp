#include "eval/synthetic.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/vec_math.h"
#include "eval/compare.h"
#include "model/decode.h"

namespace calq::eval {
namespace {

size_t sz(int64_t n) { return static_cast<size_t>(n); }

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) by rejection (std::uniform_int_distribution's algorithm is not fixed).
uint64_t bounded(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
  uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % bound;
}

// Uniform in [0, 1) with 53 random bits.
double unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// A token drawn from softmax(row) (temperature 1), among the k largest logits when k > 0.
// `scratch` holds vocab floats, `order` vocab ids.
int32_t sample_row(const float* row, int64_t vocab, int64_t top_k, std::mt19937_64& rng, std::vector<float>& scratch,
                   std::vector<int32_t>& order) {
  const double u = unit(rng);
  if (top_k > 0 && top_k < vocab) {
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    for (int64_t i = 0; i < top_k; ++i) scratch[sz(i)] = row[order[sz(i)]];
    const float mx = scratch[0];
    exp_sub_sum(scratch.data(), top_k, mx);
    double total = 0;
    for (int64_t i = 0; i < top_k; ++i) total += scratch[sz(i)];
    const double target = u * total;
    double acc = 0;
    for (int64_t i = 0; i < top_k; ++i) {
      acc += scratch[sz(i)];
      if (acc > target) return order[sz(i)];
    }
    return order[sz(top_k - 1)];
  }
  std::copy_n(row, vocab, scratch.begin());
  exp_sub_sum(scratch.data(), vocab, max_value(row, vocab));
  double total = 0;
  for (int64_t i = 0; i < vocab; ++i) total += scratch[sz(i)];
  const double target = u * total;
  double acc = 0;
  int64_t last = 0;  // the last token with a nonzero weight (rounding can leave acc just below target)
  for (int64_t i = 0; i < vocab; ++i) {
    if (scratch[sz(i)] == 0.0f) continue;
    acc += scratch[sz(i)];
    last = i;
    if (acc > target) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);
}

void check_options(const model::Model& m, const SyntheticOptions& o) {
  const int64_t vocab = m.config.vocab_size;
  if (o.sequences < 1) {
    fail(ErrorKind::kInvalidArgument, "generate: the sequence count must be at least 1, got {}", o.sequences);
  }
  if (o.seq_len < 2) fail(ErrorKind::kInvalidArgument, "generate: seq_len must be at least 2, got {}", o.seq_len);
  if (o.greedy < 0) fail(ErrorKind::kInvalidArgument, "generate option 'greedy' must be at least 0, got {}", o.greedy);
  if (o.top_k < 0) fail(ErrorKind::kInvalidArgument, "generate option 'top_k' must be at least 0, got {}", o.top_k);
  if (o.max_batch < 1) fail(ErrorKind::kInvalidArgument, "generate: max_batch must be at least 1, got {}", o.max_batch);
  if (o.bos && (*o.bos < 0 || *o.bos >= vocab)) {
    fail(ErrorKind::kInvalidArgument, "generate: start token {} is outside the vocabulary [0, {})", *o.bos, vocab);
  }
  if (o.first_token_vocab < 0 || o.first_token_vocab > vocab) {
    fail(ErrorKind::kInvalidArgument, "generate: first_token_vocab {} is outside [0, {}]", o.first_token_vocab, vocab);
  }
  const int64_t first_vocab = o.first_token_vocab > 0 ? o.first_token_vocab : vocab;
  int64_t excluded = 0;  // BOS/EOS ids the random first token skips
  for (const auto& id : {m.config.bos_token_id, m.config.eos_token_id}) excluded += id && *id < first_vocab;
  if (m.config.bos_token_id && m.config.bos_token_id == m.config.eos_token_id) {
    excluded = std::min<int64_t>(excluded, 1);  // one id, counted once
  }
  if (first_vocab <= excluded) {
    fail(ErrorKind::kInvalidArgument, "generate: no token to start from in [0, {}) besides BOS/EOS", first_vocab);
  }
}

}  // namespace

std::optional<int32_t> default_start_token(const model::ModelConfig& config) {
  return config.bos_token_id ? config.bos_token_id : config.eos_token_id;
}

std::vector<std::vector<int32_t>> generate_synthetic(const model::Model& m, const SyntheticOptions& o,
                                                     ThreadPool& pool, const SyntheticProgress& progress) {
  check_options(m, o);
  const int64_t vocab = m.config.vocab_size;
  const int64_t first_vocab = o.first_token_vocab > 0 ? o.first_token_vocab : vocab;
  const int64_t per_sequence = std::max<int64_t>(1, model::DecodeCache::bytes_for(m.config, 1, o.seq_len));
  const int64_t batch =
      std::min({o.max_batch, o.sequences, std::max<int64_t>(1, o.cache_budget_bytes / per_sequence)});
  const int64_t first_pos = o.bos ? 1 : 0;  // where the random token goes
  std::vector<std::vector<int32_t>> out(sz(o.sequences));

  for (int64_t g0 = 0; g0 < o.sequences; g0 += batch) {
    const int64_t B = std::min(batch, o.sequences - g0);
    std::vector<std::mt19937_64> rngs;
    for (int64_t b = 0; b < B; ++b) {
      rngs.emplace_back(splitmix64(o.seed ^ splitmix64(static_cast<uint64_t>(g0 + b))));
      std::vector<int32_t>& s = out[sz(g0 + b)];
      s.reserve(sz(o.seq_len));
      if (o.bos) s.push_back(*o.bos);
      int32_t first = 0;
      do {
        first = static_cast<int32_t>(bounded(rngs.back(), static_cast<uint64_t>(first_vocab)));
      } while ((m.config.bos_token_id && first == *m.config.bos_token_id) ||
               (m.config.eos_token_id && first == *m.config.eos_token_id));
      s.push_back(first);
    }
    model::DecodeCache cache(m.config, B, o.seq_len - 1);  // the last token is never fed
    std::vector<float> logits(sz(B * vocab));
    std::vector<int32_t> ids(sz(B));
    for (int64_t pos = 0; pos + 1 < o.seq_len; ++pos) {
      for (int64_t b = 0; b < B; ++b) ids[sz(b)] = out[sz(g0 + b)][sz(pos)];
      model::decode_step(m, ids, cache, logits.data(), pool);
      const int64_t next = pos + 1;
      if (next <= first_pos) continue;  // the random token, drawn above
      pool.parallel_for(0, sz(B), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
        std::vector<float> scratch(sz(vocab));
        std::vector<int32_t> order(o.top_k > 0 ? sz(vocab) : 0);
        for (size_t b = b0; b < b1; ++b) {
          const float* row = logits.data() + static_cast<int64_t>(b) * vocab;
          const int32_t tok = next <= first_pos + o.greedy
                                  ? static_cast<int32_t>(argmax_row(row, vocab))
                                  : sample_row(row, vocab, o.top_k, rngs[b], scratch, order);
          out[sz(g0) + b].push_back(tok);
        }
      });
    }
    if (progress) progress(g0 + B, o.sequences);
  }
  return out;
}

std::optional<SyntheticSpec> parse_synthetic_spec(std::string_view text) {
  constexpr std::string_view kPrefix = "generate:";
  if (!text.starts_with(kPrefix)) return std::nullopt;
  const auto whole = [&](std::string_view v, int64_t& out) {
    const char* end = v.data() + v.size();
    const auto r = std::from_chars(v.data(), end, out);
    return !v.empty() && r.ec == std::errc() && r.ptr == end;
  };
  std::string_view rest = text.substr(kPrefix.size());
  const size_t comma = rest.find(',');
  SyntheticSpec spec;
  if (!whole(rest.substr(0, comma), spec.sequences) || spec.sequences < 1) {
    fail(ErrorKind::kInvalidArgument,
         "calibration '{}': generate needs the number of sequences to sample, a whole number of at least 1 "
         "(e.g. generate:128)",
         text);
  }
  rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
  while (!rest.empty()) {
    const size_t next = rest.find(',');
    const std::string_view item = rest.substr(0, next);
    rest = next == std::string_view::npos ? std::string_view{} : rest.substr(next + 1);
    const size_t eq = item.find('=');
    const std::string_view key = item.substr(0, eq);
    int64_t value = 0;
    if (key != "greedy" && key != "top_k") {
      fail(ErrorKind::kInvalidArgument, "calibration '{}': unknown generate option '{}' (known: greedy, top_k)", text,
           key);
    }
    if (eq == std::string_view::npos || !whole(item.substr(eq + 1), value) || value < 0) {
      fail(ErrorKind::kInvalidArgument, "calibration '{}': generate option '{}' needs a whole number >= 0", text, key);
    }
    (key == "greedy" ? spec.greedy : spec.top_k) = value;
  }
  return spec;
}

std::string synthetic_provenance(const SyntheticOptions& o) {
  return fmt::format("generated:n={},seq_len={},seed={},bos={},greedy={},top_k={}", o.sequences, o.seq_len, o.seed,
                     o.bos ? std::to_string(*o.bos) : "none", o.greedy, o.top_k);
}

}  // namespace calq::eval
