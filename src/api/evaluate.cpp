// calq::evaluate (calq/evaluate.h): eval/compare.h, eval/perplexity.h, eval/multiple_choice.h and
// eval/generate.h over models loaded by api/model_source.h, all on the token ids of one tokenizer.
#include "calq/evaluate.h"

#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <optional>

#include "api/adapters.h"
#include "api/eval_json.h"
#include "api/model_source.h"
#include "api/reporter.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/sha256.h"
#include "core/thread_pool.h"
#include "eval/compare.h"
#include "eval/generate.h"
#include "eval/multiple_choice.h"
#include "eval/perplexity.h"
#include "formats/int_dot.h"
#include "io/tokenizer/gguf_vocab.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "quant/act_quant.h"

namespace calq {
namespace {

std::string display_name(const api::LoadedModel& m) {
  const std::filesystem::path& path = m.location.path;
  const std::filesystem::path p = path.has_filename() ? path : path.parent_path();
  const Format* kv = m.model.config.kv_cache;
  std::string name = p.filename().string();
  if (m.model.has_adapters()) name += " +lora";
  return kv != nullptr ? name + " kv:" + kv->name() : name;
}

Interval interval(const eval::Interval& i) { return {.lo = i.lo, .hi = i.hi}; }

std::vector<ActQuantCounts> act_quant_counts(const model::Model& m) {
  std::vector<ActQuantCounts> out;
  for (const quant::ActQuantLayerCounts& c : quant::activation_quant_counts(m)) {
    out.push_back({.layer = c.layer, .role = std::string(model::role_name(c.role)),
                   .kind = std::string(model::activation_quant_name(c.spec.kind)), .calls = c.counts.calls,
                   .rows = c.counts.rows, .columns = c.counts.columns, .outlier_columns = c.counts.outlier_columns,
                   .saturated = c.counts.saturated, .outlier_share = c.outlier_share()});
  }
  return out;
}

ModelScore score_of(const api::LoadedModel& m) {
  return {.model = m.arg, .name = display_name(m), .format = std::string(api::format_name(m.location.format)),
          .architecture = m.model.config.model_type,
          .kv_cache = m.model.config.kv_cache != nullptr ? m.model.config.kv_cache->name() : "f32",
          .bits_per_weight = m.model.bits_per_weight()};
}

void fill_score(ModelScore& s, const eval::CompareResult& r) {
  s.ppl = r.ppl;
  s.ppl_ref = r.ppl_ref;
  s.delta_ppl = r.delta_ppl;
  s.delta_ppl_ci = interval(r.delta_ppl_ci);
  s.ppl_ratio = r.ppl_ratio;
  s.ppl_ratio_ci = interval(r.ppl_ratio_ci);
  s.kld_mean = r.kld_mean;
  s.kld_mean_ci = interval(r.kld_mean_ci);
  s.kld_median = r.kld.median;
  s.kld_p90 = r.kld.p90;
  s.kld_p99 = r.kld.p99;
  s.kld_p999 = r.kld.p999;
  s.kld_max = r.kld.max;
  s.top1_agreement = r.top1_agreement;
  s.top1_agreement_ci = interval(r.top1_agreement_ci);
  s.accuracy = r.accuracy;
  s.ece = r.ece;
  s.ece_delta = r.ece_delta;
  s.flips_lost = r.flips_lost;
  s.flips_gained = r.flips_gained;
  s.nll_per_window = r.nll_per_window;
  s.kld_per_window = r.kld_per_window;
  s.top1_per_window = r.top1_per_window;
  s.forward_seconds = r.forward_seconds;
  s.tokens_per_second = r.tokens_per_second;
}

// llama.cpp's converter gives a SentencePiece-style ("llama") vocabulary built from a BPE
// tokenizer.json the placeholder score -1000 for every token and no merges; llama.cpp's
// score-driven merging then degenerates to left-to-right merging and segments text differently
// from the model's own tokenizer (the reference model's GGUF: 4.6 % more tokens on heldout.txt).
// Perplexities over such a token stream are not comparable with the HF model's, so say so.
std::optional<std::string> flat_spm_scores_warning(const io::GgufFile& gguf) {
  const io::GgufVocab vocab = io::read_gguf_vocab(gguf);
  if (vocab.type != io::GgufVocabType::kSpm || vocab.scores.size() < 2) return std::nullopt;
  const float first = vocab.scores.front();
  for (const float s : vocab.scores) {
    if (s != first) return std::nullopt;
  }
  return fmt::format(
      "{}: every tokenizer.ggml.scores entry is {} (a GGUF converted from a BPE tokenizer.json); llama.cpp's "
      "score-driven merging then segments text differently from the original tokenizer. To compare with the HF "
      "model on identical tokens, set the tokenizer option to its tokenizer.json.",
      gguf.path().string(), first);
}

void check_job(const EvalJob& job) {
  if (job.models.empty()) fail(ErrorKind::kInvalidArgument, "evaluate: no model given");
  if (job.text.empty() && job.hellaswag.empty() && job.generate.empty()) {
    fail(ErrorKind::kInvalidArgument,
         "nothing to evaluate: give a text (perplexity, and with a reference the comparison), a hellaswag file or "
         "prompts to generate from");
  }
  if (job.ctx < 2) fail(ErrorKind::kInvalidArgument, "evaluate: ctx must be at least 2, got {}", job.ctx);
  if (job.max_windows < 0) fail(ErrorKind::kInvalidArgument, "evaluate: max_windows must be >= 0");
  if (job.mc_items < 0 || job.max_new_tokens < 0) {
    fail(ErrorKind::kInvalidArgument, "evaluate: mc_items and max_new_tokens must be >= 0");
  }
  if (job.reference.empty() && job.models.size() != 1) {
    fail(ErrorKind::kInvalidArgument,
         "evaluate: {} models given and no reference; several models are each compared with a reference model",
         job.models.size());
  }
  if (job.reference.empty() && job.kv_cache.size() > 1) {
    fail(ErrorKind::kInvalidArgument,
         "evaluate: kv_cache lists {} formats; one model without a reference takes one (with a reference, each is "
         "compared with it)",
         job.kv_cache.size());
  }
  api::check_output_folder(job.json_out);
}

void run_text(const EvalJob& job, const std::optional<api::LoadedModel>& ref, const std::vector<api::LoadedModel>& models,
              const io::Tokenizer& tokenizer, api::Reporter& report, ThreadPool& pool, EvalReport& out) {
  const std::vector<int32_t> ids = api::load_eval_ids(job.text, tokenizer);
  out.has_text = true;
  out.n_tokens = static_cast<int64_t>(ids.size());
  out.token_ids_sha256 = token_ids_sha256(ids);
  out.first_ids.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(64, ids.size())));
  report("evaluate", 0, 0, fmt::format("{} tokens from {}", ids.size(), job.text));
  const auto on_progress = [&](int64_t done, int64_t total) { report("evaluate", done, total); };

  if (!ref) {
    const api::LoadedModel& m = models.front();
    const eval::PerplexityResult r = eval::evaluate_perplexity(
        m.model, ids, {.ctx = job.ctx, .max_windows = job.max_windows, .on_progress = on_progress}, pool);
    ModelScore s = score_of(m);
    s.ppl = r.ppl;
    s.nll_per_window = r.nll_per_window;
    s.forward_seconds = r.seconds;
    s.tokens_per_second = r.tokens_per_second;
    out.n_windows = r.n_windows;
    out.n_predicted = r.n_predicted;
    out.seconds = r.seconds;
    out.models.push_back(std::move(s));
    return;
  }
  std::vector<const model::Model*> ptrs;
  for (const auto& m : models) ptrs.push_back(&m.model);
  const eval::CompareReport rep = eval::compare_models(
      ref->model, ptrs, ids, {.ctx = job.ctx, .max_windows = job.max_windows, .on_progress = on_progress}, pool);
  out.n_windows = rep.n_windows;
  out.n_predicted = rep.n_predicted;
  out.ref_accuracy = rep.ref_accuracy;
  out.ref_ece = rep.ref_ece;
  out.ref_forward_seconds = rep.ref_forward_seconds;
  out.ref_tokens_per_second = rep.ref_tokens_per_second;
  out.seconds = rep.seconds;
  if (!rep.candidates.empty()) {
    out.ppl_ref = rep.candidates[0].ppl_ref;
    out.nll_ref_per_window = rep.candidates[0].nll_ref_per_window;
  }
  for (size_t i = 0; i < models.size(); ++i) {
    ModelScore s = score_of(models[i]);
    fill_score(s, rep.candidates[i]);
    s.activation_quant = act_quant_counts(models[i].model);
    out.models.push_back(std::move(s));
  }
}

// The models of the tasks beside perplexity and their display names: the reference first (named
// "reference") when there is one.
struct TaskModels {
  std::vector<const api::LoadedModel*> models;
  std::vector<std::string> names;
  bool has_reference = false;
};

ChoiceReport run_choices(const EvalJob& job, const TaskModels& tasks, const io::Tokenizer& tokenizer,
                         api::Reporter& report, ThreadPool& pool) {
  const std::vector<const api::LoadedModel*>& models = tasks.models;
  const std::vector<eval::McItem> items = eval::read_hellaswag_jsonl(job.hellaswag);
  std::vector<const model::Model*> ptrs;
  for (const api::LoadedModel* m : models) ptrs.push_back(&m->model);
  report("multiple-choice", 0, 0, fmt::format("multiple choice: {} items of {}", items.size(), job.hellaswag));
  const eval::McReport rep = eval::score_multiple_choice(
      ptrs, tokenizer, items,
      {.max_items = job.mc_items, .on_progress = [&](int64_t d, int64_t t) { report("multiple-choice", d, t); }}, pool);
  ChoiceReport out{.file = job.hellaswag, .n_items = rep.n_items, .n_fallback_endings = rep.n_fallback_endings,
                   .seconds = rep.seconds};
  for (size_t i = 0; i < models.size(); ++i) {
    const eval::McModelResult& r = rep.models[i];
    ChoiceScore s{.model = tasks.names[i], .acc = r.acc,
                  .acc_norm = r.acc_norm, .acc_ci = interval(r.acc_ci), .acc_norm_ci = interval(r.acc_norm_ci),
                  .chosen = r.chosen, .chosen_norm = r.chosen_norm};
    if (tasks.has_reference && i > 0) {
      const eval::McAgreement& a = rep.agreement[i - 1];
      s.agreement = a.chosen_agreement;
      s.agreement_norm = a.chosen_norm_agreement;
      s.agreement_ci = interval(a.chosen_agreement_ci);
      s.agreement_norm_ci = interval(a.chosen_norm_agreement_ci);
    }
    out.models.push_back(std::move(s));
  }
  return out;
}

std::vector<Generation> run_generate(const EvalJob& job, const TaskModels& tasks, const io::Tokenizer& tokenizer,
                                     api::Reporter& report, ThreadPool& pool) {
  const std::vector<const api::LoadedModel*>& models = tasks.models;
  std::vector<Generation> out;
  for (const std::string& prompt : job.generate) {
    Generation g{.prompt = prompt, .prompt_ids = tokenizer.encode(prompt, /*add_special_tokens=*/true)};
    for (size_t i = 0; i < models.size(); ++i) {
      const model::Model& m = models[i]->model;
      std::vector<int32_t> ids = eval::generate_greedy(m, g.prompt_ids, job.max_new_tokens, m.config.eos_token_id, pool);
      // The first position where this model's tokens leave the first model's (the reference's).
      int64_t same = 0;
      const std::vector<int32_t>& first = g.outputs.empty() ? ids : g.outputs.front().ids;
      while (static_cast<size_t>(same) < ids.size() && static_cast<size_t>(same) < first.size() &&
             ids[static_cast<size_t>(same)] == first[static_cast<size_t>(same)]) {
        ++same;
      }
      std::string text = tokenizer.decode(ids, /*skip_special_tokens=*/true);
      g.outputs.push_back({.model = tasks.names[i],
                           .ids = std::move(ids), .text = std::move(text), .same_prefix_as_first = same});
      report("generate", static_cast<int64_t>(i + 1), static_cast<int64_t>(models.size()));
    }
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace

EvalReport evaluate(const EvalJob& job) {
  check_job(job);
  api::Reporter report(job.progress);
  ThreadPool pool(job.threads);
  std::vector<const Format*> kv;
  for (const std::string& name : job.kv_cache) kv.push_back(model::kv_cache_format_by_name(name));
  if (kv.empty()) kv.push_back(nullptr);

  EvalReport out{.reference = job.reference, .text = job.text, .ctx = job.ctx,
                 .threads = static_cast<int>(pool.num_threads())};
  report("load", 0, 0, fmt::format("loading {} model(s)", job.models.size() + (job.reference.empty() ? 0 : 1)));
  std::optional<api::LoadedModel> ref;
  if (!job.reference.empty()) {
    ref.emplace(api::load_model(job.reference, pool, {.keep_source_dtype = true}));
    out.reference_format = std::string(api::format_name(ref->location.format));
    out.reference_architecture = ref->model.config.model_type;
  }
  std::vector<api::LoadedModel> models;
  for (const std::string& m : job.models)
    for (const Format* k : kv) models.push_back(api::load_model(m, pool, {.keep_source_dtype = true, .kv_cache = k}));
  for (api::LoadedModel& m : models) model::set_fast_kernels(m.model, !job.exact);
  // The reference on the same float kernel as the models' float weights (so a model compared with
  // itself gives exactly 0), never on the integer kernels.
  if (ref) model::set_fast_kernels(ref->model, !job.exact, /*float_only=*/true);
  reset_kernel_counts();
  // An unknown CALQ_KERNEL_LEVEL value is ignored; say so rather than run at another level silently.
  if (std::string note = kernel_level_note(); !job.exact && !note.empty()) report.warn(std::move(note));
  std::vector<std::optional<AdapterInfo>> adapters(models.size());
  if (!job.adapter.empty()) {
    std::map<std::string, std::string> hashes;  // one hash per file, however many KV-cache variants
    for (size_t i = 0; i < models.size(); ++i) {
      std::string& hash = hashes[models[i].arg];
      if (hash.empty() && !job.adapter_skip_hash_check) hash = api::model_source_sha256(models[i].location.path);
      report("load", 0, 0, fmt::format("adapters {} onto {}", job.adapter, models[i].arg));
      adapters[i] = api::load_adapters(models[i], job.adapter, job.adapter_skip_hash_check, hash);
    }
  }
  const api::LoadedModel& tok_owner = ref ? *ref : models.front();
  if (job.tokenizer.empty() && tok_owner.gguf != nullptr) {
    if (auto w = flat_spm_scores_warning(*tok_owner.gguf)) report.warn(std::move(*w));
  }
  const io::Tokenizer tokenizer =
      api::load_model_tokenizer(tok_owner.location, tok_owner.gguf.get(), job.tokenizer, out.tokenizer);

  if (!job.text.empty()) run_text(job, ref, models, tokenizer, report, pool, out);
  if (job.text.empty()) {
    for (const api::LoadedModel& m : models) out.models.push_back(score_of(m));
  }
  for (size_t i = 0; i < out.models.size(); ++i) out.models[i].adapters = adapters[i];
  TaskModels tasks{.has_reference = ref.has_value()};
  if (ref) {
    tasks.models.push_back(&*ref);
    tasks.names.emplace_back("reference");
  }
  for (const api::LoadedModel& m : models) {
    tasks.models.push_back(&m);
    tasks.names.push_back(display_name(m));
  }
  if (!job.hellaswag.empty()) out.multiple_choice = run_choices(job, tasks, tokenizer, report, pool);
  if (!job.generate.empty()) out.generations = run_generate(job, tasks, tokenizer, report, pool);
  out.warnings = report.warnings();
  out.kernel_level = std::string(kernel_level_name(kernel_level()));
  for (const KernelCount& c : kernel_counts()) out.kernel_calls.emplace_back(c.key, c.calls);
  out.json = api::eval_report_json(out);
  if (!job.json_out.empty()) api::write_text_atomic(job.json_out, out.json);
  return out;
}

}  // namespace calq
