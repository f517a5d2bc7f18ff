// `calq check FILE [--json]`: whether llama.cpp's loader would accept a GGUF file (io/gguf_check.h).
// Prints one line per finding (or a JSON object with --json) and exits with status 2 when there
// are errors, 0 when there are none (warnings alone pass).
#include <fmt/format.h>

#include <memory>
#include <string>

#include "calq/check.h"
#include "cli/commands.h"

namespace calq::cli {
namespace {

struct CheckFlags {
  std::string file;
  bool json = false;
};

void run_check(const CheckFlags& f) {
  const CheckReport r = check(f.file);
  if (f.json) {
    fmt::print("{}\n", r.json);
  } else {
    for (const CheckFinding& x : r.findings) {
      if (x.where.empty()) {
        fmt::print("{}: {}\n", x.level, x.message);
      } else {
        fmt::print("{}: {}: {}\n", x.level, x.where, x.message);
      }
    }
    fmt::print("{}: {} ({} error{}, {} warning{})\n", r.file, r.summary, r.errors,
               r.errors == 1 ? "" : "s", r.warnings, r.warnings == 1 ? "" : "s");
  }
  if (!r.ok) throw CLI::RuntimeError(2);
}

}  // namespace

void register_check(CLI::App& app) {
  auto flags = std::make_shared<CheckFlags>();
  CLI::App* cmd = app.add_subcommand(
      "check",
      "Check a GGUF file against llama.cpp's loader rules (ggml types and block sizes, alignment, data inside the "
      "file, general.architecture, the llama/qwen2 hyper-parameter and tokenizer keys, tensor names and shapes, no "
      "calq-specific tensors); or a Hugging Face folder (GPTQ, AWQ, compressed-tensors checkpoints included) "
      "against calq's reader, with warnings where vLLM's fast kernels would not take it. Exit status 2 when any "
      "error is found.");
  cmd->add_option("file", flags->file, "GGUF file or Hugging Face folder")->required();
  cmd->add_flag("--json", flags->json, "Print the findings as a JSON object");
  cmd->callback([flags] { run_check(*flags); });
}

}  // namespace calq::cli
