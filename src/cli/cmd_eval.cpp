// `calq eval`: perplexity of a model on a text file (protocol gptq-windows).
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <memory>

#include "cli/commands.h"
#include "cli/model_paths.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sha256.h"
#include "eval/perplexity.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "io/tokenizer/gguf_vocab.h"
#include "model/gguf_model.h"
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
  std::string tokenizer;  // tokenizer.json overriding the model's own
  bool quiet = false;
};

// llama.cpp's converter gives a SentencePiece-style ("llama") vocabulary built from a BPE
// tokenizer.json the placeholder score -1000 for every token and no merges; llama.cpp's
// score-driven merging then degenerates to left-to-right merging and segments text differently
// from the model's own tokenizer (the reference model's GGUF: 4.6 % more tokens on heldout.txt).
// Perplexities over such a token stream are not comparable with the HF model's, so say so.
void warn_if_flat_spm_scores(const io::GgufFile& gguf) {
  const io::GgufVocab vocab = io::read_gguf_vocab(gguf);
  if (vocab.type != io::GgufVocabType::kSpm || vocab.scores.size() < 2) return;
  const float first = vocab.scores.front();
  for (const float s : vocab.scores) {
    if (s != first) return;
  }
  fmt::print(stderr,
             "calq eval: warning: {}: every tokenizer.ggml.scores entry is {} (a GGUF converted from a BPE "
             "tokenizer.json); llama.cpp's score-driven merging then segments text differently from the "
             "original tokenizer. To compare with the HF model on identical tokens, pass --tokenizer "
             "path/to/tokenizer.json.\n",
             gguf.path().string(), first);
}

// The model's own tokenizer — tokenizer.json beside an HF model, the tokenizer.ggml.* metadata of
// a GGUF (with llama.cpp's segmentation, which need not equal Hugging Face's) — unless
// --tokenizer names a tokenizer.json to use instead.
io::Tokenizer load_tokenizer(const EvalFlags& f, const ModelLocation& loc, const io::GgufFile* gguf) {
  if (!f.tokenizer.empty()) return io::Tokenizer::from_file(f.tokenizer);
  if (gguf != nullptr) {
    warn_if_flat_spm_scores(*gguf);
    return io::Tokenizer::from_gguf(*gguf);
  }
  return io::Tokenizer::from_file(loc.path / "tokenizer.json");
}

void run_eval(const EvalFlags& f) {
  if (f.protocol != "gptq-windows") {
    fail(ErrorKind::kInvalidArgument, "--protocol '{}' is not supported (supported: gptq-windows)", f.protocol);
  }
  ThreadPool pool(f.threads);
  const ModelLocation loc = resolve_model(f.model);
  // Shared with the Model, whose quantized weights view the mapped file.
  std::shared_ptr<const io::GgufFile> gguf;
  if (loc.format == ModelFormat::kGguf) gguf = std::make_shared<const io::GgufFile>(io::GgufFile::open(loc.path));
  const io::Tokenizer tokenizer = load_tokenizer(f, loc, gguf.get());
  const std::string tokenizer_source = !f.tokenizer.empty() ? f.tokenizer
                                       : gguf                ? loc.path.string() + " (GGUF metadata)"
                                                             : (loc.path / "tokenizer.json").string();
  const std::string text = read_text_file(f.text);
  const std::vector<int32_t> ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  if (!f.quiet) fmt::print(stderr, "calq eval: {} tokens from {}; loading {}\n", ids.size(), f.text, f.model);
  const model::Model model = gguf ? model::load_gguf_model(gguf, pool) : model::load_hf_model(loc.path, pool);

  ProgressBar bar("windows", f.ctx, !f.quiet);
  const eval::PerplexityResult r = eval::evaluate_perplexity(
      model, ids, {.ctx = f.ctx, .max_windows = f.max_windows, .on_progress = [&](int64_t d, int64_t t) { bar.update(d, t); }},
      pool);
  bar.finish();
  const std::string sha = token_ids_sha256(ids);

  fmt::print("model       {} ({}, {})\n", f.model, format_name(loc.format), model.config.model_type);
  fmt::print("tokenizer   {}\n", tokenizer_source);
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
    j["model_format"] = format_name(loc.format);
    j["architecture"] = model.config.model_type;
    j["tokenizer"] = tokenizer_source;
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
  cmd->add_option("--model", flags->model, "Hugging Face model folder or GGUF file")->required();
  cmd->add_option("--text", flags->text, "Plain-text file to evaluate on")->required();
  cmd->add_option("--protocol", flags->protocol, "Evaluation protocol")->capture_default_str();
  cmd->add_option("--ctx", flags->ctx, "Window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--max-windows", flags->max_windows, "Evaluate at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--json", flags->json_out, "Write the full result as JSON to this file");
  cmd->add_option("--tokenizer", flags->tokenizer,
                  "tokenizer.json to use instead of the model's own (e.g. the HF tokenizer for a GGUF)");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_eval(*flags); });
}

}  // namespace calq::cli
