#include "pipeline/bit_alloc.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace calq::pipeline {
namespace {

bool is_head(model::TensorRole role) {
  return role == model::TensorRole::kTokenEmbedding || role == model::TensorRole::kOutput;
}

const model::LinearWeight& weight_of(const model::Model& m, const TensorAssignment& a) {
  if (a.role == model::TensorRole::kTokenEmbedding) return m.embedding;
  if (a.role == model::TensorRole::kOutput) return m.output;
  const model::LayerWeights& l = m.layers[static_cast<size_t>(a.layer)];
  if (a.expert >= 0) return l.experts[static_cast<size_t>(a.expert)].linear(a.role);
  return l.linear(a.role);
}

// How many plan entries share `name`: one, or a MoE layer's experts of one role (one stacked GGUF
// tensor, one sensitivity entry, one allocation choice).
int64_t members(const std::vector<TensorAssignment>& plan, const std::string& name) {
  return std::count_if(plan.begin(), plan.end(), [&](const TensorAssignment& a) { return a.name == name; });
}

// ---- sensitivity map JSON ----

using Json = nlohmann::json;

const Json& member(const Json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end()) fail(ErrorKind::kFormat, "{}: missing \"{}\"", where, key);
  return *it;
}

std::string string_member(const Json& obj, const char* key, const std::string& where) {
  const Json& v = member(obj, key, where);
  if (!v.is_string()) fail(ErrorKind::kFormat, "{}: \"{}\" must be a string", where, key);
  return v.get<std::string>();
}

int64_t int_member(const Json& obj, const char* key, const std::string& where) {
  const Json& v = member(obj, key, where);
  if (!v.is_number_integer()) fail(ErrorKind::kFormat, "{}: \"{}\" must be an integer", where, key);
  return v.get<int64_t>();
}

SensitivityFileEntry parse_entry(const Json& e, const SensitivityFile& map, size_t index) {
  std::string where = fmt::format("{}: entries[{}]", map.origin, index);
  if (!e.is_object()) fail(ErrorKind::kFormat, "{}: must be an object", where);
  SensitivityFileEntry s;
  s.tensor = string_member(e, "tensor", where);
  where += fmt::format(" ({})", s.tensor);
  s.layer = int_member(e, "layer", where);
  s.role = string_member(e, "role", where);
  s.params = int_member(e, "params", where);
  if (s.params <= 0) fail(ErrorKind::kFormat, "{}: \"params\" must be positive, got {}", where, s.params);
  const auto known = [&](const std::string& format, const char* key) {
    if (std::find(map.formats.begin(), map.formats.end(), format) == map.formats.end()) {
      fail(ErrorKind::kFormat, "{}: \"{}\" has format '{}', which is not in the map's \"formats\"", where, key, format);
    }
  };
  const Json& kld = member(e, "kld", where);
  if (!kld.is_object()) fail(ErrorKind::kFormat, "{}: \"kld\" must be an object {{format: KLD}}", where);
  for (const auto& [format, v] : kld.items()) {
    known(format, "kld");
    if (!v.is_number()) fail(ErrorKind::kFormat, "{}: kld of {} must be a number", where, format);
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < 0) {
      fail(ErrorKind::kInvalidArgument, "{}: kld of {} is {}; a KLD must be finite and non-negative", where, format, x);
    }
    s.kld[format] = x;
  }
  if (const auto it = e.find("bytes"); it != e.end()) {
    if (!it->is_object()) fail(ErrorKind::kFormat, "{}: \"bytes\" must be an object {{format: bytes}}", where);
    for (const auto& [format, v] : it->items()) {
      known(format, "bytes");
      if (!v.is_number_unsigned()) fail(ErrorKind::kFormat, "{}: bytes of {} must be a non-negative integer", where, format);
      s.bytes[format] = v.get<uint64_t>();
    }
  }
  return s;
}

// ---- model budget ----

std::string regex_escape(const std::string& s) {
  std::string r;
  for (const char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') r += '\\';
    r += c;
  }
  return r;
}

// The largest byte count whose bits per weight (as Model::bits_per_weight computes it) is ≤ target.
uint64_t budget_for(double target_bpw, int64_t params) {
  const auto bpw = [&](uint64_t bytes) { return 8.0 * static_cast<double>(bytes) / static_cast<double>(params); };
  auto b = static_cast<uint64_t>(std::floor(static_cast<long double>(target_bpw) * params / 8));
  while (b > 0 && bpw(b) > target_bpw) --b;
  while (bpw(b + 1) <= target_bpw) ++b;
  return b;
}

}  // namespace

BitAllocation allocate_bits(std::span<const BitItem> items, const AllocateOptions& options) {
  const size_t n = items.size();
  std::vector<uint64_t> min_bytes(n);
  uint64_t base = 0, spread = 0, granule = 0;
  for (size_t i = 0; i < n; ++i) {
    const BitItem& it = items[i];
    if (it.options.empty() || it.options.size() > 255) {
      fail(ErrorKind::kInvalidArgument, "bit allocation: {} has {} options (1 to 255 allowed)", it.name,
           it.options.size());
    }
    uint64_t lo = std::numeric_limits<uint64_t>::max(), hi = 0;
    for (const BitOption& o : it.options) {
      if (!std::isfinite(o.kld) || o.kld < 0) {
        fail(ErrorKind::kInvalidArgument, "bit allocation: {} has a KLD of {}", it.name, o.kld);
      }
      lo = std::min(lo, o.bytes);
      hi = std::max(hi, o.bytes);
    }
    min_bytes[i] = lo;
    base += lo;
    spread += hi - lo;
    for (const BitOption& o : it.options) granule = std::gcd(granule, o.bytes - lo);
  }
  if (base > options.budget_bytes) {
    fail(ErrorKind::kInvalidArgument,
         "bit allocation: the budget of {} bytes is below the smallest allocation, {} bytes", options.budget_bytes,
         base);
  }
  if (granule == 0) granule = 1;  // every item has options of one size
  // Cells: extra bytes over the smallest allocation, in granules; more than `spread` is never used.
  const uint64_t last = std::min(options.budget_bytes - base, spread) / granule;
  const uint64_t cells = last + 1;
  if (n > 0 && cells > options.max_table_entries / n) {
    fail(ErrorKind::kInvalidArgument,
         "bit allocation: the exact table would need {} tensors x {} cells (sizes share a granule of only {} bytes); "
         "the limit is {} entries", n, cells, granule, options.max_table_entries);
  }
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<uint8_t> choice(n * cells, 0);
  std::vector<double> best(cells, kInf), next(cells);
  best[0] = 0.0;
  for (size_t i = 0; i < n; ++i) {
    std::fill(next.begin(), next.end(), kInf);
    uint8_t* ch = choice.data() + i * cells;
    const auto& opts = items[i].options;
    for (size_t j = 0; j < opts.size(); ++j) {
      const uint64_t w = (opts[j].bytes - min_bytes[i]) / granule;
      const double k = opts[j].kld;
      // Strictly smaller wins: on equal sums the lower option index, tried first, stays.
      for (uint64_t c = w; c < cells; ++c) {
        const double s = best[c - w] + k;
        if (s < next[c]) {
          next[c] = s;
          ch[c] = static_cast<uint8_t>(j);
        }
      }
    }
    best.swap(next);
  }
  BitAllocation r{.granule = granule, .cells = cells};
  uint64_t at = 0;
  for (uint64_t c = 1; c < cells; ++c) {
    if (best[c] < best[at]) at = c;  // equal KLD: the fewer bytes, found first, stays
  }
  r.kld = best[at];
  r.choice.resize(n);
  for (size_t i = n; i-- > 0;) {
    const size_t j = choice[i * cells + at];
    r.choice[i] = j;
    r.bytes += items[i].options[j].bytes;
    at -= (items[i].options[j].bytes - min_bytes[i]) / granule;
  }
  return r;
}

const SensitivityFileEntry* SensitivityFile::find(std::string_view tensor) const {
  for (const auto& e : entries) {
    if (e.tensor == tensor) return &e;
  }
  return nullptr;
}

SensitivityFile parse_sensitivity_file(std::string_view json_text, const std::string& origin) {
  Json j;
  try {
    j = Json::parse(json_text);
  } catch (const Json::exception& e) {
    fail(ErrorKind::kFormat, "{}: not valid JSON: {}", origin, e.what());
  }
  if (!j.is_object()) fail(ErrorKind::kFormat, "{}: a sensitivity map must be a JSON object", origin);
  SensitivityFile m;
  m.origin = origin;
  m.model = string_member(j, "model", origin);
  m.eval_text = string_member(j, "eval_text", origin);
  m.ctx = int_member(j, "ctx", origin);
  m.windows = int_member(j, "windows", origin);
  if (m.ctx < 2 || m.windows < 0) {
    fail(ErrorKind::kFormat, "{}: \"ctx\" must be at least 2 and \"windows\" non-negative", origin);
  }
  m.granularity = string_member(j, "granularity", origin);
  if (m.granularity != "tensor") {
    fail(ErrorKind::kInvalidArgument,
         "{}: granularity is \"{}\"; bit allocation needs a per-tensor map (sensitivity granularity \"tensor\")",
         origin, m.granularity);
  }
  m.method = string_member(j, "method", origin);
  const Json& formats = member(j, "formats", origin);
  if (!formats.is_array()) fail(ErrorKind::kFormat, "{}: \"formats\" must be an array of format names", origin);
  for (const Json& f : formats) {
    if (!f.is_string()) fail(ErrorKind::kFormat, "{}: \"formats\" must be an array of format names", origin);
    m.formats.push_back(f.get<std::string>());
  }
  const Json& entries = member(j, "entries", origin);
  if (!entries.is_array()) fail(ErrorKind::kFormat, "{}: \"entries\" must be an array", origin);
  std::set<std::string> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    m.entries.push_back(parse_entry(entries[i], m, i));
    if (!seen.insert(m.entries.back().tensor).second) {
      fail(ErrorKind::kFormat, "{}: entries[{}]: tensor {} appears twice", origin, i, m.entries.back().tensor);
    }
  }
  if (m.entries.empty()) fail(ErrorKind::kFormat, "{}: the map has no entries", origin);
  return m;
}

SensitivityFile read_sensitivity_file(const std::filesystem::path& path) {
  return parse_sensitivity_file(read_text_file(path), path.string());
}

SensitivityFile sensitivity_file_from_map(const SensitivityMap& map, const std::string& origin, const std::string& model,
                                          const std::string& eval_text, const std::string& method) {
  if (map.granularity != Granularity::kTensor) {
    fail(ErrorKind::kInvalidArgument, "{}: bit allocation needs a per-tensor map", origin);
  }
  if (map.entries.empty()) fail(ErrorKind::kFormat, "{}: the map has no entries", origin);
  SensitivityFile m{.origin = origin, .model = model, .eval_text = eval_text, .granularity = "tensor",
                    .method = method, .ctx = map.ctx, .windows = map.windows, .formats = map.formats, .entries = {}};
  std::set<std::string> seen;
  for (const SensitivityEntry& e : map.entries) {
    SensitivityFileEntry s{.tensor = e.tensor, .layer = e.layer, .role = e.role, .params = e.params, .kld = {},
                           .bytes = {}};
    for (size_t f = 0; f < map.formats.size(); ++f) {
      if (!std::isfinite(e.kld[f]) || e.kld[f] < 0) {
        fail(ErrorKind::kInvalidArgument, "{}: entry {}: kld of {} is {}; a KLD must be finite and non-negative",
             origin, e.tensor, map.formats[f], e.kld[f]);
      }
      s.kld[map.formats[f]] = e.kld[f];
      s.bytes[map.formats[f]] = e.bytes[f];
    }
    if (!seen.insert(s.tensor).second) fail(ErrorKind::kFormat, "{}: tensor {} appears twice", origin, s.tensor);
    m.entries.push_back(std::move(s));
  }
  return m;
}

double TargetAllocation::predicted_bpw() const {
  return parameter_count > 0 ? 8.0 * static_cast<double>(total_bytes()) / static_cast<double>(parameter_count) : 0.0;
}

std::vector<std::string> TargetAllocation::rule_texts() const {
  std::vector<std::string> r;
  // fmt::format, not "^" + std::string: GCC 12 at -O3 reports a false -Wstringop-overflow in the
  // inlined operator+ (seen with the library's precompiled header, which changes inlining).
  for (const auto& t : tensors) r.push_back(fmt::format("^{}$={}", regex_escape(t.name), t.format->name()));
  return r;
}

TargetAllocation allocate_to_target(const model::Model& model, const ModelQuantizeOptions& base,
                                    const SensitivityFile& map, const TargetOptions& o) {
  if (!std::isfinite(o.target_bpw) || o.target_bpw <= 0) {
    fail(ErrorKind::kInvalidArgument, "the target bits per weight must be a positive number, got {}", o.target_bpw);
  }
  if (o.candidates.empty()) fail(ErrorKind::kInvalidArgument, "the candidate list has no format");
  for (const Format* c : o.candidates) {
    if (std::find(map.formats.begin(), map.formats.end(), c->name()) == map.formats.end()) {
      fail(ErrorKind::kInvalidArgument, "{}: candidate {} was not measured (the map's formats: {})", map.origin,
           c->name(), fmt::join(map.formats, ", "));
    }
  }
  const std::vector<TensorAssignment> plan = plan_model_quantization(model, base);
  for (const auto& e : map.entries) {
    const auto it = std::find_if(plan.begin(), plan.end(), [&](const TensorAssignment& a) { return a.name == e.tensor; });
    if (it == plan.end()) {
      fail(ErrorKind::kInvalidArgument, "{}: entry {} is not a quantizable tensor of the model (made for another model?)",
           map.origin, e.tensor);
    }
    const int64_t n = members(plan, e.tensor);
    if (e.params != n * it->rows * it->cols) {
      fail(ErrorKind::kInvalidArgument, "{}: entry {} has {} params but the model's tensor has {} ({} x [{}, {}])",
           map.origin, e.tensor, e.params, n * it->rows * it->cols, n, it->rows, it->cols);
    }
  }

  TargetAllocation r;
  r.parameter_count = model.parameter_count();
  r.budget_bytes = budget_for(o.target_bpw, r.parameter_count);
  uint64_t planned_now = 0;  // bytes the planned tensors hold before quantization
  std::vector<BitItem> items;
  std::vector<std::vector<const Format*>> item_formats;
  for (const TensorAssignment& a : plan) {
    const model::LinearWeight& w = weight_of(model, a);
    planned_now += w.nbytes();
    // A MoE expert group is one item, made at its first expert; the others only add their bytes.
    if (a.expert > 0) {
      if (a.rule >= 0 || map.find(a.name) == nullptr || (is_head(a.role) && !o.allocate_head)) {
        r.fixed_bytes += a.format != nullptr ? a.format->tensor_bytes(a.rows, a.cols) : w.nbytes();
      }
      continue;
    }
    const auto group = static_cast<uint64_t>(a.expert == 0 ? members(plan, a.name) : 1);
    const SensitivityFileEntry* e = map.find(a.name);
    const bool allocate = a.rule < 0 && e != nullptr && (!is_head(a.role) || o.allocate_head);
    if (!allocate) {
      if (e == nullptr && a.rule < 0 && !is_head(a.role) && o.map_must_cover) {
        fail(ErrorKind::kInvalidArgument,
             "{}: tensor {} is not in the sensitivity map; give a main format for tensors outside the map, or pin it "
             "with a rule", map.origin, a.name);
      }
      // A weight kept float stays as loaded (a Hugging Face bf16 view keeps its 2 bytes).
      r.fixed_bytes += a.format != nullptr ? a.format->tensor_bytes(a.rows, a.cols) : w.nbytes();
      if (e != nullptr) {
        ++r.fixed_in_map;
        if (a.format != nullptr) {
          if (const auto k = e->kld.find(a.format->name()); k != e->kld.end()) r.fixed_kld += k->second;
        }
      }
      continue;
    }
    BitItem item{.name = a.name, .options = {}};
    std::vector<const Format*> formats;
    for (const Format* c : o.candidates) {
      if (!c->can_store(a.rows, a.cols)) continue;
      const auto k = e->kld.find(c->name());
      if (k == e->kld.end()) {
        fail(ErrorKind::kInvalidArgument, "{}: entry {} has no KLD for candidate {}", map.origin, a.name, c->name());
      }
      const uint64_t bytes = group * c->tensor_bytes(a.rows, a.cols);
      if (const auto b = e->bytes.find(c->name()); b != e->bytes.end() && b->second != bytes) {
        fail(ErrorKind::kInvalidArgument, "{}: entry {} gives {} bytes for {} but calq stores [{}, {}] in {} bytes",
             map.origin, a.name, b->second, c->name(), a.rows, a.cols, bytes);
      }
      item.options.push_back({.bytes = bytes, .kld = k->second});
      formats.push_back(c);
    }
    if (item.options.empty()) {
      fail(ErrorKind::kInvalidArgument, "no candidate format can store tensor {} [{}, {}] (rows of {} values)", a.name,
           a.rows, a.cols, a.cols);
    }
    items.push_back(std::move(item));
    item_formats.push_back(std::move(formats));
  }
  // Norms, biases and anything else stored outside the plan, as held (float32).
  r.fixed_bytes += model.storage_bytes() - planned_now;

  uint64_t min_bytes = r.fixed_bytes;
  for (const auto& it : items) {
    uint64_t lo = it.options[0].bytes;
    for (const auto& op : it.options) lo = std::min(lo, op.bytes);
    min_bytes += lo;
  }
  if (min_bytes > r.budget_bytes) {
    fail(ErrorKind::kInvalidArgument,
         "target {} bits per weight: infeasible; the smallest candidates give {:.4f} bits per weight ({} bytes fixed outside "
         "the allocation, {} allocated tensors)", o.target_bpw,
         8.0 * static_cast<double>(min_bytes) / static_cast<double>(r.parameter_count), r.fixed_bytes, items.size());
  }
  const BitAllocation a = allocate_bits(
      items, {.budget_bytes = r.budget_bytes - r.fixed_bytes, .max_table_entries = o.max_table_entries});
  r.allocated_bytes = a.bytes;
  r.allocated_kld = a.kld;
  r.granule = a.granule;
  r.cells = a.cells;
  size_t i = 0;
  for (const TensorAssignment& p : plan) {
    if (i < items.size() && items[i].name == p.name) {
      const size_t j = a.choice[i];
      r.tensors.push_back({.name = p.name, .rows = p.rows, .cols = p.cols, .format = item_formats[i][j],
                           .bytes = items[i].options[j].bytes, .kld = items[i].options[j].kld});
      ++i;
    }
  }
  return r;
}

}  // namespace calq::pipeline
