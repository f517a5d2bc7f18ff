// The steps of quantize()'s bit-allocation form (calq::TargetOptions) around pipeline/bit_alloc.h:
// checking the options, the candidates, the allocation table, and verifying the predicted KLD by
// comparing the written file with the full-precision model (eval/compare.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calq/quantize.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "io/tokenizer.h"
#include "model/model.h"
#include "pipeline/bit_alloc.h"

namespace calq::api {

// Option combinations, before any work: candidates and one of sensitivity (a map file) or
// sensitivity_text (measure the map now) are needed; text files must exist. Error otherwise.
void check_target_options(const TargetOptions& options);

// Registered formats, in order; unknown or repeated names are an Error.
std::vector<const Format*> parse_candidates(const std::vector<std::string>& names);

// The allocation table (tensor, format, bytes, predicted KLD) and the totals.
std::string allocation_report(const pipeline::TargetAllocation& alloc, const pipeline::SensitivityFile& map,
                              double target_bpw);

// The token ids of verify_text and the window protocol, prepared before quantizing so that a
// too-short text fails before any output is written.
struct VerifyPlan {
  std::vector<int32_t> ids;
  int64_t ctx = 0;
  int64_t windows = 0;  // 0 = all
};
VerifyPlan plan_verify(const TargetOptions& options, const pipeline::SensitivityFile& map,
                       const io::Tokenizer& tokenizer);

// Compares the written file `out` with the full-precision `ref`: measured against predicted KLD.
VerifyReport verify_allocation(const VerifyPlan& plan, const model::Model& ref, const std::string& out,
                               const pipeline::TargetAllocation& alloc, ThreadPool& pool);

}  // namespace calq::api
