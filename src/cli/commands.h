// Subcommands of the `calq` executable. Each registers its flags on the CLI11 app and returns the
// callback that runs it; library errors (calq::Error) propagate to main(), which prints them and
// exits with status 2.
#pragma once

#include <CLI/CLI.hpp>

#include "api/model_source.h"

namespace calq::cli {

void register_calibrate(CLI::App& app);
void register_check(CLI::App& app);
void register_eval(CLI::App& app);
void register_inspect(CLI::App& app);
void register_quantize(CLI::App& app);
void register_sensitivity(CLI::App& app);
void register_bisect(CLI::App& app);
void register_calib_check(CLI::App& app);

// The library's model loading (api/model_source.h), as the commands name it.
using api::check_output_folder;
using api::check_output_path;
using api::format_name;
using api::load_eval_ids;
using api::load_model_tokenizer;
using api::ModelFormat;
using api::ModelLocation;
using api::resolve_model;
using api::write_text_atomic;

}  // namespace calq::cli
