#include "api/inspect_report.h"

#include <fmt/format.h>

#include <iterator>

#include <algorithm>
#include <cmath>

namespace calq::api {
namespace {

constexpr size_t kTableTopChannels = 3;

std::string top_text(const calib::ChannelSummary& s, size_t n) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < std::min(n, s.top.size()); ++i) {
    parts.push_back(fmt::format("{}:{:.3g}", s.top[i].channel, s.top[i].value));
  }
  return fmt::format("{}", fmt::join(parts, " "));
}

std::string ratio_text(double r) { return std::isinf(r) ? "inf" : fmt::format("{:.2f}", r); }

nlohmann::ordered_json ratio_json(double r) {
  return std::isinf(r) ? nlohmann::ordered_json() : nlohmann::ordered_json(r);
}

nlohmann::ordered_json top_json(const calib::ChannelSummary& s, const char* value_key) {
  auto out = nlohmann::ordered_json::array();
  for (const auto& c : s.top) out.push_back({{"channel", c.channel}, {value_key, c.value}});
  return out;
}

std::string layer_text(int64_t layer) { return layer < 0 ? "head" : fmt::format("{}", layer); }

}  // namespace

std::string weight_table_text(const std::vector<calib::ModelWeightStats>& stats, const std::vector<std::string>& names,
                        const calib::WeightStatsOptions& o) {
  std::string text;
  const auto out = std::back_inserter(text);
  fmt::format_to(out, "\nweights: per tensor W[out, in]; kurt = excess kurtosis (Gaussian 0); >{}sd = share of |w - mean| > "
             "{} std;\n  channel = input column; outl.ch = channels with max|w| > {} x median channel max|w|\n\n",
             o.sigma_threshold, o.sigma_threshold, o.outlier_channel_factor);
  size_t width = 6;
  for (const auto& n : names) width = std::max(width, n.size());
  const std::string tail_head = fmt::format(">{}sd %", o.sigma_threshold);
  fmt::format_to(out, "{:<{}}  {:<13}  {:>9}  {:>9}  {:>9}  {:>8}  {:>8}  {:>9}  {:>8}  {:>8}  {:>7}  {:>7}  {}\n", "tensor",
             width, "shape", "min", "max", "mean", "std", "kurt", tail_head, "ch.max", "ch.med", "max/med", "outl.ch",
             "top channels (ch:max|w|)");
  for (size_t i = 0; i < stats.size(); ++i) {
    const calib::WeightStats& s = stats[i].stats;
    fmt::format_to(out, "{:<{}}  {:<13}  {:>9.4f}  {:>9.4f}  {:>9.2e}  {:>8.4f}  {:>8.2f}  {:>9.4f}  {:>8.4f}  {:>8.4f}  {:>7}  "
               "{:>7}  {}\n",
               names[i], width, fmt::format("[{}, {}]", s.rows, s.cols), s.min, s.max, s.mean, s.std,
               s.excess_kurtosis, 100.0 * s.beyond_sigma_share, s.channels.max, s.channels.median,
               ratio_text(s.channels.max_over_median), s.outlier_channels.size(),
               top_text(s.channels, kTableTopChannels));
  }
  return text;
}

nlohmann::ordered_json weight_stats_json(const std::vector<calib::ModelWeightStats>& stats,
                                         const std::vector<std::string>& names, const calib::WeightStatsOptions& o) {
  nlohmann::ordered_json j;
  j["sigma_threshold"] = o.sigma_threshold;
  j["outlier_channel_factor"] = o.outlier_channel_factor;
  j["kurtosis"] = "excess (m4 / m2^2 - 3)";
  auto& tensors = j["tensors"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < stats.size(); ++i) {
    const calib::WeightStats& s = stats[i].stats;
    nlohmann::ordered_json t;
    t["name"] = names[i];
    t["layer"] = stats[i].layer;
    t["role"] = model::role_name(stats[i].role);
    t["tied"] = stats[i].tied;
    t["shape"] = {s.rows, s.cols};
    t["min"] = s.min;
    t["max"] = s.max;
    t["absmax"] = s.absmax;
    t["mean"] = s.mean;
    t["std"] = s.std;
    t["excess_kurtosis"] = s.excess_kurtosis;
    t["beyond_sigma_count"] = s.beyond_sigma_count;
    t["beyond_sigma_share"] = s.beyond_sigma_share;
    t["channel_absmax_max"] = s.channels.max;
    t["channel_absmax_median"] = s.channels.median;
    t["channel_max_over_median"] = ratio_json(s.channels.max_over_median);
    t["outlier_channels"] = s.outlier_channels;
    t["top_channels"] = top_json(s.channels, "absmax");
    t["channel_absmax"] = s.channel_absmax;
    tensors.push_back(std::move(t));
  }
  return j;
}

std::string activation_table_text(const calib::ActivationStats& st) {
  std::string text;
  const auto out = std::back_inserter(text);
  fmt::format_to(out, 
      "\nactivations: per linear input X[tokens, in]; ch.absmax = per channel max |x| over all tokens;\n"
      "  ch>{0} = channels whose max |x| > {0} (LLM.int8() threshold); vals>{0} = share of all values above it\n\n",
      st.threshold);
  // Roles of one layer that saw the same input are printed as one row.
  struct Row {
    size_t first;
    std::string roles;
  };
  std::vector<Row> rows;
  for (size_t i = 0; i < st.inputs.size(); ++i) {
    const auto& s = st.inputs[i];
    if (!rows.empty()) {
      const auto& p = st.inputs[rows.back().first];
      if (p.layer == s.layer && p.channel_absmax == s.channel_absmax && p.channel_mean_abs == s.channel_mean_abs) {
        rows.back().roles += fmt::format(",{}", model::role_name(s.role));
        continue;
      }
    }
    rows.push_back({i, std::string(model::role_name(s.role))});
  }
  size_t width = 5;
  for (const auto& r : rows) width = std::max(width, r.roles.size());
  const std::string ch_above = fmt::format("ch>{}", st.threshold);
  const std::string vals_above = fmt::format("vals>{} %", st.threshold);
  fmt::format_to(out, "{:<5}  {:<{}}  {:>6}  {:>8}  {:>9}  {:>9}  {:>9}  {:>8}  {:>6}  {:>10}  {}\n", "layer", "input", width,
             "ch", "tokens", "mean|x|", "absmax", "ch.med", "max/med", ch_above, vals_above,
             "top channels (ch:absmax)");
  for (const auto& r : rows) {
    const auto& s = st.inputs[r.first];
    fmt::format_to(out, "{:<5}  {:<{}}  {:>6}  {:>8}  {:>9.4f}  {:>9.3f}  {:>9.4f}  {:>8}  {:>6}  {:>10.5f}  {}\n",
               layer_text(s.layer), r.roles, width, s.cols, s.rows, s.mean_abs, s.channels.max, s.channels.median,
               ratio_text(s.channels.max_over_median), s.channels_above_threshold, 100.0 * s.values_above_share,
               top_text(s.channels, kTableTopChannels));
  }
  return text;
}

nlohmann::ordered_json activation_stats_json(const calib::ActivationStats& st) {
  nlohmann::ordered_json j;
  j["threshold"] = st.threshold;
  auto& inputs = j["inputs"] = nlohmann::ordered_json::array();
  for (const auto& s : st.inputs) {
    nlohmann::ordered_json e;
    e["layer"] = s.layer;
    e["role"] = model::role_name(s.role);
    e["channels"] = s.cols;
    e["tokens"] = s.rows;
    e["absmax"] = s.channels.max;
    e["channel_absmax_median"] = s.channels.median;
    e["max_over_median"] = ratio_json(s.channels.max_over_median);
    e["channels_above_threshold"] = s.channels_above_threshold;
    e["values_above_share"] = s.values_above_share;
    e["mean_abs"] = s.mean_abs;
    e["top_channels"] = top_json(s.channels, "absmax");
    e["channel_absmax"] = s.channel_absmax;
    e["channel_mean_abs"] = s.channel_mean_abs;
    e["channel_above_count"] = s.channel_above;
    inputs.push_back(std::move(e));
  }
  return j;
}

}  // namespace calq::api
