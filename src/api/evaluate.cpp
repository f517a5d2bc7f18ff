// calq::evaluate (calq/evaluate.h): eval/compare.h and eval/perplexity.h over models loaded by
// api/model_source.h, all on the token ids of one tokenizer.
#include "calq/evaluate.h"

#include <fmt/format.h>

#include <filesystem>
#include <optional>

#include "api/model_source.h"
#include "api/reporter.h"
#include "core/error.h"
#include "core/sha256.h"
#include "core/thread_pool.h"
#include "eval/compare.h"
#include "eval/perplexity.h"
#include "model/kv_cache.h"

namespace calq {
namespace {

std::string display_name(const api::LoadedModel& m) {
  const std::filesystem::path& path = m.location.path;
  const std::filesystem::path p = path.has_filename() ? path : path.parent_path();
  const Format* kv = m.model.config.kv_cache;
  return kv != nullptr ? p.filename().string() + " kv:" + kv->name() : p.filename().string();
}

ModelScore score_of(const api::LoadedModel& m) {
  return {.model = m.arg, .name = display_name(m), .format = std::string(api::format_name(m.location.format)),
          .architecture = m.model.config.model_type,
          .kv_cache = m.model.config.kv_cache != nullptr ? m.model.config.kv_cache->name() : "f32",
          .bits_per_weight = m.model.bits_per_weight()};
}

Interval interval(const eval::Interval& i) { return {.lo = i.lo, .hi = i.hi}; }

}  // namespace

EvalReport evaluate(const EvalJob& job) {
  if (job.models.empty()) fail(ErrorKind::kInvalidArgument, "evaluate: no model given");
  if (job.text.empty()) fail(ErrorKind::kInvalidArgument, "evaluate: no text given");
  if (job.ctx < 2) fail(ErrorKind::kInvalidArgument, "evaluate: ctx must be at least 2, got {}", job.ctx);
  if (job.max_windows < 0) fail(ErrorKind::kInvalidArgument, "evaluate: max_windows must be >= 0");
  if (job.reference.empty() && (job.models.size() != 1 || job.kv_cache.size() > 1)) {
    fail(ErrorKind::kInvalidArgument, "evaluate: several models (or KV-cache formats) need a reference to compare with");
  }
  api::Reporter report(job.progress);
  ThreadPool pool(job.threads);
  std::vector<const Format*> kv;
  for (const std::string& name : job.kv_cache) kv.push_back(model::kv_cache_format_by_name(name));
  if (kv.empty()) kv.push_back(nullptr);

  EvalReport out{.reference = job.reference, .text = job.text, .ctx = job.ctx,
                 .threads = static_cast<int>(pool.num_threads())};
  report("load", 0, 0, fmt::format("loading {} model(s)", job.models.size() + (job.reference.empty() ? 0 : 1)));
  std::optional<api::LoadedModel> ref;
  if (!job.reference.empty()) ref.emplace(api::load_model(job.reference, pool));
  std::vector<api::LoadedModel> models;
  for (const std::string& m : job.models)
    for (const Format* k : kv) models.push_back(api::load_model(m, pool, {.kv_cache = k}));
  const api::LoadedModel& tok_owner = ref ? *ref : models.front();
  const io::Tokenizer tokenizer =
      api::load_model_tokenizer(tok_owner.location, tok_owner.gguf.get(), job.tokenizer, out.tokenizer);
  const std::vector<int32_t> ids = api::load_eval_ids(job.text, tokenizer);
  out.n_tokens = static_cast<int64_t>(ids.size());
  out.token_ids_sha256 = token_ids_sha256(ids);
  const auto on_progress = [&](int64_t done, int64_t total) { report("evaluate", done, total); };

  if (!ref) {
    const eval::PerplexityResult r = eval::evaluate_perplexity(
        models.front().model, ids, {.ctx = job.ctx, .max_windows = job.max_windows, .on_progress = on_progress}, pool);
    ModelScore s = score_of(models.front());
    s.ppl = r.ppl;
    s.tokens_per_second = r.tokens_per_second;
    out.n_windows = r.n_windows;
    out.n_predicted = r.n_predicted;
    out.seconds = r.seconds;
    out.models.push_back(std::move(s));
    return out;
  }
  std::vector<const model::Model*> ptrs;
  for (const auto& m : models) ptrs.push_back(&m.model);
  const eval::CompareReport rep = eval::compare_models(
      ref->model, ptrs, ids, {.ctx = job.ctx, .max_windows = job.max_windows, .on_progress = on_progress}, pool);
  out.n_windows = rep.n_windows;
  out.n_predicted = rep.n_predicted;
  out.ref_accuracy = rep.ref_accuracy;
  out.ref_ece = rep.ref_ece;
  out.seconds = rep.seconds;
  for (size_t i = 0; i < models.size(); ++i) {
    const eval::CompareResult& r = rep.candidates[i];
    ModelScore s = score_of(models[i]);
    out.ppl_ref = r.ppl_ref;
    s.ppl = r.ppl;
    s.ppl_ref = r.ppl_ref;
    s.delta_ppl = r.delta_ppl;
    s.delta_ppl_ci = interval(r.delta_ppl_ci);
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
    s.tokens_per_second = r.tokens_per_second;
    out.models.push_back(std::move(s));
  }
  return out;
}

}  // namespace calq
