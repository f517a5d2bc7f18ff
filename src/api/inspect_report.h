// The outlier report of `calq inspect`: per-tensor weight statistics and per-linear-input
// activation statistics, as aligned text tables (calq::inspect's report.text) and as JSON.
//
// Tables: one row per weight tensor; one row per linear input, where roles of one layer that saw
// the same input (q/k/v, gate/up) are printed as one row ("attn_q,attn_k,attn_v") — the JSON
// keeps one entry per (layer, role). JSON carries everything, per-channel vectors included;
// a max/median ratio that is infinite (median 0) is written as null.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calib/activation_stats.h"
#include "calib/weight_stats.h"

namespace calq::api {

// `names[i]` labels `stats[i]` (the tensor's name in the model's own file).
std::string weight_table_text(const std::vector<calib::ModelWeightStats>& stats, const std::vector<std::string>& names,
                        const calib::WeightStatsOptions& options);
nlohmann::ordered_json weight_stats_json(const std::vector<calib::ModelWeightStats>& stats,
                                         const std::vector<std::string>& names,
                                         const calib::WeightStatsOptions& options);

std::string activation_table_text(const calib::ActivationStats& stats);
nlohmann::ordered_json activation_stats_json(const calib::ActivationStats& stats);

}  // namespace calq::api
