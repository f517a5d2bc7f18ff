// `calq eval`'s tasks beside perplexity, over the reference (when given) and every --model on the
// same tokens: HellaSwag-style multiple choice (eval/multiple_choice.h) and greedy generation
// (eval/generate.h) printed side by side for a human look. Each prints its report on stdout and
// returns it as JSON for --json.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace calq::cli {

struct TaskModel {
  std::string name;  // as printed
  const model::Model* model = nullptr;
};

// models[0] is the reference when `has_reference` (agreement is reported against it).
nlohmann::ordered_json run_multiple_choice_task(const std::string& jsonl, int64_t max_items,
                                                std::span<const TaskModel> models, bool has_reference,
                                                const io::Tokenizer& tokenizer, bool quiet, ThreadPool& pool);

// Greedy continuation of each prompt (encoded with the tokenizer's special tokens, e.g. BOS, as a
// Hugging Face generate() call would) by every model; stops at the model's eos token.
nlohmann::ordered_json run_generate_task(const std::vector<std::string>& prompts, int64_t max_new_tokens,
                                         std::span<const TaskModel> models, const io::Tokenizer& tokenizer,
                                         ThreadPool& pool);

}  // namespace calq::cli
