// `calq eval`: perplexity of a model on a text file (protocol gptq-windows).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_paths.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sha256.h"
#include "eval/perplexity.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace calq::cli {
namespace {

struct EvalFlags {
  std::string model;
  std::string text;
  std::string protocol = "gptq-windows";
  int64_t ctx = 512;
  int64_t max_windows = 0;
  size_t threads = 0;
  std::string json_out;
  bool quiet = false;
};

void run_eval(const EvalFlags& f) {
  if (f.protocol != "gptq-windows") {
    fail(ErrorKind::kInvalidArgument, "--protocol '{}' is not supported (supported: gptq-windows)", f.protocol);
  }
  ThreadPool pool(f.threads);
  const auto folder = require_hf_folder(f.model);
  const io::Tokenizer tokenizer = io::Tokenizer::from_file(folder / "tokenizer.json");
  const std::string text = read_text_file(f.text);
  const std::vector<int32_t> ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  if (!f.quiet) fmt::print(stderr, "calq eval: {} tokens from {}; loading {}\n", ids.size(), f.text, f.model);
  const model::Model model = model::load_hf_model(folder, pool);

  ProgressBar bar("windows", f.ctx, !f.quiet);
  const eval::PerplexityResult r = eval::evaluate_perplexity(
      model, ids, {.ctx = f.ctx, .max_windows = f.max_windows, .on_progress = [&](int64_t d, int64_t t) { bar.update(d, t); }},
      pool);
  bar.finish();
  const std::string sha = token_ids_sha256(ids);

  fmt::print("model       {}\n", f.model);
  fmt::print("text        {}\n", f.text);
  fmt::print("protocol    gptq-windows, ctx {}\n", f.ctx);
  fmt::print("tokens      {} (sha256 {})\n", ids.size(), sha);
  fmt::print("windows     {} ({} predicted tokens)\n", r.n_windows, r.n_predicted);
  fmt::print("PPL         {:.4f}\n", r.ppl);
  fmt::print("speed       {:.1f} s, {:.0f} tokens/s on {} threads\n", r.seconds, r.tokens_per_second,
             pool.num_threads());

  if (!f.json_out.empty()) {
    nlohmann::ordered_json j;
    j["protocol"] = "gptq-windows";
    j["ctx"] = f.ctx;
    j["model"] = f.model;
    j["text"] = f.text;
    j["n_tokens"] = ids.size();
    j["n_windows"] = r.n_windows;
    j["n_predicted"] = r.n_predicted;
    j["token_ids_sha256"] = sha;
    j["first_64_ids"] = std::vector<int32_t>(ids.begin(), ids.begin() + std::min<size_t>(64, ids.size()));
    j["ppl"] = r.ppl;
    if (r.n_windows >= 8) j["ppl_first_8_windows"] = eval::ppl_of_prefix(r, 8);
    j["nll_per_window"] = r.nll_per_window;
    j["seconds"] = r.seconds;
    j["tokens_per_second"] = r.tokens_per_second;
    j["threads"] = pool.num_threads();
    const std::string out = j.dump(1) + "\n";
    write_file_atomic(f.json_out, std::as_bytes(std::span(out.data(), out.size())));
  }
}

}  // namespace

void register_eval(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand("eval", "Perplexity of a model on a text file");
  cmd->add_option("--model", flags->model, "Hugging Face model folder")->required();
  cmd->add_option("--text", flags->text, "Plain-text file to evaluate on")->required();
  cmd->add_option("--protocol", flags->protocol, "Evaluation protocol")->capture_default_str();
  cmd->add_option("--ctx", flags->ctx, "Window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--max-windows", flags->max_windows, "Evaluate at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--json", flags->json_out, "Write the full result as JSON to this file");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_eval(*flags); });
}

}  // namespace calq::cli
