#include "pipeline/sensitivity_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace calq::pipeline {
namespace {

// ColorBrewer YlOrRd: light = insensitive, dark red = sensitive.
constexpr std::array<std::array<int, 3>, 5> kScale = {{
    {255, 255, 204}, {254, 217, 118}, {253, 141, 60}, {227, 26, 28}, {128, 0, 38},
}};

std::string color_at(double t) {
  t = std::clamp(t, 0.0, 1.0) * static_cast<double>(kScale.size() - 1);
  const auto i = std::min(static_cast<size_t>(t), kScale.size() - 2);
  const double f = t - static_cast<double>(i);
  std::array<int, 3> c{};
  for (size_t k = 0; k < 3; ++k) {
    c[k] = static_cast<int>(std::lround(kScale[i][k] + f * (kScale[i + 1][k] - kScale[i][k])));
  }
  return fmt::format("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

// KL is ≥ 0 but can round to 0 or a hair below; the colour scale needs a positive floor.
double log_kld(double kld) { return std::log10(std::max(kld, 1e-12)); }

template <typename T>
T need(const nlohmann::json& j, const char* key, const std::string& origin) {
  if (!j.is_object() || !j.contains(key)) fail(ErrorKind::kFormat, "{}: missing key \"{}\"", origin, key);
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(ErrorKind::kFormat, "{}: key \"{}\" has the wrong type", origin, key);
  }
}

}  // namespace

nlohmann::ordered_json sensitivity_json(const SensitivityMap& map, const SensitivityMeta& meta) {
  nlohmann::ordered_json j;
  j["model"] = meta.model;
  j["eval_text"] = meta.eval_text;
  j["ctx"] = map.ctx;
  j["windows"] = map.windows;
  j["granularity"] = granularity_name(map.granularity);
  j["method"] = meta.method;
  j["formats"] = map.formats;
  j["evaluations"] = map.evaluations;
  j["seconds"] = map.seconds;
  nlohmann::ordered_json entries = nlohmann::ordered_json::array();
  for (const SensitivityEntry& e : map.entries) {
    nlohmann::ordered_json kld = nlohmann::ordered_json::object(), bytes = kld, stored = kld;
    for (size_t f = 0; f < map.formats.size(); ++f) {
      kld[map.formats[f]] = e.kld[f];
      bytes[map.formats[f]] = e.bytes[f];
      stored[map.formats[f]] = e.stored_as[f];
    }
    entries.push_back({{"tensor", e.tensor}, {"layer", e.layer}, {"role", e.role}, {"params", e.params},
                       {"kld", kld}, {"bytes", bytes}, {"stored_as", stored}});
  }
  j["entries"] = std::move(entries);
  return j;
}

SensitivityMap sensitivity_from_json(const nlohmann::json& j, const std::string& origin) {
  SensitivityMap map;
  map.granularity = granularity_by_name(need<std::string>(j, "granularity", origin));
  map.formats = need<std::vector<std::string>>(j, "formats", origin);
  map.ctx = need<int64_t>(j, "ctx", origin);
  map.windows = need<int64_t>(j, "windows", origin);
  if (j.contains("evaluations")) map.evaluations = need<int64_t>(j, "evaluations", origin);
  if (!j.contains("entries") || !j["entries"].is_array()) fail(ErrorKind::kFormat, "{}: missing \"entries\" list", origin);
  for (const auto& je : j["entries"]) {
    SensitivityEntry e{.tensor = need<std::string>(je, "tensor", origin), .layer = need<int64_t>(je, "layer", origin),
                       .role = need<std::string>(je, "role", origin), .params = need<int64_t>(je, "params", origin)};
    const std::string where = origin + ": entry " + e.tensor;
    const auto kld = need<nlohmann::json>(je, "kld", where);
    const auto bytes = need<nlohmann::json>(je, "bytes", where);
    for (const std::string& f : map.formats) {
      e.kld.push_back(need<double>(kld, f.c_str(), where + " kld"));
      e.bytes.push_back(need<uint64_t>(bytes, f.c_str(), where + " bytes"));
      e.stored_as.push_back(je.contains("stored_as") && je["stored_as"].contains(f) ? je["stored_as"][f].get<std::string>()
                                                                                     : f);
    }
    map.entries.push_back(std::move(e));
  }
  return map;
}

std::string sensitivity_table(const SensitivityMap& map) {
  std::vector<size_t> order(map.entries.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // Stable: equal KLDs keep model order, so the table is the same on every run.
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return map.entries[a].kld.front() > map.entries[b].kld.front(); });
  std::string out = fmt::format("{:>4}  {:<26} {:<11} {:>10}", "rank", "tensor", "role", "params");
  for (const std::string& f : map.formats) out += fmt::format(" {:>14}", "kld " + f);
  out += "\n";
  for (size_t r = 0; r < order.size(); ++r) {
    const SensitivityEntry& e = map.entries[order[r]];
    out += fmt::format("{:>4}  {:<26} {:<11} {:>10}", r + 1, e.tensor, e.role, e.params);
    for (const double k : e.kld) out += fmt::format(" {:>14.6g}", k);
    out += "\n";
  }
  return out;
}

std::string sensitivity_svg(const SensitivityMap& map, size_t fi, const std::string& title) {
  // Grid: layers × per-layer roles in order of appearance.
  std::vector<std::string> roles;
  int64_t n_layers = 0;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const SensitivityEntry& e : map.entries) {
    lo = std::min(lo, log_kld(e.kld[fi]));
    hi = std::max(hi, log_kld(e.kld[fi]));
    if (e.layer < 0) continue;
    n_layers = std::max(n_layers, e.layer + 1);
    if (std::find(roles.begin(), roles.end(), e.role) == roles.end()) roles.push_back(e.role);
  }
  if (!(hi > lo)) hi = lo + 1.0;  // one value (or none): any colour, no division by zero
  constexpr int kCellW = 92, kCellH = 26, kLeft = 70, kTop = 64, kLegendH = 14;
  const int grid_w = kCellW * static_cast<int>(std::max<size_t>(roles.size(), 1));
  const int n_global = static_cast<int>(std::count_if(map.entries.begin(), map.entries.end(),
                                                      [](const SensitivityEntry& e) { return e.layer < 0; }));
  const int grid_bottom = kTop + kCellH * static_cast<int>(n_layers);
  const int width = std::max(kLeft + grid_w + 20, 460);
  const int height = grid_bottom + 24 + 18 * n_global + 70;

  std::string s = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{2}</text>\n"
      "<text x=\"10\" y=\"36\">KL(FP || one {3} quantized in {4}), nats/token; {5} windows x {6} tokens</text>\n",
      width, height, xml_escape(title), map.granularity == Granularity::kTensor ? "tensor" : "layer",
      xml_escape(map.formats[fi]), map.windows, map.ctx);
  for (size_t c = 0; c < roles.size(); ++c) {
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     kLeft + kCellW * static_cast<int>(c) + kCellW / 2, kTop - 6, xml_escape(roles[c]));
  }
  for (int64_t l = 0; l < n_layers; ++l) {
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">layer {}</text>\n", kLeft - 6,
                     kTop + kCellH * static_cast<int>(l) + kCellH / 2 + 4, l);
  }
  for (const SensitivityEntry& e : map.entries) {
    if (e.layer < 0) continue;
    const auto c = static_cast<int>(std::find(roles.begin(), roles.end(), e.role) - roles.begin());
    const double t = (log_kld(e.kld[fi]) - lo) / (hi - lo);
    const int x = kLeft + kCellW * c, y = kTop + kCellH * static_cast<int>(e.layer);
    s += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"white\"><title>{}: {:.4g}</title>"
        "</rect>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{}\">{:.3g}</text>\n",
        x, y, kCellW, kCellH, color_at(t), xml_escape(e.tensor), e.kld[fi], x + kCellW / 2, y + kCellH / 2 + 4,
        t > 0.55 ? "white" : "black", e.kld[fi]);
  }
  int y = grid_bottom + 20;
  for (const SensitivityEntry& e : map.entries) {
    if (e.layer >= 0) continue;
    const double t = (log_kld(e.kld[fi]) - lo) / (hi - lo);
    s += fmt::format("<rect x=\"10\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\" stroke=\"#888\"/>"
                     "<text x=\"28\" y=\"{}\">{} ({}): {:.4g}</text>\n",
                     y - 10, color_at(t), y, xml_escape(e.tensor), xml_escape(e.role), e.kld[fi]);
    y += 18;
  }
  // Legend: the colour ramp over [lo, hi] in log10(KLD).
  y += 10;
  s += "<defs><linearGradient id=\"ramp\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">";
  for (size_t k = 0; k < kScale.size(); ++k) {
    const double t = static_cast<double>(k) / static_cast<double>(kScale.size() - 1);
    s += fmt::format("<stop offset=\"{:.2f}\" stop-color=\"{}\"/>", t, color_at(t));
  }
  s += "</linearGradient></defs>\n";
  s += fmt::format("<rect x=\"10\" y=\"{}\" width=\"240\" height=\"{}\" fill=\"url(#ramp)\" stroke=\"#888\"/>\n", y,
                   kLegendH);
  s += fmt::format("<text x=\"10\" y=\"{}\">{:.3g}</text><text x=\"250\" y=\"{}\" text-anchor=\"end\">{:.3g}</text>"
                   "<text x=\"260\" y=\"{}\">KLD (log10 colour scale)</text>\n",
                   y + kLegendH + 14, std::pow(10.0, lo), y + kLegendH + 14, std::pow(10.0, hi), y + kLegendH - 2);
  s += "</svg>\n";
  return s;
}

}  // namespace calq::pipeline
