// Recipe — the ordered list of method steps `calq quantize` applies: from a method chain
// ("awq+gptq") or a recipe file (JSON). Every step names a registered method (quant/method.h) and
// carries its parsed, typed options.
//
// Steps, in the order they must come (a recipe out of this order is an Error):
//  1. transforms: model transforms ("rotate") and scale migration ("smoothquant", "awq"), in any
//     order among themselves (model transforms run first regardless, on the whole model);
//  1b. at most one layer transform: "flatquant" (learned per-layer input transforms);
//  2. exactly one weight quantizer: "rtn" (round to nearest) or "gptq" (error compensation);
//  3. at most one layer reconstruction: "qat-block" (trains each layer from the quantizer's result);
//  3b. at most one error compensation: "lora-compensate" (low-rank adapters fitted to each linear's
//     quantization error, after any reconstruction since that rewrites the linears);
//  4. at most one model reconstruction: "qat-e2e" (trains the whole quantized model end to end);
//     not with an error compensation (it would rewrite the linears the adapters were fitted to);
//  5. at most one activation scheme: "int8-token", "int4-token", "int8-tensor", "llm-int8".
// A chain without a weight quantizer gets "rtn" (before the reconstruction and the activation
// scheme, if any). Each
// method appears at most once; two scale migrations (smoothquant and awq) rescale the same inputs
// and are not combined.
//
// Recipe file: {"steps": [{"method": "awq", "grid": 20}, {"method": "gptq", "act_order": true}]}
// (or the bare list). Keys other than "method" are the step's options, checked by its method:
// an unknown key, a value of the wrong type or out of range is an Error naming the origin, the
// method and the key. to_json() writes the keys the recipe gave, so JSON -> Recipe -> JSON
// round-trips.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "quant/method.h"

namespace calq::quant {

struct MethodStep {
  const Method* method = nullptr;  // a registered method
  StepOptions options;             // parsed by method->parse_options
  const std::string& name() const { return method->name(); }
  MethodStage stage() const { return method->stage(); }
};

struct Recipe {
  std::vector<MethodStep> steps;
  std::string origin;  // "method chain 'awq+gptq'" or the file path, for messages
  bool has(std::string_view method) const;
  const MethodStep* find(std::string_view method) const;
  const MethodStep& weight_quantizer() const;  // the one weight-quantizer step
  const MethodStep* activation() const;        // the activation scheme step; nullptr when none
  std::string to_string() const;               // "awq+gptq"
  nlohmann::json to_json() const;              // the file form

  // Sets option `key` of the step of `method` (checked by the method, like a recipe file's key;
  // Errors name the origin, the method and the key). False, and nothing changed, when the recipe
  // has no such step.
  bool set_option(std::string_view method, std::string_view key, const nlohmann::json& value);
};

// "awq+gptq" (names separated by '+', no options). Errors list the known methods.
Recipe parse_method_chain(std::string_view text);
Recipe read_recipe_file(const std::filesystem::path& path);
Recipe recipe_from_json(const nlohmann::json& json, const std::string& origin);
// `recipe` with one more step (`options` a JSON object of its keys), validated as a whole.
Recipe with_step(const Recipe& recipe, std::string_view method, const nlohmann::json& options);

}  // namespace calq::quant
