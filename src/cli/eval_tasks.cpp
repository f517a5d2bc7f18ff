#include "cli/eval_tasks.h"

#include <fmt/format.h>

#include <algorithm>

#include "cli/progress.h"
#include "eval/generate.h"
#include "eval/multiple_choice.h"

namespace calq::cli {
namespace {

nlohmann::json interval(const eval::Interval& i) { return nlohmann::json::array({i.lo, i.hi}); }

size_t name_width(std::span<const TaskModel> models) {
  size_t w = 5;
  for (const TaskModel& m : models) w = std::max(w, m.name.size());
  return w;
}

}  // namespace

nlohmann::ordered_json run_multiple_choice_task(const std::string& jsonl, int64_t max_items,
                                                std::span<const TaskModel> models, bool has_reference,
                                                const io::Tokenizer& tokenizer, bool quiet, ThreadPool& pool) {
  const std::vector<eval::McItem> items = eval::read_hellaswag_jsonl(jsonl);
  std::vector<const model::Model*> ptrs;
  for (const TaskModel& m : models) ptrs.push_back(m.model);
  ProgressBar bar("items", 1, !quiet);
  const eval::McReport rep = eval::score_multiple_choice(
      ptrs, tokenizer, items, {.max_items = max_items, .on_progress = [&](int64_t d, int64_t t) { bar.update(d, t); }},
      pool);
  bar.finish();

  const size_t w = name_width(models);
  fmt::print("\nmultiple choice  {} ({} items, {} endings tokenized on their own); 95% CIs over items\n", jsonl,
             rep.n_items, rep.n_fallback_endings);
  fmt::print("{:<{}}  {:>20}  {:>20}  {:>22}  {:>22}\n", "model", w, "acc % ± 95%", "acc_norm % ± 95%",
             has_reference ? "same answer as ref %" : "", has_reference ? "same (norm) as ref %" : "");
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (size_t i = 0; i < models.size(); ++i) {
    const eval::McModelResult& r = rep.models[i];
    std::string agree, agree_norm;
    nlohmann::ordered_json j;
    j["model"] = models[i].name;
    j["acc"] = r.acc;
    j["acc_ci95"] = interval(r.acc_ci);
    j["acc_norm"] = r.acc_norm;
    j["acc_norm_ci95"] = interval(r.acc_norm_ci);
    if (has_reference && i > 0) {
      const eval::McAgreement& a = rep.agreement[i - 1];
      agree = fmt::format("{:.2f} ± {:.2f}", 100 * a.chosen_agreement, 100 * (a.chosen_agreement_ci.hi - a.chosen_agreement));
      agree_norm = fmt::format("{:.2f} ± {:.2f}", 100 * a.chosen_norm_agreement,
                               100 * (a.chosen_norm_agreement_ci.hi - a.chosen_norm_agreement));
      j["agreement_with_ref"] = a.chosen_agreement;
      j["agreement_with_ref_ci95"] = interval(a.chosen_agreement_ci);
      j["agreement_norm_with_ref"] = a.chosen_norm_agreement;
      j["agreement_norm_with_ref_ci95"] = interval(a.chosen_norm_agreement_ci);
    }
    fmt::print("{:<{}}  {:>20}  {:>20}  {:>22}  {:>22}\n", models[i].name, w,
               fmt::format("{:.2f} ± {:.2f}", 100 * r.acc, 100 * (r.acc_ci.hi - r.acc)),
               fmt::format("{:.2f} ± {:.2f}", 100 * r.acc_norm, 100 * (r.acc_norm_ci.hi - r.acc_norm)), agree,
               agree_norm);
    j["chosen"] = r.chosen;
    j["chosen_norm"] = r.chosen_norm;
    list.push_back(std::move(j));
  }
  fmt::print("(chance is 25 %; acc_norm divides each ending's log-likelihood by its UTF-8 bytes; {:.1f} s)\n",
             rep.seconds);
  nlohmann::ordered_json out;
  out["file"] = jsonl;
  out["n_items"] = rep.n_items;
  out["n_fallback_endings"] = rep.n_fallback_endings;
  out["models"] = std::move(list);
  return out;
}

nlohmann::ordered_json run_generate_task(const std::vector<std::string>& prompts, int64_t max_new_tokens,
                                         std::span<const TaskModel> models, const io::Tokenizer& tokenizer,
                                         ThreadPool& pool) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  const size_t w = name_width(models);
  for (const std::string& prompt : prompts) {
    const std::vector<int32_t> ids = tokenizer.encode(prompt, /*add_special_tokens=*/true);
    fmt::print("\ngenerate  greedy, up to {} new tokens\nprompt    {}\n", max_new_tokens, prompt);
    nlohmann::ordered_json entry;
    entry["prompt"] = prompt;
    entry["prompt_ids"] = ids;
    nlohmann::ordered_json outputs = nlohmann::ordered_json::array();
    std::vector<int32_t> first;
    for (size_t i = 0; i < models.size(); ++i) {
      const std::vector<int32_t> gen =
          eval::generate_greedy(*models[i].model, ids, max_new_tokens, models[i].model->config.eos_token_id, pool);
      if (i == 0) first = gen;
      // The first position where this model's tokens leave the first model's (the reference's).
      size_t same = 0;
      while (same < gen.size() && same < first.size() && gen[same] == first[same]) ++same;
      const std::string text = tokenizer.decode(gen, /*skip_special_tokens=*/true);
      std::string shown;  // one line per model: newlines shown as ⏎
      for (const char c : text) {
        if (c == '\n') {
          shown += "⏎";
        } else {
          shown += c;
        }
      }
      fmt::print("{:<{}}  {}\n", models[i].name, w, shown);
      if (i > 0) fmt::print("{:<{}}  (same tokens as {} for the first {} of {})\n", "", w, models[0].name, same, gen.size());
      outputs.push_back({{"model", models[i].name}, {"ids", gen}, {"text", text}, {"same_prefix_as_first", same}});
    }
    entry["outputs"] = std::move(outputs);
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace calq::cli
