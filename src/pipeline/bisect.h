// Regression bisection: which tensors of a quantized model Q, restored to full precision (or to a
// higher-precision format), bring KL(FP ‖ hybrid) down to a goal — with as few evaluations as
// adaptive group testing allows. `calq bisect`.
//
// Goal: KLD ≤ goal = target + tolerance. `target` (default 0: the full-precision model itself) is
// the level one expects, e.g. the KLD of a known good quantization; `tolerance` (> 0) defaults to
// half the distance from target to KLD(Q): "restore until at least half the damage is gone".
//
// Search (find_restore_set, over candidate indices 0..n−1 in model order), with ok(S) = KLD of Q
// with S restored ≤ goal; evaluations are cached by set, and only uncached ones count:
//  1. ok(∅) — Q itself; if it holds, the answer is the empty set.
//  2. solve(C, base), C a contiguous candidate range whose restoration (with `base`) is presumed
//     to reach the goal: split C into halves C1, C2 and test C1 only. If ok(base ∪ C1), recurse
//     into C1; otherwise recurse into C2 without testing it (for one culprit it must be there;
//     the leaf's own test verifies it). A singleton leaf returns itself iff ok.
//  3. When neither half alone suffices (several culprits, or interacting ones) and ok(base ∪ C)
//     holds: S1 = solve(C1, base ∪ C2), then S2 = solve(C2, base ∪ S1) — the ddmin-style descent
//     into both halves.
//  4. A set of more than one tensor is pruned to 1-minimality: each member is dropped when the
//     goal still holds without it.
// For one culprit among n candidates this takes ≤ ⌈log2 n⌉ + 2 evaluations (one per halving, one
// for Q, one to verify the final leaf) — within the bound 2·log2(n) + 2.
// If restoring every candidate does not reach the goal, found = false and the set is all of them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "model/model.h"
#include "pipeline/kld_eval.h"
#include "pipeline/tensor_swap.h"

namespace calq::pipeline {

struct BisectStep {
  std::vector<size_t> restored;  // candidate indices, ascending
  double kld = 0;
  bool ok = false;               // kld <= goal (for the first step, Q itself, with the goal known after it)
};

struct BisectSearchOptions {
  double target = 0.0;
  std::optional<double> tolerance;  // > 0; default (kld(Q) − target) / 2
  std::function<void(const BisectStep&)> on_step;  // after each counted evaluation
};

struct BisectSearchResult {
  std::vector<size_t> set;  // ascending
  bool found = false;
  double kld_q = 0;         // KLD with nothing restored
  double kld = 0;           // KLD with `set` restored
  double goal = 0;
  int64_t evaluations = 0;
  std::vector<BisectStep> steps;
};

// `kld_of(restored)` gives the KLD of Q with those candidates restored (ascending indices).
// Errors: n == 0, tolerance <= 0 or target < 0 (kInvalidArgument).
BisectSearchResult find_restore_set(size_t n, const std::function<double(std::span<const size_t>)>& kld_of,
                                    const BisectSearchOptions& options);

// The same over models: candidates are the weights of `quantized` that differ (format or stored
// bytes) from `restore_from` (the FP model, or the FP model requantized to a restore format), in
// model order;
// the hybrid for a set is `quantized` with those weights taken from `restore_from`.
struct BisectResult {
  std::vector<WeightRef> candidates;
  std::vector<WeightRef> restored;  // the set found
  BisectSearchResult search;
};
BisectResult bisect_restore(const model::Model& quantized, const model::Model& restore_from,
                            const BisectSearchOptions& options, KldEvaluator& evaluator);

}  // namespace calq::pipeline
