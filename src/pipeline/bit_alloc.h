// Bit allocation to a budget (`calq quantize --target-bpw B --candidates LIST --sensitivity FILE`):
// choose one format per tensor so that the predicted total KLD — the sum of the per-tensor KLDs a
// sensitivity map measured for each candidate — is smallest while the whole model fits B bits per
// weight as Model::bits_per_weight() counts them.
//
// The solver (allocate_bits) is an exact multiple-choice knapsack by dynamic programming over the
// bytes axis. Byte counts are large, but every option's extra bytes over its tensor's smallest
// option are multiples of one granule g = gcd of all those differences (GGUF block sizes and row
// counts share large factors: 512 bytes for the reference model's k-quants, thousands for 7B
// models), so the table has (budget − Σ smallest) / g cells per tensor and loses nothing: it is
// exact, not a rounding of the sizes. The table is refused (Error naming its size) above
// max_table_entries. Branch and bound with a Lagrangian bound would scale further but has no
// bound on its running time; the DP's time and memory are known before it starts.
//
// Contract of allocate_bits:
//  * Minimizes the predicted KLD, summed in item order in double, over all choices with total
//    bytes ≤ budget. Ties: fewer total bytes first, then the lower option index of the last item,
//    then of the one before it, and so on (ties are exact equalities of those sums).
//  * Deterministic; an infeasible budget (Σ smallest options > budget) is an
//    ErrorKind::kInvalidArgument error giving the smallest achievable bytes.
//
// Sensitivity maps (JSON, written by `calq sensitivity`):
//   {"model": str, "eval_text": str, "ctx": int, "windows": int, "granularity": "tensor",
//    "method": str, "formats": [str...],
//    "entries": [{"tensor": "blk.0.attn_q.weight", "layer": int, "role": str, "params": int,
//                 "kld": {"<format>": float, ...}, "bytes": {"<format>": int, ...}}]}
// "bytes" is optional (calq recomputes every size; given values must agree); other keys
// ("stored_as", "evaluations"...) are ignored. Every error names the file and, for an entry, its
// tensor. SensitivityFile is that file as read and checked for allocation; sensitivity.h's
// SensitivityMap is the measurement in memory.
//
// allocate_to_target plans a model: tensors pinned by a --rule, tensors outside the map and the
// embedding/head (unless the map has them and the head is not pinned) are fixed at the format the
// pipeline's plan gives them; their bytes, the norms' (float32) and every other stored weight's
// are subtracted from the budget, and the rest is allocated over the candidates.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/format.h"
#include "model/model.h"
#include "pipeline/model_quantize.h"
#include "pipeline/sensitivity.h"

namespace calq::pipeline {

struct BitOption {
  uint64_t bytes = 0;
  double kld = 0.0;  // predicted, finite, ≥ 0
};

struct BitItem {
  std::string name;  // for messages
  std::vector<BitOption> options;  // 1 to 255 options
};

inline constexpr uint64_t kDefaultMaxTableEntries = uint64_t{1} << 27;  // one byte each

struct AllocateOptions {
  uint64_t budget_bytes = 0;
  uint64_t max_table_entries = kDefaultMaxTableEntries;  // items × cells of the choice table
};

struct BitAllocation {
  std::vector<size_t> choice;  // option index per item
  uint64_t bytes = 0;          // Σ chosen bytes
  double kld = 0.0;            // Σ chosen KLDs, in item order
  uint64_t granule = 1;        // g above
  uint64_t cells = 0;          // cells of the table per item
};

BitAllocation allocate_bits(std::span<const BitItem> items, const AllocateOptions& options);

struct SensitivityFileEntry {
  std::string tensor;  // GGUF name
  int64_t layer = -1;
  std::string role;
  int64_t params = 0;
  std::map<std::string, double> kld;
  std::map<std::string, uint64_t> bytes;  // may be empty
};

struct SensitivityFile {
  std::string origin;  // file name, for messages
  std::string model, eval_text, granularity, method;
  int64_t ctx = 0, windows = 0;
  std::vector<std::string> formats;
  std::vector<SensitivityFileEntry> entries;
  const SensitivityFileEntry* find(std::string_view tensor) const;
};

// Parses and checks the structure (types, required keys, granularity "tensor", known formats,
// finite non-negative KLDs, no duplicate tensors). ErrorKind::kFormat / kInvalidArgument naming
// `origin`; read_ also kIo when the file cannot be read.
SensitivityFile parse_sensitivity_file(std::string_view json_text, const std::string& origin);
SensitivityFile read_sensitivity_file(const std::filesystem::path& path);
// A map measured in this process, as parse_sensitivity_file(sensitivity_json(map)) would give it
// (same checks, no JSON in between). `model`, `eval_text`, `method` describe the measurement.
SensitivityFile sensitivity_file_from_map(const SensitivityMap& map, const std::string& origin, const std::string& model,
                                          const std::string& eval_text, const std::string& method);

struct TargetOptions {
  double target_bpw = 0.0;
  std::vector<const Format*> candidates;
  // Allocate the embedding/head too when the map has them (false: --head-format pins them).
  bool allocate_head = true;
  // A linear weight neither in the map nor pinned by a rule is an error (no --format given);
  // false: it gets the main format of the quantize options.
  bool map_must_cover = true;
  uint64_t max_table_entries = kDefaultMaxTableEntries;
};

struct TensorChoice {
  std::string name;  // GGUF name
  int64_t rows = 0, cols = 0;
  const Format* format = nullptr;
  uint64_t bytes = 0;
  double kld = 0.0;  // predicted
};

struct TargetAllocation {
  std::vector<TensorChoice> tensors;  // allocated tensors, model order
  int64_t parameter_count = 0;
  uint64_t budget_bytes = 0;     // largest total with 8·bytes / parameter_count ≤ target_bpw
  uint64_t fixed_bytes = 0;      // every stored byte outside the allocated tensors
  uint64_t allocated_bytes = 0;
  double allocated_kld = 0.0;    // the solver's predicted sum
  double fixed_kld = 0.0;        // KLD the map gives for fixed tensors at their fixed format
  size_t fixed_in_map = 0;       // fixed tensors the map has an entry for
  uint64_t granule = 1, cells = 0;
  uint64_t total_bytes() const { return fixed_bytes + allocated_bytes; }
  double predicted_kld() const { return allocated_kld + fixed_kld; }
  double predicted_bpw() const;
  // One exact-match rule per allocated tensor: '^blk\.0\.attn_q\.weight$=q4_k'.
  std::vector<std::string> rule_texts() const;
};

// Checks `map` against `model` (every entry a tensor of the model with its parameter count, a KLD
// for every candidate that can store an allocated tensor, sizes as calq stores them) and solves.
// `base` are the quantize options without the allocation (main format, user rules, head format).
// An infeasible target is an ErrorKind::kInvalidArgument error giving the smallest achievable
// bits per weight.
TargetAllocation allocate_to_target(const model::Model& model, const ModelQuantizeOptions& base,
                                    const SensitivityFile& map, const TargetOptions& options);

}  // namespace calq::pipeline
