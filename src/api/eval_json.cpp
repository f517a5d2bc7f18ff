#include "api/eval_json.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "eval/compare.h"

namespace calq::api {
namespace {

using Json = nlohmann::ordered_json;

// NaN ends (an undefined interval) are written as null.
Json interval(const Interval& i) { return Json::array({i.lo, i.hi}); }

Json act_counts_json(const std::vector<ActQuantCounts>& counts) {
  Json list = Json::array();
  for (const ActQuantCounts& c : counts) {
    list.push_back({{"layer", c.layer},
                    {"role", c.role},
                    {"kind", c.kind},
                    {"calls", c.calls},
                    {"rows", c.rows},
                    {"columns", c.columns},
                    {"outlier_columns", c.outlier_columns},
                    {"outlier_share", c.outlier_share},
                    {"saturated", c.saturated}});
  }
  return list;
}

Json adapters_json(const AdapterInfo& a, double model_bits_per_weight) {
  return {{"folder", a.folder},
          {"count", a.count},
          {"r", a.r},
          {"rank_min", a.rank_min},
          {"rank_max", a.rank_max},
          {"lora_alpha", a.lora_alpha},
          {"bytes", a.bytes},
          {"bits_per_weight", a.bits_per_weight},
          {"model_bits_per_weight", model_bits_per_weight},
          {"hash_checked", a.hash_checked},
          {"base_model_sha256", a.base_model_sha256}};
}

// Which matmul kernels ran (EvalReport::kernel_level / kernel_calls).
void kernels_json(const EvalReport& r, Json& j) {
  Json calls = Json::object();
  for (const auto& [key, n] : r.kernel_calls) calls[key] = n;
  j["kernels"] = {{"level", r.kernel_level}, {"calls", calls}};
}

void single_json(const EvalReport& r, Json& j) {
  const ModelScore& m = r.models.front();
  j["protocol"] = "gptq-windows";
  j["ctx"] = r.ctx;
  j["model"] = m.model;
  j["model_format"] = m.format;
  j["architecture"] = m.architecture;
  j["tokenizer"] = r.tokenizer;
  j["text"] = r.text;
  j["n_tokens"] = r.n_tokens;
  j["n_windows"] = r.n_windows;
  j["n_predicted"] = r.n_predicted;
  j["token_ids_sha256"] = r.token_ids_sha256;
  j["first_64_ids"] = r.first_ids;
  j["kv_cache"] = m.kv_cache;
  if (m.adapters) j["adapters"] = adapters_json(*m.adapters, m.bits_per_weight);
  j["ppl"] = m.ppl;
  if (r.n_windows >= 8) {
    // The perplexity of the first 8 windows (as eval::ppl_of_prefix computes it).
    double nll = 0.0;
    for (size_t i = 0; i < 8; ++i) nll += m.nll_per_window[i];
    j["ppl_first_8_windows"] = std::exp(nll / static_cast<double>(8 * (r.ctx - 1)));
  }
  j["nll_per_window"] = m.nll_per_window;
  j["seconds"] = r.seconds;
  j["tokens_per_second"] = m.tokens_per_second;
  j["threads"] = r.threads;
  kernels_json(r, j);
}

void compare_json(const EvalReport& r, Json& j) {
  j["protocol"] = "gptq-windows";
  j["ctx"] = r.ctx;
  j["reference"] = {{"model", r.reference},
                    {"model_format", r.reference_format},
                    {"architecture", r.reference_architecture}};
  j["tokenizer"] = r.tokenizer;
  j["text"] = r.text;
  j["n_tokens"] = r.n_tokens;
  j["n_windows"] = r.n_windows;
  j["n_predicted"] = r.n_predicted;
  j["token_ids_sha256"] = r.token_ids_sha256;
  j["ci"] = "95%, Student t over per-window values (windows as independent units); null with one window";
  j["kld_percentile_method"] = "linear interpolation between order statistics (Hyndman-Fan type 7)";
  j["ppl_ref"] = r.ppl_ref;
  j["nll_ref_per_window"] = r.nll_ref_per_window;
  j["ref_accuracy"] = r.ref_accuracy;
  j["ref_ece"] = r.ref_ece;
  j["ece_bins"] = eval::kEceBins;
  j["ref_forward_seconds"] = r.ref_forward_seconds;
  j["ref_tokens_per_second"] = r.ref_tokens_per_second;
  j["seconds"] = r.seconds;
  j["threads"] = r.threads;
  kernels_json(r, j);
  Json list = Json::array();
  for (const ModelScore& s : r.models) {
    Json c;
    c["model"] = s.model;
    c["model_format"] = s.format;
    c["architecture"] = s.architecture;
    c["bits_per_weight"] = s.bits_per_weight;
    c["kv_cache"] = s.kv_cache;
    if (s.adapters) c["adapters"] = adapters_json(*s.adapters, s.bits_per_weight);
    c["ppl_ref"] = s.ppl_ref;
    c["ppl"] = s.ppl;
    c["delta_ppl"] = s.delta_ppl;
    c["delta_ppl_ci95"] = interval(s.delta_ppl_ci);
    c["ppl_ratio"] = s.ppl_ratio;
    c["ppl_ratio_ci95"] = interval(s.ppl_ratio_ci);
    c["kld_mean"] = s.kld_mean;
    c["kld_mean_ci95"] = interval(s.kld_mean_ci);
    c["kld_median"] = s.kld_median;
    c["kld_p90"] = s.kld_p90;
    c["kld_p99"] = s.kld_p99;
    c["kld_p999"] = s.kld_p999;
    c["kld_max"] = s.kld_max;
    c["top1_agreement"] = s.top1_agreement;
    c["top1_agreement_ci95"] = interval(s.top1_agreement_ci);
    c["accuracy"] = s.accuracy;
    c["ece"] = s.ece;
    c["ece_delta"] = s.ece_delta;
    c["flips_lost"] = s.flips_lost;
    c["flips_gained"] = s.flips_gained;
    c["n_windows"] = r.n_windows;
    c["n_predicted"] = r.n_predicted;
    c["nll_per_window"] = s.nll_per_window;
    c["kld_per_window"] = s.kld_per_window;
    c["top1_per_window"] = s.top1_per_window;
    if (!s.activation_quant.empty()) c["activation_quant"] = act_counts_json(s.activation_quant);
    c["forward_seconds"] = s.forward_seconds;
    c["tokens_per_second"] = s.tokens_per_second;
    list.push_back(std::move(c));
  }
  j["candidates"] = std::move(list);
}

Json choices_json(const ChoiceReport& rep) {
  Json list = Json::array();
  for (const ChoiceScore& s : rep.models) {
    Json j;
    j["model"] = s.model;
    j["acc"] = s.acc;
    j["acc_ci95"] = interval(s.acc_ci);
    j["acc_norm"] = s.acc_norm;
    j["acc_norm_ci95"] = interval(s.acc_norm_ci);
    if (s.agreement) {
      j["agreement_with_ref"] = *s.agreement;
      j["agreement_with_ref_ci95"] = interval(s.agreement_ci);
      j["agreement_norm_with_ref"] = *s.agreement_norm;
      j["agreement_norm_with_ref_ci95"] = interval(s.agreement_norm_ci);
    }
    j["chosen"] = s.chosen;
    j["chosen_norm"] = s.chosen_norm;
    list.push_back(std::move(j));
  }
  Json out;
  out["file"] = rep.file;
  out["n_items"] = rep.n_items;
  out["n_fallback_endings"] = rep.n_fallback_endings;
  out["models"] = std::move(list);
  return out;
}

Json generations_json(const std::vector<Generation>& gens) {
  Json out = Json::array();
  for (const Generation& g : gens) {
    Json entry;
    entry["prompt"] = g.prompt;
    entry["prompt_ids"] = g.prompt_ids;
    Json outputs = Json::array();
    for (const Generation::Output& o : g.outputs) {
      outputs.push_back({{"model", o.model}, {"ids", o.ids}, {"text", o.text}, {"same_prefix_as_first", o.same_prefix_as_first}});
    }
    entry["outputs"] = std::move(outputs);
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace

std::string eval_report_json(const EvalReport& r) {
  Json j;
  if (r.has_text) {
    if (r.reference.empty()) {
      single_json(r, j);
    } else {
      compare_json(r, j);
    }
  }
  if (r.multiple_choice) j["multiple_choice"] = choices_json(*r.multiple_choice);
  if (!r.generations.empty()) j["generate"] = generations_json(r.generations);
  if (!r.warnings.empty()) j["warnings"] = r.warnings;
  // Decoded generations may hold invalid UTF-8: it is replaced rather than refused.
  return j.dump(1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace calq::api
