#include "eval/multiple_choice.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <tuple>
#include <utility>

#include "core/stopwatch.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/forward.h"

namespace calq::eval {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr size_t kHellaswagEndings = 4;

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

McItem parse_hellaswag_line(std::string_view text, const std::filesystem::path& path, int64_t line) {
  const std::string where = fmt::format("{}: line {}", path.string(), line);
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorKind::kInvalidArgument, "{}: malformed JSON: {}", where, e.what());
  }
  if (!doc.is_object()) fail(ErrorKind::kInvalidArgument, "{}: expected a JSON object", where);
  for (const char* key : {"ctx", "endings", "label"}) {
    if (!doc.contains(key)) fail(ErrorKind::kInvalidArgument, "{}: missing key '{}'", where, key);
  }
  McItem item;
  const json& ctx = doc["ctx"];
  if (!ctx.is_string()) fail(ErrorKind::kInvalidArgument, "{}: 'ctx' must be a string", where);
  item.ctx = ctx.get<std::string>();
  const json& endings = doc["endings"];
  if (!endings.is_array() || endings.size() != kHellaswagEndings) {
    fail(ErrorKind::kInvalidArgument, "{}: 'endings' must be an array of {} strings", where, kHellaswagEndings);
  }
  for (size_t i = 0; i < endings.size(); ++i) {
    if (!endings[i].is_string() || endings[i].get_ref<const std::string&>().empty()) {
      fail(ErrorKind::kInvalidArgument, "{}: 'endings'[{}] must be a non-empty string", where, i);
    }
    item.endings.push_back(endings[i].get<std::string>());
  }
  const json& label = doc["label"];
  if (!label.is_number_integer()) fail(ErrorKind::kInvalidArgument, "{}: 'label' must be an integer", where);
  item.label = label.get<int64_t>();
  if (item.label < 0 || item.label >= static_cast<int64_t>(kHellaswagEndings)) {
    fail(ErrorKind::kInvalidArgument, "{}: 'label' {} is out of range [0, {})", where, item.label,
         kHellaswagEndings);
  }
  return item;
}

// Validates one item and its tokens; `index` names it in errors.
void check_item(const McItem& item, const McTokens& tokens, size_t index) {
  if (item.endings.empty()) fail(ErrorKind::kInvalidArgument, "multiple-choice item {}: no endings", index);
  if (item.label < 0 || item.label >= static_cast<int64_t>(item.endings.size())) {
    fail(ErrorKind::kInvalidArgument, "multiple-choice item {}: label {} is out of range [0, {})", index, item.label,
         item.endings.size());
  }
  if (tokens.ctx_ids.empty()) {
    fail(ErrorKind::kInvalidArgument, "multiple-choice item {}: the context tokenizes to no tokens", index);
  }
  for (size_t e = 0; e < item.endings.size(); ++e) {
    if (item.endings[e].empty() || tokens.continuations[e].empty()) {
      fail(ErrorKind::kInvalidArgument, "multiple-choice item {}: ending {} is empty or tokenizes to no tokens",
           index, e);
    }
  }
}

// Share of items where a[i] == b[i], with its interval.
std::pair<double, Interval> agreement(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<double> same(a.size());
  double n_same = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    same[i] = a[i] == b[i] ? 1.0 : 0.0;
    n_same += same[i];
  }
  return {n_same / static_cast<double>(a.size()), mean_interval(same)};
}

}  // namespace

std::vector<McItem> read_hellaswag_jsonl(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  std::vector<McItem> items;
  size_t pos = 0;
  int64_t line = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line;
    const std::string_view content(text.data() + pos, end - pos);
    if (!is_blank(content)) items.push_back(parse_hellaswag_line(content, path, line));
    pos = end + 1;
  }
  if (items.empty()) {
    fail(ErrorKind::kInvalidArgument, "{}: line {}: no items in the file", path.string(), std::max<int64_t>(line, 1));
  }
  return items;
}

McTokens tokenize_choices(const McItem& item, const io::Tokenizer& tokenizer) {
  // lm-eval's _encode_pair: trailing whitespace of the context goes to the continuation.
  std::string_view context = item.ctx;
  const size_t kept = context.find_last_not_of(" \t\n\r\f\v");
  const std::string_view moved = kept == std::string_view::npos ? context : context.substr(kept + 1);
  context.remove_suffix(moved.size());

  McTokens t;
  t.ctx_ids = tokenizer.encode(context, false);
  for (const std::string& ending : item.endings) {
    const std::string continuation = std::string(moved) + " " + ending;
    const std::vector<int32_t> whole = tokenizer.encode(std::string(context) + continuation, false);
    const bool prefix_matches =
        whole.size() > t.ctx_ids.size() && std::equal(t.ctx_ids.begin(), t.ctx_ids.end(), whole.begin());
    if (prefix_matches) {
      t.continuations.emplace_back(whole.begin() + static_cast<std::ptrdiff_t>(t.ctx_ids.size()), whole.end());
    } else {
      t.continuations.push_back(tokenizer.encode(continuation, false));
    }
    t.fallback.push_back(!prefix_matches);
  }
  return t;
}

double continuation_loglik(const float* logits, int64_t vocab, std::span<const int32_t> ids, int64_t n_ctx) {
  assert(n_ctx >= 1 && n_ctx <= static_cast<int64_t>(ids.size()));
  double sum = 0.0;
  for (auto t = static_cast<size_t>(n_ctx); t < ids.size(); ++t) {
    const float* row = logits + static_cast<int64_t>(t - 1) * vocab;
    sum += static_cast<double>(row[ids[t]]) - log_sum_exp(row, vocab);
  }
  return sum;
}

int64_t choose_best(std::span<const double> scores, std::span<const double> divisors) {
  assert(!scores.empty() && (divisors.empty() || divisors.size() == scores.size()));
  const auto value = [&](size_t i) { return divisors.empty() ? scores[i] : scores[i] / divisors[i]; };
  size_t best = 0;
  double best_value = value(0);
  for (size_t i = 1; i < scores.size(); ++i) {
    const double v = value(i);
    if (v > best_value) {  // strict: the first maximum wins ties
      best = i;
      best_value = v;
    }
  }
  return static_cast<int64_t>(best);
}

McReport score_multiple_choice(std::span<const model::Model* const> models, const io::Tokenizer& tokenizer,
                               std::span<const McItem> items, const McOptions& options, ThreadPool& pool) {
  if (models.empty()) fail(ErrorKind::kInvalidArgument, "multiple-choice scoring needs at least one model");
  const int64_t vocab = models[0]->config.vocab_size;
  for (const model::Model* m : models.subspan(1)) {
    if (m->config.vocab_size != vocab) {
      fail(ErrorKind::kInvalidArgument,
           "{}: vocabulary of {} tokens, but the reference model {} has {}; models compared on the same "
           "token ids need the same vocabulary",
           m->source.string(), m->config.vocab_size, models[0]->source.string(), vocab);
    }
  }
  if (options.max_items > 0 && static_cast<size_t>(options.max_items) < items.size()) {
    items = items.first(static_cast<size_t>(options.max_items));
  }
  if (items.empty()) fail(ErrorKind::kInvalidArgument, "multiple-choice scoring needs at least one item");
  const size_t n = items.size();
  const auto start = Clock::now();

  // Tokenize every item first (errors are reported for the lowest bad item, whatever the timing).
  std::vector<McTokens> tokens(n);
  std::vector<std::exception_ptr> errors(n);
  pool.parallel_for(0, n, Grain{.min_items = 8}, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      try {
        tokens[i] = tokenize_choices(items[i], tokenizer);
        check_item(items[i], tokens[i], i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  });
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }

  McReport report;
  report.n_items = static_cast<int64_t>(n);
  report.workers = std::min(pool.num_threads(), n);
  for (const McTokens& t : tokens) {
    report.n_fallback_endings += std::count(t.fallback.begin(), t.fallback.end(), true);
  }
  report.models.resize(models.size());
  std::vector<std::vector<double>> seconds(models.size(), std::vector<double>(n, 0.0));
  for (McModelResult& r : report.models) {
    r.n_items = static_cast<int64_t>(n);
    r.loglik.resize(n);
  }

  std::mutex progress_mutex;
  int64_t done = 0;
  pool.parallel_for(0, n, Grain{.min_items = 1}, [&](size_t i0, size_t i1) {
    std::vector<int32_t> ids;
    for (size_t i = i0; i < i1; ++i) {
      const McTokens& t = tokens[i];
      for (size_t m = 0; m < models.size(); ++m) {
        std::vector<double>& ll = report.models[m].loglik[i];
        ll.assign(t.continuations.size(), 0.0);
        const auto t0 = Clock::now();
        for (size_t e = 0; e < t.continuations.size(); ++e) {
          ids = t.ctx_ids;
          ids.insert(ids.end(), t.continuations[e].begin(), t.continuations[e].end());
          const Tensor logits = model::forward(*models[m], ids, pool);
          ll[e] = continuation_loglik(logits.f32(), vocab, ids, static_cast<int64_t>(t.ctx_ids.size()));
        }
        seconds[m][i] = seconds_since(t0);
      }
      if (options.on_progress) {
        std::lock_guard lock(progress_mutex);
        options.on_progress(++done, static_cast<int64_t>(n));
      }
    }
  });

  // Reductions, in item order.
  std::vector<double> hit(n), hit_norm(n), bytes;
  for (size_t m = 0; m < models.size(); ++m) {
    McModelResult& r = report.models[m];
    r.chosen.resize(n);
    r.chosen_norm.resize(n);
    for (size_t i = 0; i < n; ++i) {
      bytes.clear();
      for (const std::string& ending : items[i].endings) bytes.push_back(static_cast<double>(ending.size()));
      r.chosen[i] = choose_best(r.loglik[i]);
      r.chosen_norm[i] = choose_best(r.loglik[i], bytes);
      hit[i] = r.chosen[i] == items[i].label ? 1.0 : 0.0;
      hit_norm[i] = r.chosen_norm[i] == items[i].label ? 1.0 : 0.0;
      r.correct += static_cast<int64_t>(hit[i]);
      r.correct_norm += static_cast<int64_t>(hit_norm[i]);
      r.forward_seconds += seconds[m][i];
    }
    r.acc = static_cast<double>(r.correct) / static_cast<double>(n);
    r.acc_norm = static_cast<double>(r.correct_norm) / static_cast<double>(n);
    r.acc_ci = mean_interval(hit);
    r.acc_norm_ci = mean_interval(hit_norm);
  }
  for (size_t m = 1; m < models.size(); ++m) {
    McAgreement a{.model = m};
    std::tie(a.chosen_agreement, a.chosen_agreement_ci) = agreement(report.models[0].chosen, report.models[m].chosen);
    std::tie(a.chosen_norm_agreement, a.chosen_norm_agreement_ci) =
        agreement(report.models[0].chosen_norm, report.models[m].chosen_norm);
    report.agreement.push_back(a);
  }
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace calq::eval
