// `calq finetune`: flags over calq::finetune (calq/finetune.h): LoRA adapters trained on a frozen
// base (quantized first, nf4-dq by default: QLoRA) on a text file with its own training /
// validation split; prints the validation perplexities before and after.
#include <fmt/format.h>

#include <memory>

#include "calq/finetune.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "core/error.h"

namespace calq::cli {
namespace {

struct FinetuneFlags {
  FinetuneJob job;
  std::string targets = "q,k,v,o,gate,up,down";
  bool quiet = false;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = std::min(s.find(',', start), s.size());
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

void run_finetune(FinetuneFlags& f) {
  f.job.targets = split_commas(f.targets);
  f.job.progress = progress_printer("calq finetune", f.quiet, f.job.ctx, "evaluate");
  const FinetuneReport r = finetune(f.job);
  fmt::print("split ({}): {} {}s / {} tokens to train on, {} / {} tokens to validate on\n", r.split, r.train_units,
             r.split == "article" ? "article" : "line", r.train_tokens, r.validation_units, r.validation_tokens);
  std::string targets;
  for (const auto& t : r.targets) targets += (targets.empty() ? "" : ",") + t;
  fmt::print("lora: rank {}, alpha {}, dropout {}, targets {} ({} adapter parameters); {} steps x {} x {} tokens "
             "= {} tokens in {:.1f} s ({:.0f} tokens/s)\n",
             r.rank, r.alpha, r.dropout, targets, r.adapter_parameters, r.steps, r.batch, r.ctx, r.tokens_trained,
             r.seconds_train, r.tokens_per_second);
  fmt::print("validation PPL (ctx {}, {} windows):\n", r.ctx, r.ppl_windows);
  if (!r.reference.empty()) fmt::print("  {:<28} {:>10.3f}\n", "reference", r.ppl_reference);
  fmt::print("  {:<28} {:>10.3f}\n", fmt::format("base ({}, {:.3f} bpw)", r.format, r.bits_per_weight_base),
             r.ppl_base);
  fmt::print("  {:<28} {:>10.3f}\n", "base + LoRA", r.ppl_trained);
  if (!f.job.out.empty()) {
    std::string files;
    for (const auto& w : r.written) files += (files.empty() ? "" : ", ") + w;
    fmt::print("wrote {}: {}\n", f.job.out, files);
  }
  fmt::print("{:.1f} s, peak RSS {:.1f} MiB, {} threads\n", r.seconds, r.peak_rss_mib, r.threads);
}

}  // namespace

void register_finetune(CLI::App& app) {
  auto flags = std::make_shared<FinetuneFlags>();
  FinetuneJob& j = flags->job;
  CLI::App* cmd = app.add_subcommand(
      "finetune",
      "Train LoRA adapters on a frozen base (quantized first: QLoRA) on a text with its own train/validation split");
  cmd->add_option("model,--model", j.model, "Hugging Face model folder or GGUF file")->required();
  cmd->add_option("--text", j.text, "Text file to train and validate on")->required();
  cmd->add_option("--split", j.split,
                  "article: WikiText articles (an article starts at a line ' = Title = '; ' = = Sub = = ' does not "
                  "start one), the last --val-fraction of them validate; fraction: the last --val-fraction of the "
                  "lines validate")
      ->check(CLI::IsMember({"article", "fraction"}))
      ->capture_default_str();
  cmd->add_option("--val-fraction", j.val_fraction, "Share of the articles (lines) held out for validation")
      ->capture_default_str();
  cmd->add_option("--format", j.format, "Quantize the base to this format first (rtn); none: train on it as loaded")
      ->capture_default_str();
  cmd->add_option("--rank", j.rank, "Adapter rank")->capture_default_str();
  cmd->add_option("--alpha", j.alpha, "Adapter alpha (scale = alpha / rank)")->capture_default_str();
  cmd->add_option("--dropout", j.dropout, "Dropout on the adapters' inputs during training")->capture_default_str();
  cmd->add_option("--targets", flags->targets,
                  "Linears with adapters: comma list of q,k,v,o,gate,up,down (or q_proj, ...; all)")
      ->capture_default_str();
  cmd->add_option("--lr", j.lr, "Peak learning rate (AdamW, cosine decay after warmup)")->capture_default_str();
  cmd->add_option("--weight-decay", j.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--warmup", j.warmup, "Fraction of the steps with a linear warmup")->capture_default_str();
  cmd->add_option("--max-grad-norm", j.max_grad_norm, "Clip the gradient norm (0: off)")->capture_default_str();
  cmd->add_option("--steps", j.steps, "Optimizer steps (0: --epochs passes over the training windows)")
      ->capture_default_str();
  cmd->add_option("--epochs", j.epochs, "Passes over the training windows when --steps is 0")->capture_default_str();
  cmd->add_option("--batch", j.batch, "Windows per step")->capture_default_str();
  cmd->add_option("--ctx", j.ctx, "Window length in tokens (training and perplexity)")->capture_default_str();
  cmd->add_option("--eval-every", j.eval_every, "Validation loss every N steps (0: before and after only)")
      ->capture_default_str();
  cmd->add_option("--eval-windows", j.eval_windows, "Windows of that validation loss (0: all)")->capture_default_str();
  cmd->add_option("--seed", j.seed, "Seed of the adapters' start, the window order and dropout")
      ->capture_default_str();
  cmd->add_option("--reference", j.reference, "Also report this model's validation PPL (e.g. the FP model)");
  cmd->add_option("-o,--out", j.out, "Output folder: the adapters (PEFT files), base.gguf (the quantized base) and finetune.json");
  cmd->add_flag("--force", j.force, "Replace an existing output folder");
  cmd->add_option("--json", j.json_out, "Also write the report as JSON here");
  cmd->add_option("--threads", j.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_finetune(*flags); });
}

}  // namespace calq::cli
