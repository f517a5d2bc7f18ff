// calq — post-training quantization toolkit for LLMs. Exit status: 0 success, 2 bad input
// (files, flags), 1 unexpected internal failure.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"calq: quantize LLMs after training, and measure the result"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(CALQ_VERSION));
  calq::cli::register_calibrate(app);
  calq::cli::register_check(app);
  calq::cli::register_eval(app);
  calq::cli::register_finetune(app);
  calq::cli::register_inspect(app);
  calq::cli::register_quantize(app);
  calq::cli::register_sensitivity(app);
  calq::cli::register_bisect(app);
  calq::cli::register_calib_check(app);
  calq::cli::register_merge(app);
  calq::cli::register_synth(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const calq::Error& e) {
    fmt::print(stderr, "calq: error: {}\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "calq: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "calq: internal error: {}\n", e.what());
    return 1;
  }
  return 0;
}
