// `calq quantize --target-bpw B --candidates LIST --sensitivity FILE [--verify-text FILE]`: the
// flags of quantize()'s bit-allocation form, bound to calq::TargetOptions (the checks and the
// work are the API's: api/target_alloc.h).
#pragma once

#include <CLI/CLI.hpp>

#include "calq/quantize.h"

namespace calq::cli {

void add_target_flags(CLI::App* cmd, TargetOptions& target);

}  // namespace calq::cli
