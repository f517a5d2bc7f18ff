#include "pipeline/bisect.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace calq::pipeline {
namespace {

using Set = std::vector<size_t>;

Set united(const Set& a, const Set& b) {
  Set out;
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

class Search {
 public:
  Search(const std::function<double(std::span<const size_t>)>& kld_of, const BisectSearchOptions& o,
         BisectSearchResult& r)
      : kld_of_(kld_of), options_(o), r_(r) {}

  double kld(const Set& s) {
    if (const auto it = cache_.find(s); it != cache_.end()) return it->second;
    const double k = kld_of_(s);
    cache_.emplace(s, k);
    ++r_.evaluations;
    r_.steps.push_back({.restored = s, .kld = k, .ok = k <= r_.goal});
    if (options_.on_step) options_.on_step(r_.steps.back());
    return k;
  }
  bool ok(const Set& s) { return kld(s) <= r_.goal; }

  // A subset of `c` that, restored with `base`, reaches the goal; nullopt when none was found.
  std::optional<Set> solve(const Set& c, const Set& base) {
    if (c.size() == 1) return ok(united(base, c)) ? std::optional<Set>(c) : std::nullopt;
    const Set c1(c.begin(), c.begin() + static_cast<std::ptrdiff_t>((c.size() + 1) / 2));
    const Set c2(c.begin() + static_cast<std::ptrdiff_t>(c1.size()), c.end());
    if (ok(united(base, c1))) {
      if (auto s = solve(c1, base)) return s;
    } else if (auto s = solve(c2, base)) {  // untested: one culprit not in c1 is in c2
      return s;
    }
    if (!ok(united(base, c))) return std::nullopt;
    // Both halves hold part of the damage.
    Set s1 = solve(c1, united(base, c2)).value_or(c1);
    Set s2 = solve(c2, united(base, s1)).value_or(c2);
    return united(s1, s2);
  }

 private:
  const std::function<double(std::span<const size_t>)>& kld_of_;
  const BisectSearchOptions& options_;
  BisectSearchResult& r_;
  std::map<Set, double> cache_;
};

// Same format and the same stored bytes: restoring it would change nothing.
bool same_weight(const model::LinearWeight& a, const model::LinearWeight& b) {
  if (a.same_storage(b)) return true;
  if (a.format_name() != b.format_name()) return false;
  const std::span<const std::byte> x = a.is_quantized() ? a.quantized().bytes : a.dense().bytes();
  const std::span<const std::byte> y = b.is_quantized() ? b.quantized().bytes : b.dense().bytes();
  return std::equal(x.begin(), x.end(), y.begin(), y.end());
}

}  // namespace

BisectSearchResult find_restore_set(size_t n, const std::function<double(std::span<const size_t>)>& kld_of,
                                    const BisectSearchOptions& o) {
  if (n == 0) fail(ErrorKind::kInvalidArgument, "bisect: no candidate tensors (the two models store every weight alike)");
  if (!(o.target >= 0)) fail(ErrorKind::kInvalidArgument, "bisect target must be >= 0, got {}", o.target);
  if (o.tolerance && !(*o.tolerance > 0)) fail(ErrorKind::kInvalidArgument, "bisect tolerance must be > 0, got {}", *o.tolerance);
  BisectSearchResult r;
  r.goal = o.target + o.tolerance.value_or(0.0);
  Search search(kld_of, o, r);
  // Q itself; the default goal is only known after it, so its step is reported against it.
  r.kld_q = search.kld({});
  if (!o.tolerance) {
    r.goal = o.target + std::max(0.0, r.kld_q - o.target) / 2;
    r.steps.front().ok = r.kld_q <= r.goal;
  }
  if (r.kld_q <= r.goal) {
    r.found = true;
    r.kld = r.kld_q;
    return r;
  }
  Set all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  std::optional<Set> s = search.solve(all, {});
  if (!s) {
    r.set = all;
    r.kld = search.kld(all);
    return r;
  }
  // 1-minimal: drop members the goal does not need (only when several were kept).
  Set set = *s;
  for (size_t i = 0; set.size() > 1 && i < set.size();) {
    Set without = set;
    without.erase(without.begin() + static_cast<std::ptrdiff_t>(i));
    if (search.ok(without)) {
      set = std::move(without);
    } else {
      ++i;
    }
  }
  r.found = true;
  r.set = set;
  r.kld = search.kld(set);
  return r;
}

BisectResult bisect_restore(const model::Model& quantized, const model::Model& restore_from,
                            const BisectSearchOptions& options, KldEvaluator& evaluator) {
  check_same_layout(quantized, restore_from);
  BisectResult out;
  for (const WeightRef& r : weight_refs(quantized)) {
    if (!same_weight(weight_at(quantized, r), weight_at(restore_from, r))) out.candidates.push_back(r);
  }
  const auto kld_of = [&](std::span<const size_t> set) {
    std::vector<WeightRef> refs;
    for (const size_t i : set) refs.push_back(out.candidates[i]);
    return evaluator.evaluate(hybrid_model(quantized, restore_from, refs));
  };
  out.search = find_restore_set(out.candidates.size(), kld_of, options);
  for (const size_t i : out.search.set) out.restored.push_back(out.candidates[i]);
  return out;
}

}  // namespace calq::pipeline
