// calq::finetune (calq/finetune.h): the text split (io/dataset/text_split.h), the base quantized
// by the format form's round to nearest (pipeline/model_quantize.h), LoRA training
// (quant/lora_finetune.h) and the validation perplexities (eval/perplexity.h).
#include "calq/finetune.h"

#include "calq/calq.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <optional>
#include <utility>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "api/adapters.h"
#include "api/model_source.h"
#include "api/reporter.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "eval/perplexity.h"
#include "formats/format.h"
#include "io/dataset/text_split.h"
#include "model/gguf_export.h"
#include "model/peft_adapter.h"
#include "pipeline/model_quantize.h"
#include "quant/lora_finetune.h"

namespace calq {
namespace {

namespace fs = std::filesystem;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check_job(const FinetuneJob& job) {
  if (job.model.empty()) fail(ErrorKind::kInvalidArgument, "finetune: no model given");
  if (job.text.empty()) fail(ErrorKind::kInvalidArgument, "finetune: no text given");
  if (job.ctx < 2) fail(ErrorKind::kInvalidArgument, "finetune: ctx must be at least 2, got {}", job.ctx);
  io::parse_text_split(job.split);
  if (job.format != "none") format_by_name(job.format);  // an unknown format fails here, before any work
  api::check_output_folder(job.json_out);
  if (!job.out.empty()) {
    const fs::path out(job.out);
    std::error_code ec;
    if (fs::exists(out, ec)) {
      if (!job.force)
        fail(ErrorKind::kInvalidArgument, "{}: output folder exists; replacing it needs the force option", job.out);
      // It is removed whole: only a folder this command (or an adapter writer) made, or an empty one.
      const bool ours = fs::is_directory(out, ec) &&
                        (fs::is_empty(out, ec) || fs::exists(out / "finetune.json", ec) ||
                         fs::exists(out / model::kPeftConfigFile, ec));
      if (!ours)
        fail(ErrorKind::kInvalidArgument,
             "{}: exists and is not a finetune output folder (no finetune.json or adapter_config.json); force "
             "replaces only such a folder or an empty one", job.out);
    }
    api::check_output_folder(job.out + fmt::format(".calq-tmp-{}", getpid()));
  }
}

// Validation perplexity of `m` on all windows of `ids`.
double validation_ppl(const model::Model& m, const std::vector<int32_t>& ids, int64_t ctx, const char* what,
                      ThreadPool& pool, api::Reporter& report, int64_t& windows) {
  const eval::PerplexityResult r = eval::evaluate_perplexity(
      m, ids, {.ctx = ctx, .on_progress = [&](int64_t done, int64_t total) { report("evaluate", done, total); }},
      pool);
  windows = r.n_windows;
  report("evaluate", r.n_windows, r.n_windows,
         fmt::format("{}: validation PPL {:.3f} ({} windows of {}, {:.0f} tok/s)", what, r.ppl, r.n_windows, ctx,
                     r.tokens_per_second));
  return r.ppl;
}

std::string report_json(const FinetuneReport& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model;
  j["text"] = r.text;
  j["split"] = {{"mode", r.split}, {"train_units", r.train_units}, {"validation_units", r.validation_units},
                {"train_tokens", r.train_tokens}, {"validation_tokens", r.validation_tokens}};
  j["base"] = {{"format", r.format}, {"bits_per_weight", r.bits_per_weight_base}};
  j["lora"] = {{"rank", r.rank}, {"alpha", r.alpha}, {"dropout", r.dropout}, {"targets", r.targets},
               {"adapter_parameters", r.adapter_parameters}};
  j["training"] = {{"lr", r.lr}, {"steps", r.steps}, {"batch", r.batch}, {"ctx", r.ctx},
                   {"tokens", r.tokens_trained}, {"seconds", r.seconds_train},
                   {"tokens_per_second", r.tokens_per_second}, {"curve", r.curve}};
  nlohmann::ordered_json val = nlohmann::ordered_json::array();
  for (const FinetuneValidation& v : r.validation) val.push_back({{"step", v.step}, {"loss", v.loss}, {"ppl", v.ppl}});
  j["training"]["validation"] = val;
  j["ppl"] = {{"protocol", "gptq-windows"}, {"ctx", r.ctx}, {"windows", r.ppl_windows}};
  if (!r.reference.empty()) j["ppl"]["reference"] = {{"model", r.reference}, {"ppl", r.ppl_reference}};
  j["ppl"]["base"] = r.ppl_base;
  j["ppl"]["trained"] = r.ppl_trained;
  j["seconds"] = r.seconds;
  j["peak_rss_mib"] = r.peak_rss_mib;
  j["threads"] = r.threads;
  j["written"] = r.written;
  return j.dump(2) + "\n";
}

model::GgufExportOptions base_export_options(const FinetuneJob& job) {
  model::GgufExportOptions options;
  options.extra_metadata.emplace_back("calq.recipe",
                                      io::GgufValue::of_string(fmt::format("method=rtn;format={}", job.format)));
  return options;
}

// Writes the outputs into a temporary folder beside `out` (the PEFT writer makes it), then renames
// it to `out`: the adapters as a PEFT folder whose provenance names the base they were trained on
// (base.gguf when the base was quantized here, else the model as given), base.gguf, finetune.json.
void write_outputs(const FinetuneJob& job, model::Model& m, bool quantized_here, FinetuneReport& r, ThreadPool& pool) {
  const fs::path out(job.out);
  const fs::path tmp(job.out + fmt::format(".calq-tmp-{}", getpid()));
  const fs::path base_tmp(job.out + fmt::format(".calq-base-{}.gguf", getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    std::string base_hash = quantized_here ? std::string() : api::model_source_sha256(job.model);
    if (quantized_here) {
      // The base alone (the GGUF writer would embed adapters): they go into their own files.
      std::vector<std::array<std::optional<model::LoraAdapter>, std::size(model::kLayerLinearRoles)>> saved;
      for (auto& layer : m.layers) saved.push_back(std::exchange(layer.adapters, {}));
      try {
        model::write_gguf_model(m, base_tmp, base_export_options(job), pool);
      } catch (...) {
        for (size_t l = 0; l < m.layers.size(); ++l) m.layers[l].adapters = std::move(saved[l]);
        throw;
      }
      for (size_t l = 0; l < m.layers.size(); ++l) m.layers[l].adapters = std::move(saved[l]);
      base_hash = api::model_source_sha256(base_tmp);
    }
    model::write_peft_adapters(
        m, tmp,
        {.provenance = {.base_model_sha256 = base_hash,
                        .base_model_path = quantized_here ? std::string("base.gguf") : job.model,
                        .calq_version = version()},
         .lora_dropout = job.dropout});
    r.written = {std::string(model::kPeftWeightsFile), std::string(model::kPeftConfigFile),
                 std::string(model::kCalqAdapterFile)};
    if (quantized_here) {
      fs::rename(base_tmp, tmp / "base.gguf");
      r.written.emplace_back("base.gguf");
    }
    r.written.emplace_back("finetune.json");
    r.json = report_json(r);
    api::write_text_atomic((tmp / "finetune.json").string(), r.json);
    if (fs::exists(out, ec)) fs::remove_all(out);
    fs::rename(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    fs::remove(base_tmp, ec);
    throw;
  }
}

}  // namespace

FinetuneReport finetune(const FinetuneJob& job) {
  const auto t0 = std::chrono::steady_clock::now();
  check_job(job);
  api::Reporter report(job.progress);
  ThreadPool pool(job.threads);
  FinetuneReport r{.model = job.model, .text = job.text, .split = job.split, .format = job.format,
                   .reference = job.reference, .rank = job.rank, .alpha = job.alpha, .dropout = job.dropout,
                   .lr = job.lr, .batch = job.batch, .ctx = job.ctx};
  r.threads = static_cast<int>(pool.num_threads());
  quant::LoraFinetuneOptions o{.rank = job.rank, .alpha = job.alpha, .dropout = job.dropout,
                               .targets = quant::parse_lora_targets(job.targets), .lr = job.lr,
                               .weight_decay = job.weight_decay, .warmup = job.warmup,
                               .max_grad_norm = job.max_grad_norm, .steps = job.steps, .epochs = job.epochs,
                               .batch = job.batch, .seq_len = job.ctx, .eval_every = job.eval_every,
                               .eval_windows = job.eval_windows, .seed = job.seed};
  for (const model::TensorRole role : o.targets) r.targets.emplace_back(model::role_name(role));

  const io::SplitText parts =
      io::split_text(read_text_file(job.text), io::parse_text_split(job.split), job.val_fraction, job.text);
  r.train_units = parts.train_units;
  r.validation_units = parts.validation_units;

  const bool quantize_base = job.format != "none";
  api::LoadedModel m = api::load_model(job.model, pool, {.keep_source_dtype = quantize_base});
  quant::check_lora_finetune(m.model, o);
  std::string tokenizer_source;
  const io::Tokenizer tokenizer = api::load_model_tokenizer(m.location, m.gguf.get(), "", tokenizer_source);
  const std::vector<int32_t> train_ids = tokenizer.encode(parts.train, false);
  const std::vector<int32_t> val_ids = tokenizer.encode(parts.validation, false);
  r.train_tokens = static_cast<int64_t>(train_ids.size());
  r.validation_tokens = static_cast<int64_t>(val_ids.size());
  report("load", 1, 1,
         fmt::format("{}: {} {} ({}), {} tokens ({} {}s) to train on, {} ({} {}s) to validate on", job.text,
                     job.model, m.model.config.model_type, tokenizer_source, r.train_tokens, r.train_units,
                     job.split == "article" ? "article" : "line", r.validation_tokens, r.validation_units,
                     job.split == "article" ? "article" : "line"));

  if (!job.reference.empty()) {
    const api::LoadedModel ref = api::load_model(job.reference, pool);
    r.ppl_reference = validation_ppl(ref.model, val_ids, job.ctx, "reference", pool, report, r.ppl_windows);
  }
  if (quantize_base) {
    pipeline::ModelQuantizeOptions qo{.format = &format_by_name(job.format)};
    const auto plan = pipeline::plan_model_quantization(m.model, qo);
    int64_t done = 0;
    pipeline::quantize_model(
        m.model, qo, {}, {}, nullptr,
        [&](const pipeline::QuantizeProgress&) { report("quantize", ++done, static_cast<int64_t>(plan.size())); },
        pool);
    report("quantize", done, done, fmt::format("base: {} (rtn), {:.3f} bits per weight", job.format,
                                               m.model.bits_per_weight()));
    // What the GGUF writer refuses (its metadata: the tokenizer, the types) fails now, not after training.
    if (!job.out.empty()) model::gguf_model_metadata(m.model, base_export_options(job));
  }
  r.bits_per_weight_base = m.model.bits_per_weight();
  r.ppl_base = validation_ppl(m.model, val_ids, job.ctx, "base", pool, report, r.ppl_windows);

  const quant::LoraProgressFn on_step = [&](const quant::LoraProgress& p) {
    std::string msg = fmt::format("lora step {}/{}: loss {:.4f}, lr {:.3g}, {:.0f} tok/s, {:.0f} s, ETA {:.0f} s",
                                  p.done, p.total, p.loss, p.lr, p.tokens_per_second, p.seconds, p.eta_seconds);
    if (p.val_loss) msg += fmt::format("; validation loss {:.4f} (PPL {:.2f})", *p.val_loss, std::exp(*p.val_loss));
    report("train", p.done, p.total, msg);
  };
  const quant::LoraFinetuneResult t = quant::lora_finetune(m.model, train_ids, val_ids, o, pool, &on_step);
  r.steps = t.steps;
  r.tokens_trained = t.tokens;
  r.adapter_parameters = t.adapter_parameters;
  r.curve = t.curve;
  for (const quant::LoraValidation& v : t.validation) r.validation.push_back({v.step, v.loss, v.ppl});
  r.seconds_train = t.seconds;
  r.tokens_per_second = t.seconds > 0 ? static_cast<double>(t.tokens) / t.seconds : 0;
  r.ppl_trained = validation_ppl(m.model, val_ids, job.ctx, "base + LoRA", pool, report, r.ppl_windows);

  r.peak_rss_mib = api::peak_rss_mib();
  r.seconds = seconds_since(t0);
  if (!job.out.empty()) {
    write_outputs(job, m.model, quantize_base, r, pool);
  } else {
    r.json = report_json(r);
  }
  if (!job.json_out.empty()) api::write_text_atomic(job.json_out, r.json);
  return r;
}

}  // namespace calq
