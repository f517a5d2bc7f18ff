#include "pipeline/sensitivity.h"

#include <chrono>
#include <map>

#include "core/stopwatch.h"
#include "core/error.h"
#include "pipeline/tensor_swap.h"

namespace calq::pipeline {

std::string_view granularity_name(Granularity g) { return g == Granularity::kTensor ? "tensor" : "layer"; }

Granularity granularity_by_name(std::string_view name) {
  if (name == "tensor") return Granularity::kTensor;
  if (name == "layer") return Granularity::kLayer;
  fail(ErrorKind::kInvalidArgument, "granularity '{}': expected tensor or layer", name);
}

SensitivityMap measure_sensitivity(const model::Model& fp, std::span<const QuantizedVariant> variants,
                                   const SensitivityOptions& options, KldEvaluator& evaluator) {
  const auto t0 = std::chrono::steady_clock::now();
  if (variants.empty()) fail(ErrorKind::kInvalidArgument, "sensitivity: no format given");
  SensitivityMap map{.granularity = options.granularity, .ctx = evaluator.ctx(), .windows = evaluator.n_windows()};
  for (const QuantizedVariant& v : variants) {
    check_same_layout(fp, *v.model);
    map.formats.push_back(v.format->name());
  }

  // Groups of weights swapped together, in model order.
  struct Group {
    SensitivityEntry entry;
    std::vector<WeightRef> refs;
  };
  std::vector<Group> groups;
  std::map<int64_t, size_t> layer_group;
  for (const WeightRef& r : weight_refs(fp)) {
    bool changed = false;
    // By format, not storage: the variants are usually loaded apart from `fp`, and a weight the
    // pipeline kept float is then equal in value but not in storage.
    for (const QuantizedVariant& v : variants) {
      changed = changed || weight_at(*v.model, r).format_name() != weight_at(fp, r).format_name();
    }
    if (!changed) continue;
    const bool global = r.layer < 0;
    if (global && !options.include_head) continue;
    if (options.granularity == Granularity::kLayer && !global) {
      auto [it, added] = layer_group.try_emplace(r.layer, groups.size());
      if (added) groups.push_back({.entry = {.tensor = fmt::format("blk.{}", r.layer), .layer = r.layer, .role = "layer"}});
      groups[it->second].refs.push_back(r);
    } else if (r.expert > 0 && !groups.empty() && groups.back().entry.tensor == r.name) {
      groups.back().refs.push_back(r);  // a MoE layer's experts of one role: one stacked tensor
    } else {
      groups.push_back({.entry = {.tensor = r.name, .layer = r.layer, .role = r.short_role}, .refs = {r}});
    }
  }

  std::vector<model::Model> hybrids;
  hybrids.reserve(groups.size() * variants.size());
  for (Group& g : groups) {
    for (const WeightRef& r : g.refs) g.entry.params += weight_at(fp, r).numel();
    for (const QuantizedVariant& v : variants) {
      uint64_t bytes = 0;
      std::string stored;
      for (const WeightRef& r : g.refs) {
        const model::LinearWeight& w = weight_at(*v.model, r);
        bytes += w.nbytes();
        const std::string name = w.format_name();
        if (stored.empty()) stored = name;
        else if (stored != name && stored != "mixed") stored = "mixed";
      }
      g.entry.bytes.push_back(bytes);
      g.entry.stored_as.push_back(stored);
      hybrids.push_back(hybrid_model(fp, *v.model, g.refs));
    }
  }
  std::vector<const model::Model*> candidates;
  for (const model::Model& h : hybrids) candidates.push_back(&h);
  const std::vector<double> kld = evaluator.evaluate(candidates);
  map.evaluations = static_cast<int64_t>(candidates.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t v = 0; v < variants.size(); ++v) groups[g].entry.kld.push_back(kld[g * variants.size() + v]);
    map.entries.push_back(std::move(groups[g].entry));
  }
  map.seconds = seconds_since(t0);
  return map;
}

}  // namespace calq::pipeline
