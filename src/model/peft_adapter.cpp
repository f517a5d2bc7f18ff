#include "model/peft_adapter.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"

namespace calq::model {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr std::string_view kPrefix = "base_model.model.";
constexpr std::string_view kSuffixA = ".lora_A.weight";
constexpr std::string_view kSuffixB = ".lora_B.weight";

std::string module_of_hf_name(std::string name) {
  constexpr std::string_view kWeight = ".weight";
  assert(name.ends_with(kWeight));
  name.resize(name.size() - kWeight.size());
  return name;
}

// One adapted linear: where, and its A, B and alpha.
struct Entry {
  int64_t layer;
  TensorRole role;
  const LoraAdapter* adapter;
};

std::vector<Entry> entries_of(const Model& m) {
  std::vector<Entry> out;
  for (size_t l = 0; l < m.layers.size(); ++l)
    for (const TensorRole role : kLayerLinearRoles)
      if (const LoraAdapter* a = m.layers[l].adapter(role)) out.push_back({static_cast<int64_t>(l), role, a});
  return out;
}

// The most common value (ties: the smallest).
template <typename T>
T most_common(const std::vector<T>& values) {
  std::map<T, int64_t> counts;
  for (const T& v : values) ++counts[v];
  T best = counts.begin()->first;
  int64_t n = 0;
  for (const auto& [v, c] : counts) {
    if (c > n) best = v, n = c;
  }
  return best;
}

const Architecture& arch_of(const Model& m) {
  if (m.arch == nullptr) fail(ErrorKind::kInvalidArgument, "{}: the model has no architecture table", m.source.string());
  return *m.arch;
}

std::string json_text(const ordered_json& j) { return j.dump(2) + "\n"; }

void write_text(const std::filesystem::path& path, const std::string& text) {
  write_file_atomic(path, std::as_bytes(std::span(text.data(), text.size())));
}

// A folder name beside `dir` no other writer uses.
std::filesystem::path sibling(const std::filesystem::path& dir, const char* tag) {
  static std::atomic<int> counter{0};
  return dir.parent_path() / fmt::format(".{}.{}-{}-{}", dir.filename().string(), tag, getpid(), counter++);
}

}  // namespace

std::string peft_module_path(const Architecture& arch, int64_t layer, TensorRole role) {
  return module_of_hf_name(hf_tensor_name(arch, role, layer));
}

std::string peft_module_name(const Architecture& arch, TensorRole role) {
  const std::string path = peft_module_path(arch, 0, role);
  return path.substr(path.rfind('.') + 1);
}

std::string peft_tensor_name(const Architecture& arch, int64_t layer, TensorRole role, char which) {
  assert(which == 'A' || which == 'B');
  return fmt::format("{}{}{}", kPrefix, peft_module_path(arch, layer, role), which == 'A' ? kSuffixA : kSuffixB);
}

void write_peft_adapters(const Model& m, const std::filesystem::path& dir_in, const PeftWriteOptions& options) {
  const std::filesystem::path dir = dir_in.has_filename() ? dir_in : dir_in.parent_path();
  const Architecture& arch = arch_of(m);
  const std::vector<Entry> entries = entries_of(m);
  if (entries.empty()) fail(ErrorKind::kInvalidArgument, "{}: the model has no LoRA adapters to write", dir.string());
  if (!std::isfinite(options.lora_dropout) || options.lora_dropout < 0 || options.lora_dropout >= 1)
    fail(ErrorKind::kInvalidArgument, "{}: lora_dropout {} must be in [0, 1)", dir.string(), options.lora_dropout);
  std::vector<int64_t> ranks;
  std::vector<double> alphas;
  for (const Entry& e : entries) {
    const LoraAdapter& a = *e.adapter;
    if (a.rank() > std::min(a.in(), a.out())) {
      fail(ErrorKind::kInvalidArgument, "{}: layer {} {} adapter has rank {}, above min(in, out) = {} of the linear",
           dir.string(), e.layer, role_name(e.role), a.rank(), std::min(a.in(), a.out()));
    }
    ranks.push_back(a.rank());
    alphas.push_back(a.alpha());
  }
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    if (!std::filesystem::is_directory(dir, ec))
      fail(ErrorKind::kInvalidArgument, "{}: exists and is not a folder", dir.string());
    if (!options.overwrite)
      fail(ErrorKind::kInvalidArgument, "{}: output folder exists; overwriting it needs the force option", dir.string());
    // Replacing removes the old folder whole: only ever one that holds an adapter (or nothing).
    const bool empty = std::filesystem::is_empty(dir, ec);
    if (!empty && !std::filesystem::exists(dir / kPeftConfigFile, ec) &&
        !std::filesystem::exists(dir / kPeftWeightsFile, ec)) {
      fail(ErrorKind::kInvalidArgument, "{}: exists and is not an adapter folder (no {}); not replacing it",
           dir.string(), kPeftConfigFile);
    }
  }
  const std::filesystem::path parent = dir.has_parent_path() ? dir.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(parent, ec))
    fail(ErrorKind::kIo, "{}: the folder {} does not exist", dir.string(), parent.string());

  const int64_t r = most_common(ranks);
  const double alpha = most_common(alphas);
  ordered_json rank_pattern = ordered_json::object(), alpha_pattern = ordered_json::object();
  std::vector<io::TensorToWrite> tensors;
  std::map<int64_t, std::set<TensorRole>> roles_by_layer;
  for (const Entry& e : entries) {
    const std::string module = peft_module_path(arch, e.layer, e.role);
    if (e.adapter->rank() != r) rank_pattern[module] = e.adapter->rank();
    if (e.adapter->alpha() != alpha) alpha_pattern[module] = e.adapter->alpha();
    roles_by_layer[e.layer].insert(e.role);
    tensors.push_back({.name = peft_tensor_name(arch, e.layer, e.role, 'A'), .dtype = DType::kF32,
                       .shape = e.adapter->a().shape(), .data = e.adapter->a().bytes()});
    tensors.push_back({.name = peft_tensor_name(arch, e.layer, e.role, 'B'), .dtype = DType::kF32,
                       .shape = e.adapter->b().shape(), .data = e.adapter->b().bytes()});
  }
  // Short names when every layer adapts the same roles (PEFT then adapts exactly those linears),
  // else the module paths.
  const bool uniform = static_cast<int64_t>(roles_by_layer.size()) == static_cast<int64_t>(m.layers.size()) &&
                       std::all_of(roles_by_layer.begin(), roles_by_layer.end(),
                                   [&](const auto& kv) { return kv.second == roles_by_layer.begin()->second; });
  ordered_json targets = ordered_json::array();
  if (uniform) {
    for (const TensorRole role : roles_by_layer.begin()->second) targets.push_back(peft_module_name(arch, role));
  } else {
    for (const Entry& e : entries) targets.push_back(peft_module_path(arch, e.layer, e.role));
  }
  ordered_json config = {{"peft_type", "LORA"},
                         {"task_type", "CAUSAL_LM"},
                         {"r", r},
                         {"lora_alpha", alpha},
                         {"lora_dropout", options.lora_dropout},
                         {"target_modules", targets},
                         {"bias", "none"},
                         {"fan_in_fan_out", false},
                         {"inference_mode", true},
                         {"base_model_name_or_path", options.provenance.base_model_path},
                         {"modules_to_save", nullptr},
                         {"init_lora_weights", true},
                         {"use_rslora", false},
                         {"use_dora", false},
                         {"rank_pattern", rank_pattern},
                         {"alpha_pattern", alpha_pattern}};
  const ordered_json sidecar = {{"format", "calq LoRA adapters (PEFT folder)"},
                                {"base_model_sha256", options.provenance.base_model_sha256},
                                {"base_model_path", options.provenance.base_model_path},
                                {"calq_version", options.provenance.calq_version},
                                {"model_type", m.config.model_type}};

  const std::filesystem::path tmp = sibling(dir, "tmp");
  std::filesystem::path old;
  try {
    std::filesystem::create_directory(tmp);
    io::write_safetensors(tmp / kPeftWeightsFile, tensors, {{"format", "pt"}});
    write_text(tmp / kPeftConfigFile, json_text(config));
    write_text(tmp / kCalqAdapterFile, json_text(sidecar));
    if (std::filesystem::exists(dir)) {
      old = sibling(dir, "old");
      std::filesystem::rename(dir, old);
    }
    std::filesystem::rename(tmp, dir);
  } catch (const std::filesystem::filesystem_error& e) {
    std::filesystem::remove_all(tmp, ec);
    if (!old.empty() && !std::filesystem::exists(dir, ec)) std::filesystem::rename(old, dir, ec);
    fail(ErrorKind::kIo, "{}: cannot write the adapter folder: {}", dir.string(), e.what());
  } catch (...) {
    std::filesystem::remove_all(tmp, ec);
    if (!old.empty() && !std::filesystem::exists(dir, ec)) std::filesystem::rename(old, dir, ec);
    throw;
  }
  if (!old.empty()) std::filesystem::remove_all(old, ec);
}

// ---- reading ----

namespace {

json read_json(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  try {
    json j = json::parse(text);
    if (!j.is_object()) fail(ErrorKind::kFormat, "{}: expected a JSON object", path.string());
    return j;
  } catch (const json::exception& e) {
    fail(ErrorKind::kFormat, "{}: invalid JSON: {}", path.string(), e.what());
  }
}

std::regex compile(const std::string& re, const std::filesystem::path& file, std::string_view key) {
  try {
    return std::regex(re);
  } catch (const std::regex_error& e) {
    fail(ErrorKind::kInvalidArgument, "{}: {} is not a valid regular expression ({})", file.string(), key, e.what());
  }
}

// A rank_pattern / alpha_pattern key, matched against a module path as PEFT does:
// re.match(rf"(.*\.)?({key})$", path).
template <typename T>
struct PatternEntry {
  std::string key;
  std::regex re;
  T value;
  bool matches(const std::string& path) const { return path == key || std::regex_match(path, re); }
};

struct PeftConfig {
  int64_t r = 0;
  double alpha = 0;
  bool rslora = false;
  std::vector<PatternEntry<int64_t>> rank_pattern;
  std::vector<PatternEntry<double>> alpha_pattern;
  std::vector<std::string> targets;  // list entries
  std::optional<std::string> target_regex;
  std::regex target_re;
  bool all_linear = false;
  std::optional<std::set<int64_t>> layers;  // layers_to_transform

  int64_t rank_for(const std::string& path) const {
    for (const auto& p : rank_pattern)
      if (p.matches(path)) return p.value;
    return r;
  }
  double alpha_for(const std::string& path) const {
    for (const auto& p : alpha_pattern)
      if (p.matches(path)) return p.value;
    return alpha;
  }
};

int64_t positive_rank(const json& v, const std::filesystem::path& file, const std::string& key) {
  if (!v.is_number_integer() || v.get<int64_t>() < 1)
    fail(ErrorKind::kInvalidArgument, "{}: {} is {}; a rank must be an integer >= 1", file.string(), key, v.dump());
  return v.get<int64_t>();
}

double positive_alpha(const json& v, const std::filesystem::path& file, const std::string& key) {
  if (!v.is_number() || !std::isfinite(v.get<double>()) || !(v.get<double>() > 0))
    fail(ErrorKind::kInvalidArgument, "{}: {} is {}; lora_alpha must be finite and > 0", file.string(), key, v.dump());
  return v.get<double>();
}

PeftConfig parse_config(const std::filesystem::path& file) {
  const json j = read_json(file);
  const auto get = [&](const char* key) -> const json* {
    const auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  };
  const auto require = [&](const char* key) -> const json& {
    const json* v = get(key);
    if (v == nullptr) fail(ErrorKind::kNotFound, "{}: no \"{}\"", file.string(), key);
    return *v;
  };
  const json& type = require("peft_type");
  if (!type.is_string() || type.get<std::string>() != "LORA")
    fail(ErrorKind::kUnsupported, "{}: peft_type {} is not supported (only \"LORA\")", file.string(), type.dump());
  const auto refuse_true = [&](const char* key, const char* why) {
    const json* v = get(key);
    if (v != nullptr && v->is_boolean() && v->get<bool>())
      fail(ErrorKind::kUnsupported, "{}: {} true is not supported ({})", file.string(), key, why);
  };
  refuse_true("use_dora", "DoRA's magnitude vectors");
  refuse_true("fan_in_fan_out", "transposed Conv1D weights, as GPT-2's");
  if (const json* b = get("bias"); b != nullptr && !(b->is_string() && b->get<std::string>() == "none"))
    fail(ErrorKind::kUnsupported, "{}: bias {} is not supported (only \"none\")", file.string(), b->dump());
  if (const json* s = get("modules_to_save"); s != nullptr && !s->is_null() && !(s->is_array() && s->empty()))
    fail(ErrorKind::kUnsupported, "{}: modules_to_save {} is not supported (whole trained modules)", file.string(),
         s->dump());

  PeftConfig c;
  c.r = positive_rank(require("r"), file, "r");
  c.alpha = positive_alpha(require("lora_alpha"), file, "lora_alpha");
  if (const json* v = get("use_rslora"); v != nullptr && v->is_boolean()) c.rslora = v->get<bool>();
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    const json* p = get(key);
    if (p == nullptr || p->is_null()) continue;
    if (!p->is_object()) fail(ErrorKind::kInvalidArgument, "{}: {} must be an object", file.string(), key);
    for (const auto& [k, v] : p->items()) {
      const std::string what = fmt::format("{}[\"{}\"]", key, k);
      std::regex re = compile("(.*\\.)?(" + k + ")", file, what);
      if (std::string_view(key) == "rank_pattern") {
        c.rank_pattern.push_back({k, std::move(re), positive_rank(v, file, what)});
      } else {
        c.alpha_pattern.push_back({k, std::move(re), positive_alpha(v, file, what)});
      }
    }
  }
  const json& t = require("target_modules");
  if (t.is_string()) {
    if (t.get<std::string>() == "all-linear") {
      c.all_linear = true;
    } else {
      c.target_regex = t.get<std::string>();
      c.target_re = compile(*c.target_regex, file, "target_modules");
    }
  } else if (t.is_array() && !t.empty() && std::all_of(t.begin(), t.end(), [](const json& e) { return e.is_string(); })) {
    for (const json& e : t) c.targets.push_back(e.get<std::string>());
  } else {
    fail(ErrorKind::kInvalidArgument, "{}: target_modules {} must be a non-empty list of module names or a string",
         file.string(), t.dump());
  }
  if (const json* l = get("layers_to_transform"); l != nullptr && !l->is_null()) {
    std::set<int64_t> layers;
    const auto add = [&](const json& v) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail(ErrorKind::kInvalidArgument, "{}: layers_to_transform {} must hold layer indices", file.string(), l->dump());
      layers.insert(v.get<int64_t>());
    };
    if (l->is_array()) {
      for (const json& v : *l) add(v);
    } else {
      add(*l);
    }
    c.layers = std::move(layers);
  }
  return c;
}

bool targeted(const PeftConfig& c, const std::string& path) {
  if (c.all_linear) return true;
  if (c.target_regex) return std::regex_match(path, c.target_re);
  return std::any_of(c.targets.begin(), c.targets.end(),
                     [&](const std::string& t) { return path == t || path.ends_with("." + t); });
}

struct Pending {
  int64_t layer;
  TensorRole role;
  Tensor a, b;
  double alpha;
};

}  // namespace

PeftAdapterSummary load_peft_adapters(Model& model, const std::filesystem::path& dir, const PeftReadOptions& options) {
  const Architecture& arch = arch_of(model);
  if (model.has_adapters())
    fail(ErrorKind::kInvalidArgument, "{}: the model already has LoRA adapters; load one adapter folder", dir.string());
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    fail(ErrorKind::kNotFound, "{}: not a folder (expected a PEFT adapter folder with {} and {})", dir.string(),
         kPeftConfigFile, kPeftWeightsFile);

  PeftAdapterSummary summary;
  const std::filesystem::path sidecar = dir / kCalqAdapterFile;
  if (std::filesystem::exists(sidecar, ec)) {
    const json s = read_json(sidecar);
    const auto str = [&](const char* key) {
      const auto it = s.find(key);
      return it != s.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    summary.provenance = {.base_model_sha256 = str("base_model_sha256"), .base_model_path = str("base_model_path"),
                          .calq_version = str("calq_version")};
  }
  if (options.check_base_hash) {
    assert(!options.base_model_sha256.empty());
    if (summary.provenance.base_model_sha256.empty()) {
      fail(ErrorKind::kInvalidArgument,
           "{}: no base model sha256 ({} is missing or has none), so the adapters cannot be checked against the model "
           "(sha256 {}); set adapter_skip_hash_check to load them anyway",
           dir.string(), kCalqAdapterFile, options.base_model_sha256);
    }
    if (summary.provenance.base_model_sha256 != options.base_model_sha256) {
      fail(ErrorKind::kInvalidArgument,
           "{}: the adapters were made for a base model with sha256 {} ({}), but the model has sha256 {}; set "
           "adapter_skip_hash_check to load them anyway",
           dir.string(), summary.provenance.base_model_sha256, summary.provenance.base_model_path,
           options.base_model_sha256);
    }
  }

  const std::filesystem::path config_file = dir / kPeftConfigFile;
  const PeftConfig c = parse_config(config_file);
  const int64_t n_layers = static_cast<int64_t>(model.layers.size());
  // Every target entry must name some linear calq adapts.
  std::string linears;
  for (const TensorRole role : kLayerLinearRoles) linears += (linears.empty() ? "" : ", ") + peft_module_name(arch, role);
  const auto matches_any = [&](const std::function<bool(const std::string&)>& pred) {
    for (int64_t l = 0; l < n_layers; ++l)
      for (const TensorRole role : kLayerLinearRoles)
        if (pred(peft_module_path(arch, l, role))) return true;
    return false;
  };
  for (const std::string& t : c.targets) {
    if (!matches_any([&](const std::string& p) { return p == t || p.ends_with("." + t); }))
      fail(ErrorKind::kInvalidArgument, "{}: target module '{}' matches none of the model's linears ({} in {} layers)",
           config_file.string(), t, linears, n_layers);
  }
  if (c.target_regex && !matches_any([&](const std::string& p) { return targeted(c, p); }))
    fail(ErrorKind::kInvalidArgument, "{}: target_modules '{}' matches none of the model's linears ({} in {} layers)",
         config_file.string(), *c.target_regex, linears, n_layers);

  const std::filesystem::path weights_file = dir / kPeftWeightsFile;
  const io::SafetensorsFile st = io::SafetensorsFile::open(weights_file);
  std::set<std::string> seen;
  for (const io::TensorInfo& t : st.tensors()) {
    const std::string& name = t.name;
    const bool is_a = name.ends_with(kSuffixA), is_b = name.ends_with(kSuffixB);
    std::optional<RoleAndLayer> rl;
    if (name.starts_with(kPrefix) && (is_a || is_b)) {
      const std::string module = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffixA.size());
      rl = parse_hf_tensor_name(arch, module + ".weight");
    }
    // Adapters exist for the layer linears of kLayerLinearRoles (not the router, gates or experts).
    if (!rl || rl->layer < 0 ||
        std::find(std::begin(kLayerLinearRoles), std::end(kLayerLinearRoles), rl->role) == std::end(kLayerLinearRoles) ||
        !has_role(model.config, rl->role)) {
      fail(ErrorKind::kInvalidArgument,
           "{}: tensor '{}' is not a LoRA tensor of a {} linear (expected e.g. '{}')", weights_file.string(), name,
           model.config.model_type, peft_tensor_name(arch, 0, TensorRole::kAttnQ, 'A'));
    }
    if (rl->layer >= n_layers)
      fail(ErrorKind::kInvalidArgument, "{}: tensor '{}' is for layer {}, but the model has {} layers",
           weights_file.string(), name, rl->layer, n_layers);
    const std::string path = peft_module_path(arch, rl->layer, rl->role);
    if (!targeted(c, path) || (c.layers && !c.layers->contains(rl->layer)))
      fail(ErrorKind::kInvalidArgument, "{}: tensor '{}' is for module {}, which {}'s target_modules do not name",
           weights_file.string(), name, path, kPeftConfigFile);
    seen.insert(name);
  }

  std::vector<Pending> pending;
  for (int64_t l = 0; l < n_layers; ++l) {
    if (c.layers && !c.layers->contains(l)) continue;
    for (const TensorRole role : kLayerLinearRoles) {
      const std::string path = peft_module_path(arch, l, role);
      if (!targeted(c, path)) continue;
      const std::string name_a = peft_tensor_name(arch, l, role, 'A'), name_b = peft_tensor_name(arch, l, role, 'B');
      for (const std::string& n : {name_a, name_b})
        if (!seen.contains(n))
          fail(ErrorKind::kNotFound, "{}: no tensor '{}' for the targeted module {}", weights_file.string(), n, path);
      const LinearWeight& w = model.layers[static_cast<size_t>(l)].linear(role);
      const int64_t rank = c.rank_for(path), in = w.cols(), out = w.rows();
      if (rank > std::min(in, out))
        fail(ErrorKind::kInvalidArgument, "{}: module {} has rank {}, above min(in, out) = {} of the linear [{}, {}]",
             dir.string(), path, rank, std::min(in, out), out, in);
      const Tensor a = st.tensor(name_a).to_f32(), b = st.tensor(name_b).to_f32();
      for (const auto& [t, n] : {std::pair{&a, &name_a}, std::pair{&b, &name_b}}) {
        const float* v = t->f32();
        for (int64_t i = 0; i < t->numel(); ++i)
          if (!std::isfinite(v[i]))
            fail(ErrorKind::kInvalidArgument, "{}: tensor '{}' value [{}] is not finite ({})", weights_file.string(), *n,
                 i, v[i]);
      }
      if (a.shape() != Shape{rank, in} || b.shape() != Shape{out, rank}) {
        fail(ErrorKind::kInvalidArgument,
             "{}: '{}' is {} and '{}' is {}; the linear {} [{}, {}] with rank {} ({}) needs [{}, {}] and [{}, {}]",
             weights_file.string(), name_a, shape_string(a.shape()), name_b, shape_string(b.shape()), path, out, in,
             rank, rank == c.r ? "r" : "rank_pattern", rank, in, out, rank);
      }
      double alpha = c.alpha_for(path);
      if (c.rslora) alpha *= std::sqrt(static_cast<double>(rank));  // scale alpha / sqrt(r) as alpha' / r
      pending.push_back({l, role, a, b, alpha});
    }
  }
  if (pending.empty())
    fail(ErrorKind::kInvalidArgument, "{}: the adapters target no linear of the model", dir.string());

  // Build every adapter (make() checks the values) before installing any.
  std::vector<std::pair<const Pending*, LoraAdapter>> built;
  for (const Pending& p : pending) {
    const LinearWeight& w = model.layers[static_cast<size_t>(p.layer)].linear(p.role);
    built.emplace_back(&p, LoraAdapter::make(p.a, p.b, p.alpha, w.cols(), w.rows(),
                                             fmt::format("{}: {}", weights_file.string(),
                                                         peft_module_path(arch, p.layer, p.role))));
  }
  summary.r = c.r;
  summary.lora_alpha = c.alpha;
  summary.target_modules = c.all_linear ? std::vector<std::string>{"all-linear"}
                           : c.target_regex ? std::vector<std::string>{*c.target_regex}
                                            : c.targets;
  summary.min_rank = built.front().second.rank();
  summary.max_rank = summary.min_rank;
  for (auto& [p, adapter] : built) {
    summary.count += 1;
    summary.min_rank = std::min(summary.min_rank, adapter.rank());
    summary.max_rank = std::max(summary.max_rank, adapter.rank());
    summary.bytes += adapter.nbytes();
    model.layers[static_cast<size_t>(p->layer)].adapter_slot(p->role) = std::move(adapter);
  }
  return summary;
}

}  // namespace calq::model
