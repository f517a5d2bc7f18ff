// Subcommands of the `calq` executable. Each registers its flags on the CLI11 app and returns the
// callback that runs it; library errors (calq::Error) propagate to main(), which prints them and
// exits with status 2.
#pragma once

#include <CLI/CLI.hpp>

namespace calq::cli {

void register_calibrate(CLI::App& app);
void register_check(CLI::App& app);
void register_eval(CLI::App& app);
void register_finetune(CLI::App& app);
void register_inspect(CLI::App& app);
void register_quantize(CLI::App& app);
void register_sensitivity(CLI::App& app);
void register_bisect(CLI::App& app);
void register_calib_check(CLI::App& app);
void register_merge(CLI::App& app);
void register_synth(CLI::App& app);

}  // namespace calq::cli
