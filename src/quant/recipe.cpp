#include "quant/recipe.h"

#include <algorithm>
#include <cassert>
#include <array>
#include <fstream>

#include "core/error.h"

namespace calq::quant {
namespace {

// Known methods with their stage: transforms (0) come before the weight quantizer (1).
struct MethodInfo {
  std::string_view name;
  int stage;
};
constexpr std::array<MethodInfo, 5> kMethods{{
    {"rotate", 0}, {"smoothquant", 0}, {"awq", 0}, {"rtn", 1}, {"gptq", 1}}};

const MethodInfo* method_info(std::string_view name) {
  for (const auto& m : kMethods)
    if (m.name == name) return &m;
  return nullptr;
}

std::string known_list() {
  std::string s;
  for (const auto& m : kMethods) s += (s.empty() ? "" : ", ") + std::string(m.name);
  return s;
}

// Checks names, order and uniqueness; appends rtn when no weight quantizer is given.
Recipe validated(Recipe r) {
  if (r.steps.empty()) fail(ErrorKind::kInvalidArgument, "{}: no method steps", r.origin);
  int last_stage = 0;
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const auto& step = r.steps[i];
    const MethodInfo* info = method_info(step.method);
    if (info == nullptr)
      fail(ErrorKind::kInvalidArgument, "{}: unknown method '{}' (known: {})", r.origin, step.method, known_list());
    if (!step.options.is_object())
      fail(ErrorKind::kInvalidArgument, "{}: options of step '{}' must be an object", r.origin, step.method);
    for (size_t j = 0; j < i; ++j)
      if (r.steps[j].method == step.method)
        fail(ErrorKind::kInvalidArgument, "{}: method '{}' appears twice", r.origin, step.method);
    if (info->stage < last_stage || (last_stage == 1))
      fail(ErrorKind::kInvalidArgument,
           "{}: '{}' comes after the weight quantizer; transforms (rotate, smoothquant, awq) go first and one "
           "weight quantizer (rtn or gptq) last",
           r.origin, step.method);
    last_stage = info->stage;
  }
  if (r.has("smoothquant") && r.has("awq"))
    fail(ErrorKind::kInvalidArgument, "{}: smoothquant and awq both rescale the same inputs; use one of them",
         r.origin);
  if (last_stage == 0) r.steps.push_back({"rtn", nlohmann::json::object()});
  return r;
}

}  // namespace

bool Recipe::has(std::string_view method) const { return find(method) != nullptr; }

const MethodStep* Recipe::find(std::string_view method) const {
  for (const auto& s : steps)
    if (s.method == method) return &s;
  return nullptr;
}

const MethodStep& Recipe::weight_quantizer() const {
  assert(!steps.empty());
  return steps.back();
}

std::string Recipe::to_string() const {
  std::string s;
  for (const auto& step : steps) s += (s.empty() ? "" : "+") + step.method;
  return s;
}

nlohmann::json Recipe::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& step : steps) {
    nlohmann::json j = step.options;
    j["method"] = step.method;
    list.push_back(std::move(j));
  }
  return {{"steps", list}};
}

Recipe parse_method_chain(std::string_view text) {
  Recipe r;
  r.origin = "method chain " + std::string(text);
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t plus = std::min(text.find('+', pos), text.size());
    const std::string_view name = text.substr(pos, plus - pos);
    if (name.empty()) fail(ErrorKind::kInvalidArgument, "{}: empty method name", r.origin);
    r.steps.push_back({std::string(name), nlohmann::json::object()});
    pos = plus + 1;
  }
  return validated(std::move(r));
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
  Recipe r;
  r.origin = origin;
  for (const auto& item : *list) {
    if (!item.is_object() || !item.contains("method") || !item["method"].is_string())
      fail(ErrorKind::kInvalidArgument, "{}: every step must be an object with a string \"method\"", origin);
    MethodStep step{item["method"].get<std::string>(), nlohmann::json::object()};
    for (const auto& [key, value] : item.items())
      if (key != "method") step.options[key] = value;
    r.steps.push_back(std::move(step));
  }
  return validated(std::move(r));
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

double step_number(const MethodStep& step, const Recipe& recipe, const char* key, double fallback) {
  if (!step.options.contains(key)) return fallback;
  const auto& v = step.options[key];
  if (!v.is_number())
    fail(ErrorKind::kInvalidArgument, "{}: option '{}' of step '{}' must be a number", recipe.origin, key,
         step.method);
  return v.get<double>();
}

bool step_bool(const MethodStep& step, const Recipe& recipe, const char* key, bool fallback) {
  if (!step.options.contains(key)) return fallback;
  const auto& v = step.options[key];
  if (!v.is_boolean())
    fail(ErrorKind::kInvalidArgument, "{}: option '{}' of step '{}' must be true or false", recipe.origin, key,
         step.method);
  return v.get<bool>();
}

void check_step_keys(const MethodStep& step, const Recipe& recipe, std::initializer_list<const char*> known) {
  for (const auto& [key, value] : step.options.items()) {
    const bool ok = std::any_of(known.begin(), known.end(), [&](const char* k) { return key == k; });
    if (!ok) {
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      fail(ErrorKind::kInvalidArgument, "{}: step '{}' has no option '{}' (options: {})", recipe.origin,
           step.method, key, list.empty() ? "none" : list);
    }
  }
}

}  // namespace calq::quant
