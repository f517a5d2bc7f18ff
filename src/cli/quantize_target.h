// `calq quantize --target-bpw B --candidates LIST --sensitivity FILE [--verify-text FILE]`: the
// flags and the steps around pipeline/bit_alloc.h — parsing the candidates, printing the
// allocation, and verifying its predicted KLD by comparing the written file with the
// full-precision model (eval/compare.h, as `calq eval --ref` does).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "formats/format.h"
#include "io/tokenizer.h"
#include "model/model.h"
#include "pipeline/bit_alloc.h"

namespace calq::cli {

struct TargetFlags {
  std::optional<double> target_bpw;
  std::string candidates;   // "q3_k,q4_k,q5_k"
  std::string sensitivity;  // JSON from calq sensitivity
  std::string sensitivity_text;     // or: measure the map now on this text (cli/sensitivity_run.h)
  int64_t sensitivity_windows = 8;  // windows of sensitivity_text
  int64_t sensitivity_ctx = 512;    // tokens per window of sensitivity_text
  std::string verify_text;
  int64_t verify_windows = -1;  // -1: the map's windows (0 there: all)
  int64_t verify_ctx = 0;       // 0: the map's ctx
  bool active() const { return target_bpw.has_value(); }
};

void add_target_flags(CLI::App* cmd, TargetFlags& flags);

// Flag combinations, before any work: the other flags need --target-bpw, which needs
// --candidates and one of --sensitivity (a map file) or --sensitivity-text (measure the map now);
// a --verify-text file must exist. Error otherwise.
void check_target_flags(const TargetFlags& flags);

// "q3_k, q4_k" -> registered formats, in order; unknown or repeated names are an Error.
std::vector<const Format*> parse_candidates(const std::string& list);

// The allocation table (tensor, format, bytes, predicted KLD) and the totals, for stdout.
std::string allocation_report(const pipeline::TargetAllocation& alloc, const pipeline::SensitivityFile& map,
                              double target_bpw);

// The token ids of --verify-text and the window protocol, prepared before quantizing so that a
// too-short text fails before any output is written.
struct VerifyPlan {
  std::vector<int32_t> ids;
  int64_t ctx = 0;
  int64_t windows = 0;  // 0 = all
};
VerifyPlan plan_verify(const TargetFlags& flags, const pipeline::SensitivityFile& map, const io::Tokenizer& tokenizer);

// Compares the written file `out` with the full-precision `ref` and prints measured against
// predicted KLD on stdout.
void verify_allocation(const VerifyPlan& plan, const model::Model& ref, const std::string& out,
                       const pipeline::TargetAllocation& alloc, ThreadPool& pool);

}  // namespace calq::cli
