// The calibration statistics file (collectors.h): a GGUF container. Keys and tensor names are
// documented in docs/formats.md ("Calibration statistics files").
#include <cmath>
#include <cstring>
#include <set>

#include <fmt/ranges.h>

#include "calib/collectors.h"
#include "core/error.h"
#include "io/gguf.h"

namespace calq::calib {
namespace {

constexpr std::string_view kFileType = "calq-stats";
constexpr uint32_t kVersion = 1;
constexpr uint32_t kGgmlI64 = 27;
constexpr uint32_t kGgmlF64 = 28;
// A bound on layer indices in site names: far above any model, small enough for plain arithmetic.
constexpr int64_t kMaxLayer = int64_t{1} << 20;

constexpr std::string_view kKeyType = "general.type";
constexpr std::string_view kKeyVersion = "calq.stats.version";
constexpr std::string_view kKeyModel = "calq.stats.model";
constexpr std::string_view kKeySamples = "calq.stats.samples";
constexpr std::string_view kKeySeqLen = "calq.stats.seq_len";
constexpr std::string_view kKeySeed = "calq.stats.seed";
constexpr std::string_view kKeyCalib = "calq.stats.calib_sha256";
constexpr std::string_view kKeyKinds = "calq.stats.kinds";
constexpr std::string_view kKeySites = "calq.stats.sites";
constexpr std::string_view kKeyCols = "calq.stats.site_cols";
constexpr std::string_view kKeyRows = "calq.stats.site_rows";
constexpr std::string_view kKeyHistExp = "calq.stats.histogram_exp";
// Optional: (layer, expert, tokens) triples, the router's natural counts (collectors.h).
constexpr std::string_view kKeyRouted = "calq.stats.expert_routed";

// The tensor suffix that stores a kind (mean_abs and mean_sq are stored as sums).
std::string_view tensor_suffix(StatKind kind) {
  switch (kind) {
    case StatKind::kAbsMax: return "absmax";
    case StatKind::kMeanAbs: return "sum_abs";
    case StatKind::kMeanSq: return "sum_sq";
    case StatKind::kHistogram: return "histogram";
    case StatKind::kHessian: return "hessian";
  }
  return "";
}

std::string site_prefix(int64_t layer, InputSite site) {
  if (layer < 0) return std::string(site_name(site));
  return fmt::format("blk.{}.{}", layer, site_name(site));
}

// A mixture-of-experts site: "blk.<layer>.moe_in", "blk.<layer>.expert_in.<expert>", ...
std::string expert_prefix(const CalibrationStats::ExpertSite& w) {
  if (w.expert < 0) return site_prefix(w.layer, w.site);
  return fmt::format("blk.{}.{}.{}", w.layer, site_name(w.site), w.expert);
}

// Digits of a non-negative index without leading zeros, at most kMaxLayer; nullopt otherwise.
std::optional<int64_t> parse_index(std::string_view s) {
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  int64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
    if (v > kMaxLayer) return std::nullopt;
  }
  return v;
}

// Inverse of expert_prefix for expert_in/expert_down (moe_in parses as a layer site).
std::optional<CalibrationStats::ExpertSite> parse_expert_prefix(std::string_view s) {
  if (!s.starts_with("blk.")) return std::nullopt;
  s.remove_prefix(4);
  const size_t dot1 = s.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : s.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) return std::nullopt;
  const auto layer = parse_index(s.substr(0, dot1));
  const auto site = site_by_name(s.substr(dot1 + 1, dot2 - dot1 - 1));
  const auto expert = parse_index(s.substr(dot2 + 1));
  if (!layer || !site || !expert || (*site != InputSite::kExpertIn && *site != InputSite::kExpertDown)) {
    return std::nullopt;
  }
  return CalibrationStats::ExpertSite{*layer, *expert, *site};
}

// Inverse of site_prefix; nullopt for anything else.
std::optional<std::pair<int64_t, InputSite>> parse_site_prefix(std::string_view s) {
  if (s == site_name(InputSite::kHeadIn)) return std::pair<int64_t, InputSite>{-1, InputSite::kHeadIn};
  if (!s.starts_with("blk.")) return std::nullopt;
  s.remove_prefix(4);
  int64_t layer = 0;
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') {
    layer = layer * 10 + (s[digits] - '0');
    if (layer > kMaxLayer) return std::nullopt;
    ++digits;
  }
  if (digits == 0 || digits >= s.size() || s[digits] != '.') return std::nullopt;
  if (digits > 1 && s[0] == '0') return std::nullopt;  // one spelling per layer
  const auto site = site_by_name(s.substr(digits + 1));
  if (!site || *site == InputSite::kHeadIn) return std::nullopt;
  return std::pair<int64_t, InputSite>{layer, *site};
}

io::GgufValue int64_array(std::vector<int64_t> v) {
  io::GgufValue out;
  out.type = io::GgufValueType::kArray;
  out.array_type = io::GgufValueType::kInt64;
  out.ints = std::move(v);
  return out;
}

io::GgufValue int64_value(int64_t v) {
  io::GgufValue out;
  out.type = io::GgufValueType::kInt64;
  out.i = v;
  return out;
}

template <typename T>
std::span<const std::byte> bytes_of(std::span<const T> v) {
  return std::as_bytes(v);
}

// ---- reading ----

class Reader {
 public:
  explicit Reader(const io::GgufFile& file) : file_(file), origin_(file.path().string()) {}

  CalibrationStats read() {
    const std::string& type = string_key(kKeyType);
    if (type != kFileType) {
      fail(ErrorKind::kFormat, "{}: key '{}' is '{}', not '{}': not a calq statistics file", origin_, kKeyType, type,
           kFileType);
    }
    const int64_t version = file_.get(kKeyVersion).as_int(what(kKeyVersion));
    if (version != kVersion) {
      fail(ErrorKind::kUnsupported, "{}: statistics file version {} is not supported (this calq reads version {})",
           origin_, version, kVersion);
    }
    const StatSet kinds = read_kinds();
    CalibrationStats stats(kinds);
    stats.model_name = string_key(kKeyModel);
    stats.samples = non_negative_key(kKeySamples);
    stats.seq_len = non_negative_key(kKeySeqLen);
    stats.seed = file_.get(kKeySeed).as_int(what(kKeySeed));
    stats.calib_sha256 = string_array(kKeyCalib);

    const std::vector<std::string> sites = string_array(kKeySites);
    const std::vector<int64_t> cols = int_array(kKeyCols, sites.size());
    const std::vector<int64_t> rows = int_array(kKeyRows, sites.size());
    std::vector<int64_t> hist_exp;
    if (kinds.contains(StatKind::kHistogram)) hist_exp = int_array(kKeyHistExp, sites.size());

    size_t expected_tensors = 0;
    for (size_t i = 0; i < sites.size(); ++i) {
      std::optional<CalibrationStats::ExpertSite> expert = parse_expert_prefix(sites[i]);
      auto site = parse_site_prefix(sites[i]);
      if (site && site->second == InputSite::kMoeIn) {
        expert = CalibrationStats::ExpertSite{site->first, -1, InputSite::kMoeIn};
      } else if (site && is_expert_site(site->second)) {
        site.reset();  // expert_in/expert_down need an expert index
      }
      if (!site && !expert) {
        fail(ErrorKind::kFormat,
             "{}: key '{}': element {} '{}' is not a site name (blk.<layer>.<site>, blk.<layer>.expert_in.<expert>, "
             "blk.<layer>.expert_down.<expert> or head_in)", origin_, kKeySites, i, sites[i]);
      }
      if (expert ? stats.find_expert(*expert) != nullptr : stats.find(site->first, site->second) != nullptr) {
        fail(ErrorKind::kFormat, "{}: key '{}': site '{}' is listed twice", origin_, kKeySites, sites[i]);
      }
      if (cols[i] < 1) {
        fail(ErrorKind::kFormat, "{}: key '{}': site '{}' has {} columns", origin_, kKeyCols, sites[i], cols[i]);
      }
      if (rows[i] < 0) {
        fail(ErrorKind::kFormat, "{}: key '{}': site '{}' has {} rows", origin_, kKeyRows, sites[i], rows[i]);
      }
      const int64_t exp = hist_exp.empty() ? 0 : hist_exp[i];
      SiteStats one = read_site(sites[i], kinds, cols[i], rows[i], exp);
      if (expert) {
        stats.add_expert_site(*expert, std::move(one));
      } else {
        stats.add_site(site->first, site->second, std::move(one));
      }
      expected_tensors += kinds.kinds().size();
    }
    if (file_.find(kKeyRouted) != nullptr) {
      const io::GgufValue& v = array_key(kKeyRouted, io::GgufValueType::kInt64);
      if (v.ints.size() % 3 != 0) fail(ErrorKind::kFormat, "{}: {} elements, not (layer, expert, tokens) triples", what(kKeyRouted), v.ints.size());
      for (size_t i = 0; i < v.ints.size(); i += 3) {
        const int64_t layer = v.ints[i], expert = v.ints[i + 1], tokens = v.ints[i + 2];
        if (layer < 0 || layer > kMaxLayer || expert < 0 || expert > kMaxLayer || tokens < 0) {
          fail(ErrorKind::kFormat, "{}: triple {} ({}, {}, {}) is out of range", what(kKeyRouted), i / 3, layer, expert,
               tokens);
        }
        std::vector<int64_t> one(static_cast<size_t>(expert + 1), 0);
        one[static_cast<size_t>(expert)] = tokens;
        stats.add_routed(layer, one);
      }
    }
    if (file_.tensors().size() != expected_tensors) {
      // Every expected tensor was found, so some other tensor is extra.
      std::set<std::string> known;
      for (const auto& s : sites) {
        for (const StatKind k : kinds.kinds()) known.insert(s + "." + std::string(tensor_suffix(k)));
      }
      for (const auto& t : file_.tensors()) {
        if (!known.contains(t.name)) {
          fail(ErrorKind::kFormat, "{}: tensor '{}' is not a statistic of a listed site and kind", origin_, t.name);
        }
      }
    }
    return stats;
  }

 private:
  std::string what(std::string_view key) const { return fmt::format("{}: key '{}'", origin_, key); }

  const std::string& string_key(std::string_view key) const { return file_.get(key).as_string(what(key)); }

  int64_t non_negative_key(std::string_view key) const {
    const int64_t v = file_.get(key).as_int(what(key));
    if (v < 0) fail(ErrorKind::kFormat, "{} = {} is negative", what(key), v);
    return v;
  }

  const io::GgufValue& array_key(std::string_view key, io::GgufValueType element) const {
    const io::GgufValue& v = file_.get(key);
    if (v.type != io::GgufValueType::kArray || v.array_type != element) {
      fail(ErrorKind::kFormat, "{}: expected an array of {}, got {}", what(key), io::gguf_value_type_name(element),
           v.type == io::GgufValueType::kArray ? fmt::format("an array of {}", io::gguf_value_type_name(v.array_type))
                                               : std::string(io::gguf_value_type_name(v.type)));
    }
    return v;
  }

  std::vector<std::string> string_array(std::string_view key) const {
    return array_key(key, io::GgufValueType::kString).strings;
  }

  std::vector<int64_t> int_array(std::string_view key, size_t expected_size) const {
    const io::GgufValue& v = array_key(key, io::GgufValueType::kInt64);
    if (v.ints.size() != expected_size) {
      fail(ErrorKind::kFormat, "{}: {} elements, expected {} (one per site)", what(key), v.ints.size(),
           expected_size);
    }
    return v.ints;
  }

  StatSet read_kinds() const {
    StatSet kinds;
    for (const std::string& name : string_array(kKeyKinds)) {
      const auto kind = stat_by_name(name);
      if (!kind) fail(ErrorKind::kFormat, "{}: unknown statistic '{}'", what(kKeyKinds), name);
      if (kinds.contains(*kind)) fail(ErrorKind::kFormat, "{}: statistic '{}' is listed twice", what(kKeyKinds), name);
      kinds = kinds.with(*kind);
    }
    return kinds;
  }

  // The data of tensor `name`, checked to have ggml type `type` and shape `ne`.
  std::span<const std::byte> tensor(const std::string& name, uint32_t type, std::vector<int64_t> ne) const {
    const io::GgufTensorInfo* t = file_.find_tensor(name);
    if (t == nullptr) fail(ErrorKind::kNotFound, "{}: tensor '{}' is missing", origin_, name);
    if (t->type != type) {
      const io::GgmlTypeInfo* want = io::ggml_type_info(type);
      const io::GgmlTypeInfo* got = io::ggml_type_info(t->type);
      fail(ErrorKind::kFormat, "{}: tensor '{}' has type {}, expected {}", origin_, name,
           got ? got->name : std::string_view("?"), want ? want->name : std::string_view("?"));
    }
    if (t->ne != ne) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' has shape [{}], expected [{}]", origin_, name,
           fmt::join(t->ne, ", "), fmt::join(ne, ", "));
    }
    return file_.tensor_data(*t);
  }

  template <typename T>
  std::vector<T> values(const std::string& name, uint32_t type, std::vector<int64_t> ne) const {
    const auto data = tensor(name, type, std::move(ne));
    std::vector<T> out(data.size() / sizeof(T));
    std::memcpy(out.data(), data.data(), out.size() * sizeof(T));
    return out;
  }

  // Finite and >= 0 (`signed_ok`: any finite value).
  template <typename T>
  void check_values(const std::string& name, std::span<const T> v, bool signed_ok) const {
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i]) || (!signed_ok && v[i] < 0)) {
        fail(ErrorKind::kFormat, "{}: tensor '{}': element {} is {} ({})", origin_, name, i,
             static_cast<double>(v[i]), signed_ok ? "not finite" : "not finite and >= 0");
      }
    }
  }

  SiteStats read_site(const std::string& prefix, StatSet kinds, int64_t cols, int64_t rows, int64_t exp) const {
    SiteStats::Parts parts;
    parts.rows = rows;
    const auto name = [&](StatKind k) { return prefix + "." + std::string(tensor_suffix(k)); };
    if (kinds.contains(StatKind::kAbsMax)) {
      parts.absmax = values<float>(name(StatKind::kAbsMax), io::kGgmlF32, {cols});
      check_values<float>(name(StatKind::kAbsMax), parts.absmax, false);
    }
    if (kinds.contains(StatKind::kMeanAbs)) {
      parts.sum_abs = values<double>(name(StatKind::kMeanAbs), kGgmlF64, {cols});
      check_values<double>(name(StatKind::kMeanAbs), parts.sum_abs, false);
    }
    if (kinds.contains(StatKind::kMeanSq)) {
      parts.sum_sq = values<double>(name(StatKind::kMeanSq), kGgmlF64, {cols});
      check_values<double>(name(StatKind::kMeanSq), parts.sum_sq, false);
    }
    if (kinds.contains(StatKind::kHessian)) {
      const std::string n = name(StatKind::kHessian);
      parts.hessian = values<double>(n, kGgmlF64, {cols, cols});
      check_values<double>(n, parts.hessian, true);
      const auto c = static_cast<size_t>(cols);
      for (size_t i = 0; i < c; ++i) {
        if (parts.hessian[i * c + i] < 0) {
          fail(ErrorKind::kFormat, "{}: tensor '{}': diagonal element {} is negative", origin_, n, i);
        }
        for (size_t j = 0; j < i; ++j) {
          if (parts.hessian[i * c + j] != parts.hessian[j * c + i]) {
            fail(ErrorKind::kFormat, "{}: tensor '{}' is not symmetric at ({}, {})", origin_, n, i, j);
          }
        }
      }
    }
    if (kinds.contains(StatKind::kHistogram)) {
      const std::string n = name(StatKind::kHistogram);
      if (exp < AbsHistogram::kMinExp || exp > AbsHistogram::kMaxExp) {
        fail(ErrorKind::kFormat, "{}: key '{}': site '{}' has exponent {}, outside [{}, {}]", origin_, kKeyHistExp,
             prefix, exp, AbsHistogram::kMinExp, AbsHistogram::kMaxExp);
      }
      const auto counts = values<int64_t>(n, kGgmlI64, {AbsHistogram::kBins});
      int64_t total = 0;
      for (size_t i = 0; i < counts.size(); ++i) {
        if (counts[i] < 0 || __builtin_add_overflow(total, counts[i], &total)) {
          fail(ErrorKind::kFormat, "{}: tensor '{}': bin {} holds {} (negative, or the total overflows)", origin_, n,
               i, counts[i]);
        }
      }
      int64_t values_seen = 0;
      if (__builtin_mul_overflow(rows, cols, &values_seen) || total != values_seen) {
        fail(ErrorKind::kFormat, "{}: tensor '{}' counts {} values, but the site has {} rows × {} columns", origin_,
             n, total, rows, cols);
      }
      parts.histogram = AbsHistogram::from_counts(static_cast<int>(exp), counts);
    }
    return SiteStats::from_parts(cols, kinds, std::move(parts));
  }

  const io::GgufFile& file_;
  std::string origin_;
};

// Why `b` cannot be merged into `a`; empty when it can.
std::string incompatibility(const CalibrationStats& a, const CalibrationStats& b) {
  if (a.kinds() != b.kinds()) {
    return fmt::format("statistics [{}] vs [{}]", a.kinds().to_string(), b.kinds().to_string());
  }
  if (a.model_name != b.model_name) return fmt::format("model '{}' vs '{}'", a.model_name, b.model_name);
  if (a.seq_len != b.seq_len) return fmt::format("seq_len {} vs {}", a.seq_len, b.seq_len);
  const auto sa = a.sites();
  const auto sb = b.sites();
  for (const auto& [layer, site] : sa) {
    const SiteStats* other = b.find(layer, site);
    if (other == nullptr) return fmt::format("site '{}' only in the first", site_prefix(layer, site));
    const int64_t ca = a.find(layer, site)->cols();
    if (other->cols() != ca) {
      return fmt::format("site '{}' has {} vs {} columns", site_prefix(layer, site), ca, other->cols());
    }
  }
  for (const auto& [layer, site] : sb) {
    if (a.find(layer, site) == nullptr) return fmt::format("site '{}' only in the second", site_prefix(layer, site));
  }
  // Expert sites depend on routing, so one file may lack an expert another has; widths must agree.
  for (const auto& w : a.expert_sites()) {
    const SiteStats* other = b.find_expert(w);
    if (other != nullptr && other->cols() != a.find_expert(w)->cols()) {
      return fmt::format("site '{}' has {} vs {} columns", expert_prefix(w), a.find_expert(w)->cols(), other->cols());
    }
  }
  return {};
}

}  // namespace

void write_stats_file(const CalibrationStats& stats, const std::filesystem::path& path) {
  const StatSet kinds = stats.kinds();
  io::GgufMetadata meta;
  meta.emplace_back(std::string(kKeyType), io::GgufValue::of_string(std::string(kFileType)));
  meta.emplace_back(std::string(kKeyVersion), io::GgufValue::of_uint32(kVersion));
  meta.emplace_back(std::string(kKeyModel), io::GgufValue::of_string(stats.model_name));
  meta.emplace_back(std::string(kKeySamples), int64_value(stats.samples));
  meta.emplace_back(std::string(kKeySeqLen), int64_value(stats.seq_len));
  meta.emplace_back(std::string(kKeySeed), int64_value(stats.seed));
  meta.emplace_back(std::string(kKeyCalib), io::GgufValue::of_strings(stats.calib_sha256));
  meta.emplace_back(std::string(kKeyKinds), io::GgufValue::of_strings(kinds.names()));

  std::vector<std::pair<std::string, const SiteStats*>> all;
  for (const auto& [layer, site] : stats.sites()) all.emplace_back(site_prefix(layer, site), stats.find(layer, site));
  for (const auto& w : stats.expert_sites()) all.emplace_back(expert_prefix(w), stats.find_expert(w));
  std::vector<std::string> names;
  std::vector<int64_t> cols, rows, exps;
  std::vector<io::GgufWriteTensor> tensors;
  for (const auto& [prefix, site_stats] : all) {
    const SiteStats& s = *site_stats;
    names.push_back(prefix);
    cols.push_back(s.cols());
    rows.push_back(s.rows());
    const auto add = [&](StatKind k, std::vector<int64_t> ne, uint32_t type, std::span<const std::byte> data) {
      tensors.push_back(io::GgufWriteTensor{
          .name = prefix + "." + std::string(tensor_suffix(k)), .ne = std::move(ne), .type = type, .data = data});
    };
    if (kinds.contains(StatKind::kAbsMax)) add(StatKind::kAbsMax, {s.cols()}, io::kGgmlF32, bytes_of(s.absmax()));
    if (kinds.contains(StatKind::kMeanAbs)) add(StatKind::kMeanAbs, {s.cols()}, kGgmlF64, bytes_of(s.sum_abs()));
    if (kinds.contains(StatKind::kMeanSq)) add(StatKind::kMeanSq, {s.cols()}, kGgmlF64, bytes_of(s.sum_sq()));
    if (kinds.contains(StatKind::kHistogram)) {
      exps.push_back(s.histogram().exp());
      add(StatKind::kHistogram, {AbsHistogram::kBins}, kGgmlI64,
          bytes_of(std::span<const int64_t>(s.histogram().counts())));
    }
    if (kinds.contains(StatKind::kHessian)) {
      add(StatKind::kHessian, {s.cols(), s.cols()}, kGgmlF64, bytes_of(s.hessian()));
    }
  }
  meta.emplace_back(std::string(kKeySites), io::GgufValue::of_strings(std::move(names)));
  meta.emplace_back(std::string(kKeyCols), int64_array(std::move(cols)));
  meta.emplace_back(std::string(kKeyRows), int64_array(std::move(rows)));
  if (kinds.contains(StatKind::kHistogram)) meta.emplace_back(std::string(kKeyHistExp), int64_array(std::move(exps)));
  if (!stats.routed_tokens.empty()) {
    std::vector<int64_t> triples;
    for (const auto& [layer, counts] : stats.routed_tokens) {
      for (size_t e = 0; e < counts.size(); ++e) {
        triples.insert(triples.end(), {layer, static_cast<int64_t>(e), counts[e]});
      }
    }
    meta.emplace_back(std::string(kKeyRouted), int64_array(std::move(triples)));
  }
  io::write_gguf(path, meta, tensors);
}

CalibrationStats read_stats_file(const std::filesystem::path& path) {
  const io::GgufFile file = io::GgufFile::open(path);
  return Reader(file).read();
}

CalibrationStats merge_stats_files(std::span<const std::filesystem::path> paths) {
  if (paths.empty()) fail(ErrorKind::kInvalidArgument, "no statistics files to merge");
  CalibrationStats total = read_stats_file(paths[0]);
  for (size_t i = 1; i < paths.size(); ++i) {
    const CalibrationStats next = read_stats_file(paths[i]);
    if (const std::string why = incompatibility(total, next); !why.empty()) {
      fail(ErrorKind::kInvalidArgument, "statistics files '{}' and '{}' cannot be merged: {}", paths[0].string(),
           paths[i].string(), why);
    }
    total.merge(next);
  }
  return total;
}

}  // namespace calq::calib
