// Block topology: how a dense decoder block is wired, as data. Everything that depends on the
// wiring — which linears share one input (and so one set of calibration statistics), what tensor
// produces that input, where activation-aware input scales fold, the order scale migration visits
// the groups — reads it from here instead of knowing roles by heart:
//   calib      collects statistics per site (site_roles / input_site in calib/collectors.h);
//   model      folds input scales into the site's producer (fold.h);
//   pipeline   checks a statistics file has every site, runs scale migration in migration order.
//
// Each architecture table (architecture.h) points at its block. Llama, Mistral and Qwen2 share
// kLlamaBlock (block_llama.cpp); Qwen2's q/k/v biases are slots of its table, not wiring (a bias
// of a producer linear is divided along with its rows when the model has it). A dense
// architecture with another block defines its BlockTopology in its own table file.
//
// A site is an activation that one or more linear layers read. The set of sites is fixed by the
// InputSite enum below: its names are the statistics file's vocabulary (docs/formats.md).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "model/architecture.h"
#include "model/config.h"

namespace calq::model {

// The numbering is stable (statistics are ordered by it): new sites are appended.
enum class InputSite : uint8_t {
  kAttnIn,   // "attn_in": the attention norm's output (q, k, v read it)
  kAttnOut,  // "attn_out": the attention output (o reads it)
  kMlpIn,    // "mlp_in": the mlp norm's output (gate, up)
  kMlpDown,  // "mlp_down": silu(gate) · up (down)
  kHeadIn,   // "head_in": the final norm's output (the output head; layer -1)
  // Mixture-of-experts inputs (model/moe.h), kept apart from the block's sites (calib's
  // CalibrationStats::observe_expert): a layer's MLP input over all tokens (the router's input),
  // and per expert the input of its gate/up (the tokens routed to it) and of its down.
  kMoeIn,       // "moe_in"
  kExpertIn,    // "expert_in"
  kExpertDown,  // "expert_down"
};
inline constexpr int kNumInputSites = 8;
// Whether `site` is one of the mixture-of-experts inputs above (no block lists them).
inline bool is_expert_site(InputSite site) {
  return site == InputSite::kMoeIn || site == InputSite::kExpertIn || site == InputSite::kExpertDown;
}

std::string_view site_name(InputSite site);                    // "attn_in", ..., "head_in"
std::optional<InputSite> site_by_name(std::string_view name);  // nullopt for any other string

// Where input scales s fold: every consumer's input column c is multiplied by s[c] and the
// producer's output c divided by s[c], so the float model computes the same function.
enum class FoldPoint : uint8_t {
  kNone,          // not foldable (the head: with tied embeddings its weight is also the
                  // embedding table, whose columns must not be rescaled)
  kNormWeight,    // the producer is an RMSNorm: its output is x/rms · w, so w[c] /= s[c]
  kProducerRows,  // the producer is a linear the site reads linearly per channel: its row c (and
                  // its bias c, when the model has one) /= s[c]
};

// When a fold point may be used.
enum class FoldCondition : uint8_t {
  kAlways,
  // num_heads == num_kv_heads. The attention output channel c is a convex combination of v's
  // channel c of one kv head; with grouped-query attention several query heads (o columns) read
  // one v channel, so one scale per o column cannot be folded into v.
  kOneQueryHeadPerKvHead,
};

struct SiteWiring {
  InputSite site;
  TensorRole producer;                    // a norm role (is_norm) or a per-layer linear role
  std::span<const TensorRole> consumers;  // linear roles, in forward order; [0] names the group
  FoldPoint fold = FoldPoint::kNone;
  FoldCondition condition = FoldCondition::kAlways;
};

struct BlockTopology {
  std::string_view name;                  // "llama"
  std::span<const SiteWiring> layer_sites;  // a decoder layer's sites, in forward order
  SiteWiring head;                        // the output head's input (statistics at layer -1)
  // The foldable layer sites in the order scale migration (SmoothQuant, AWQ) visits them. A site
  // whose producer is a consumer of another site goes before that site: the later search sees
  // the weights the earlier fold rescaled.
  std::span<const InputSite> migration_order;
};

// The standard Llama decoder block (pre-norm attention and SwiGLU MLP); block_llama.cpp.
extern const BlockTopology kLlamaBlock;
// Mixture-of-experts blocks (block_moe.cpp): without a shared expert (Mixtral, Qwen3-MoE) and
// with one held in the dense MLP slots (Qwen2-MoE).
extern const BlockTopology kMoeBlock;
extern const BlockTopology kMoeSharedBlock;

// The block of the architecture `config.model_type` names; an unregistered model type is an
// Error(kInvalidArgument) naming it.
const BlockTopology& block_topology(const ModelConfig& config);

// The wiring of `site` (layer sites and the head); nullptr when the block has no such site.
const SiteWiring* find_site(const BlockTopology& block, InputSite site);
// The site a linear role reads (the one listing it as a consumer); nullptr when none does.
const SiteWiring* site_of(const BlockTopology& block, TensorRole linear_role);

// Whether input scales of `site` can be folded for this config (fold point and condition).
bool can_fold(const SiteWiring& site, const ModelConfig& config);
// The input width of the site (its consumers' in-features) for this config.
int64_t site_width(const SiteWiring& site, const ModelConfig& config);

// A scale-migration group: a site in migration order, and whether its scales can be folded for
// this config (false: leave the group alone, e.g. attn_out under grouped-query attention).
struct MigrationGroup {
  const SiteWiring* site;
  bool foldable;
};
std::vector<MigrationGroup> migration_groups(const BlockTopology& block, const ModelConfig& config);

}  // namespace calq::model
