// Recipe — the ordered list of method steps `calq quantize` applies: from `--method awq+gptq` or a
// recipe file (JSON).
//
// Steps, in the order they must come (a recipe out of this order is an Error):
//  1. transforms of the float model: "rotate" (Hadamard rotation of the residual stream),
//     "smoothquant" (activation→weight scale migration), "awq" (activation-aware scales + clipping);
//  2. exactly one weight quantizer, last: "rtn" (round to nearest) or "gptq" (error compensation).
// A chain without a weight quantizer gets "rtn" appended. Each step name appears at most once;
// "smoothquant" and "awq" both rescale the same inputs and are not combined.
//
// Recipe file: {"steps": [{"method": "awq", "grid": 20}, {"method": "gptq", "act_order": true}]}
// (or the bare list). Keys other than "method" are the step's options; each step checks its own
// keys (unknown keys are an Error naming the step and the file).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace calq::quant {

struct MethodStep {
  std::string method;       // "rotate", "smoothquant", "awq", "rtn", "gptq"
  nlohmann::json options;   // an object (empty when none)
};

struct Recipe {
  std::vector<MethodStep> steps;
  std::string origin;  // "--method awq+gptq" or the file path, for messages
  bool has(std::string_view method) const;
  const MethodStep* find(std::string_view method) const;
  const MethodStep& weight_quantizer() const;  // the last step (rtn or gptq)
  std::string to_string() const;               // "awq+gptq"
  nlohmann::json to_json() const;              // the file form
};

// "awq+gptq" (names separated by '+', no options). Errors list the known methods.
Recipe parse_method_chain(std::string_view text);
Recipe read_recipe_file(const std::filesystem::path& path);
Recipe recipe_from_json(const nlohmann::json& json, const std::string& origin);

// Reads an option of a step with a default, checking its JSON type (Error naming step and origin).
double step_number(const MethodStep& step, const Recipe& recipe, const char* key, double fallback);
bool step_bool(const MethodStep& step, const Recipe& recipe, const char* key, bool fallback);
// Error when the step has a key outside `known`.
void check_step_keys(const MethodStep& step, const Recipe& recipe, std::initializer_list<const char*> known);

}  // namespace calq::quant
