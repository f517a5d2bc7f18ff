// Printing of `calq eval`'s tasks beside perplexity (calq::evaluate ran them): HellaSwag-style
// multiple choice and greedy generation, side by side for a human look.
#pragma once

#include <cstdint>
#include <vector>

#include "calq/evaluate.h"

namespace calq::cli {

// rep.models[0] is the reference when `has_reference` (agreement is reported against it).
void print_choices(const ChoiceReport& rep, bool has_reference);

// Each prompt with every model's continuation on one line (newlines shown as ⏎).
void print_generations(const std::vector<Generation>& gens, int64_t max_new_tokens);

}  // namespace calq::cli
