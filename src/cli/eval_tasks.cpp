#include "cli/eval_tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>

namespace calq::cli {
namespace {

std::string pm(double value, const Interval& ci) {
  return fmt::format("{:.2f} ± {:.2f}", 100 * value, 100 * (ci.hi - value));
}

}  // namespace

void print_choices(const ChoiceReport& rep, bool has_reference) {
  size_t w = 5;
  for (const ChoiceScore& m : rep.models) w = std::max(w, m.model.size());
  fmt::print("\nmultiple choice  {} ({} items, {} endings tokenized on their own); 95% CIs over items\n", rep.file,
             rep.n_items, rep.n_fallback_endings);
  fmt::print("{:<{}}  {:>20}  {:>20}  {:>22}  {:>22}\n", "model", w, "acc % ± 95%", "acc_norm % ± 95%",
             has_reference ? "same answer as ref %" : "", has_reference ? "same (norm) as ref %" : "");
  for (const ChoiceScore& s : rep.models) {
    fmt::print("{:<{}}  {:>20}  {:>20}  {:>22}  {:>22}\n", s.model, w, pm(s.acc, s.acc_ci), pm(s.acc_norm, s.acc_norm_ci),
               s.agreement ? pm(*s.agreement, s.agreement_ci) : "",
               s.agreement_norm ? pm(*s.agreement_norm, s.agreement_norm_ci) : "");
  }
  fmt::print("(chance is 25 %; acc_norm divides each ending's log-likelihood by its UTF-8 bytes; {:.1f} s)\n",
             rep.seconds);
}

void print_generations(const std::vector<Generation>& gens, int64_t max_new_tokens) {
  for (const Generation& g : gens) {
    size_t w = 5;
    for (const Generation::Output& o : g.outputs) w = std::max(w, o.model.size());
    fmt::print("\ngenerate  greedy, up to {} new tokens\nprompt    {}\n", max_new_tokens, g.prompt);
    for (size_t i = 0; i < g.outputs.size(); ++i) {
      const Generation::Output& o = g.outputs[i];
      std::string shown;  // one line per model: newlines shown as ⏎
      for (const char c : o.text) {
        if (c == '\n') {
          shown += "⏎";
        } else {
          shown += c;
        }
      }
      fmt::print("{:<{}}  {}\n", o.model, w, shown);
      if (i > 0) {
        fmt::print("{:<{}}  (same tokens as {} for the first {} of {})\n", "", w, g.outputs[0].model,
                   o.same_prefix_as_first, o.ids.size());
      }
    }
  }
}

}  // namespace calq::cli
