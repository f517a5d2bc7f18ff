#include "quant/recipe.h"

#include <algorithm>
#include <cassert>
#include <fstream>

#include "core/error.h"

namespace calq::quant {
namespace {

// A step as written: a method name and its keys, before the registry checks them.
struct RawStep {
  std::string method;
  nlohmann::json options;  // an object
};

// Where a stage may stand in the chain: transforms (of both kinds) first, then the layer
// transform, then the weight quantizer, then the layer reconstruction, then the error
// compensation, then the model reconstruction, then the activation scheme.
int rank(MethodStage stage) {
  switch (stage) {
    case MethodStage::kModelTransform:
    case MethodStage::kScaleMigration: return 0;
    case MethodStage::kLayerTransform: return 1;
    case MethodStage::kWeightQuantizer: return 2;
    case MethodStage::kLayerReconstruction: return 3;
    case MethodStage::kErrorCompensation: return 4;
    case MethodStage::kModelReconstruction: return 5;
    case MethodStage::kActivation: return 6;
  }
  return 0;
}

std::string order_rule() {
  std::string transforms = method_names(MethodStage::kModelTransform);
  const std::string migrations = method_names(MethodStage::kScaleMigration);
  if (!migrations.empty()) transforms += (transforms.empty() ? "" : ", ") + migrations;
  return "transforms (" + transforms + ") go first, then at most one layer transform (" +
         method_names(MethodStage::kLayerTransform) + "), then one weight quantizer (" +
         method_names(MethodStage::kWeightQuantizer) + "), then at most one layer reconstruction (" +
         method_names(MethodStage::kLayerReconstruction) + "), then at most one error compensation (" +
         method_names(MethodStage::kErrorCompensation) + "), then at most one model reconstruction (" +
         method_names(MethodStage::kModelReconstruction) + "), then at most one activation scheme (" +
         method_names(MethodStage::kActivation) + ")";
}

// Checks names, options, order and uniqueness; adds rtn when no weight quantizer is given.
Recipe validated(const std::vector<RawStep>& raw, std::string origin) {
  Recipe r;
  r.origin = std::move(origin);
  if (raw.empty()) fail(ErrorKind::kInvalidArgument, "{}: no method steps", r.origin);
  for (const RawStep& s : raw) {
    const Method* m = find_method(s.method);
    if (m == nullptr)
      fail(ErrorKind::kInvalidArgument, "{}: unknown method '{}' (known: {})", r.origin, s.method, method_names());
    StepOptions options = m->parse_options(s.options, r.origin);
    if (r.has(s.method)) fail(ErrorKind::kInvalidArgument, "{}: method '{}' appears twice", r.origin, s.method);
    if (!r.steps.empty()) {
      const MethodStep& prev = r.steps.back();
      const int a = rank(prev.stage()), b = rank(m->stage());
      if (b < a || (b == a && b > 0))
        fail(ErrorKind::kInvalidArgument, "{}: '{}' comes after the {} '{}'; {}", r.origin, s.method,
             stage_name(prev.stage()), prev.name(), order_rule());
    }
    r.steps.push_back({m, std::move(options)});
  }
  std::vector<std::string> migrations;
  for (const auto& s : r.steps)
    if (s.stage() == MethodStage::kScaleMigration) migrations.push_back(s.name());
  if (migrations.size() > 1)
    fail(ErrorKind::kInvalidArgument, "{}: {} and {} both rescale the same inputs; use one of them", r.origin,
         migrations[0], migrations[1]);
  // An error compensation fits adapters to the layer's quantization error as the layer pass leaves
  // it; a model reconstruction rewrites the linears afterwards (without the adapters in its forward
  // pass), which would leave the adapters compensating an error the model no longer has.
  const auto with_stage = [&](MethodStage stage) {
    return std::find_if(r.steps.begin(), r.steps.end(), [&](const MethodStep& s) { return s.stage() == stage; });
  };
  if (const auto c = with_stage(MethodStage::kErrorCompensation), m = with_stage(MethodStage::kModelReconstruction);
      c != r.steps.end() && m != r.steps.end()) {
    fail(ErrorKind::kInvalidArgument,
         "{}: '{}' rewrites the linears after '{}' fitted its adapters to their quantization error; use one of them",
         r.origin, m->name(), c->name());
  }
  const bool has_quantizer = std::any_of(r.steps.begin(), r.steps.end(),
                                         [](const MethodStep& s) { return s.stage() == MethodStage::kWeightQuantizer; });
  if (!has_quantizer) {
    const Method& rtn = method_by_name("rtn");
    // Before the first step that goes after the weight quantizer.
    const auto at = std::find_if(r.steps.begin(), r.steps.end(), [](const MethodStep& s) {
      return rank(s.stage()) > rank(MethodStage::kWeightQuantizer);
    });
    r.steps.insert(at, MethodStep{&rtn, rtn.parse_options(nlohmann::json::object(), r.origin)});
  }
  return r;
}

std::vector<RawStep> raw_steps(const Recipe& r) {
  std::vector<RawStep> raw;
  for (const auto& s : r.steps) raw.push_back({s.name(), s.method->options_json(s.options)});
  return raw;
}

}  // namespace

bool Recipe::has(std::string_view method) const { return find(method) != nullptr; }

const MethodStep* Recipe::find(std::string_view method) const {
  for (const auto& s : steps)
    if (s.name() == method) return &s;
  return nullptr;
}

const MethodStep& Recipe::weight_quantizer() const {
  for (const auto& s : steps)
    if (s.stage() == MethodStage::kWeightQuantizer) return s;
  assert(false && "a validated recipe has a weight quantizer");
  return steps.back();
}

const MethodStep* Recipe::activation() const {
  for (const auto& s : steps)
    if (s.stage() == MethodStage::kActivation) return &s;
  return nullptr;
}

std::string Recipe::to_string() const {
  std::string s;
  for (const auto& step : steps) s += (s.empty() ? "" : "+") + step.name();
  return s;
}

nlohmann::json Recipe::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& step : steps) {
    nlohmann::json j = step.method->options_json(step.options);
    j["method"] = step.name();
    list.push_back(std::move(j));
  }
  return {{"steps", list}};
}

bool Recipe::set_option(std::string_view method, std::string_view key, const nlohmann::json& value) {
  for (auto& step : steps) {
    if (step.name() != method) continue;
    nlohmann::json j = step.method->options_json(step.options);
    j[std::string(key)] = value;
    step.options = step.method->parse_options(j, origin);
    return true;
  }
  return false;
}

Recipe parse_method_chain(std::string_view text) {
  const std::string origin = "method chain '" + std::string(text) + "'";
  std::vector<RawStep> raw;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t plus = std::min(text.find('+', pos), text.size());
    const std::string_view name = text.substr(pos, plus - pos);
    if (name.empty()) fail(ErrorKind::kInvalidArgument, "{}: empty method name", origin);
    raw.push_back({std::string(name), nlohmann::json::object()});
    pos = plus + 1;
  }
  return validated(raw, origin);
}

Recipe recipe_from_json(const nlohmann::json& json, const std::string& origin) {
  const nlohmann::json* list = &json;
  if (json.is_object()) {
    if (!json.contains("steps"))
      fail(ErrorKind::kInvalidArgument, "{}: a recipe is {{\"steps\": [...]}} or a list of steps", origin);
    list = &json["steps"];
  }
  if (!list->is_array())
    fail(ErrorKind::kInvalidArgument, "{}: \"steps\" must be a list of {{\"method\": ...}} objects", origin);
  std::vector<RawStep> raw;
  for (const auto& item : *list) {
    if (!item.is_object() || !item.contains("method") || !item["method"].is_string())
      fail(ErrorKind::kInvalidArgument, "{}: every step must be an object with a string \"method\"", origin);
    RawStep step{item["method"].get<std::string>(), nlohmann::json::object()};
    for (const auto& [key, value] : item.items())
      if (key != "method") step.options[key] = value;
    raw.push_back(std::move(step));
  }
  return validated(raw, origin);
}

Recipe read_recipe_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail(ErrorKind::kNotFound, "{}: cannot open the recipe file", path.string());
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kInvalidArgument, "{}: not valid JSON: {}", path.string(), e.what());
  }
  return recipe_from_json(json, path.string());
}

Recipe with_step(const Recipe& recipe, std::string_view method, const nlohmann::json& options) {
  std::vector<RawStep> raw = raw_steps(recipe);
  raw.push_back({std::string(method), options});
  return validated(raw, recipe.origin);
}

}  // namespace calq::quant
