// Outputs of a sensitivity map (sensitivity.h): the JSON file `--target-bpw` bit allocation reads,
// the ranked table printed on stdout, and one SVG heat-map per format.
//
// JSON (keys fixed; docs in README):
//   {"model", "eval_text", "ctx", "windows", "granularity": "tensor"|"layer", "method",
//    "formats": [names], "evaluations", "seconds",
//    "entries": [{"tensor", "layer", "role", "params", "kld": {format: nats/token},
//                 "bytes": {format: bytes as stored}, "stored_as": {format: format stored}}]}
// Entries in model order; "tensor" is the GGUF name ("blk.0.attn_q.weight"; "blk.0" for a layer
// entry), "layer" −1 for the embedding/head.
//
// Heat-map: rows = decoder layers, columns = the per-layer roles present (attn_q … ffn_down, or
// one "layer" column), colour = log10(KLD) on a sequential dark-to-light scale, the value printed
// in each cell, a title naming the format, a colour legend; embedding/head entries are listed
// under the grid. Plain SVG 1.1 text, no dependency.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "pipeline/sensitivity.h"

namespace calq::pipeline {

struct SensitivityMeta {
  std::string model;
  std::string eval_text;
  std::string method;
};

nlohmann::ordered_json sensitivity_json(const SensitivityMap& map, const SensitivityMeta& meta);
// Parses what sensitivity_json wrote (the fields of SensitivityMap and meta); Error naming
// `origin` on a missing key or wrong type.
SensitivityMap sensitivity_from_json(const nlohmann::json& j, const std::string& origin);

// Rank (by the first format's KLD, largest first), tensor, role, params, one KLD column per format.
std::string sensitivity_table(const SensitivityMap& map);

// The heat-map of format number `format_index`.
std::string sensitivity_svg(const SensitivityMap& map, size_t format_index, const std::string& title);

}  // namespace calq::pipeline
