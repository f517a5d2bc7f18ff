// Mixture-of-experts decoder blocks: Llama's attention, then
//   x = mlp_norm(h);  h += Σ_{e ∈ topk(router(x))} p_e · expert_e(x)  [+ σ(g·x) · shared(x)]
// The block's sites are the attention's: the MLP's input x is read by the router and by every
// expert, each on the tokens routed to it, so it is no single group of linears and its input
// scales have no fold point (a norm-weight fold would also rescale the router's and every
// expert's input). Qwen2-MoE's shared expert (the dense kMlp* slots) adds mlp_in = {gate, up},
// not foldable for the same reason, and mlp_down, which folds into the shared up rows as in the
// dense block. Experts' statistics are kept per expert apart from the sites (model/moe.h).
#include <array>

#include "model/block_topology.h"

namespace calq::model {
namespace {

constexpr std::array<TensorRole, 3> kAttnInConsumers = {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV};
constexpr std::array<TensorRole, 1> kAttnOutConsumers = {TensorRole::kAttnOut};
constexpr std::array<TensorRole, 2> kMlpInConsumers = {TensorRole::kMlpGate, TensorRole::kMlpUp};
constexpr std::array<TensorRole, 1> kMlpDownConsumers = {TensorRole::kMlpDown};
constexpr std::array<TensorRole, 1> kHeadInConsumers = {TensorRole::kOutput};

constexpr SiteWiring kAttnIn{.site = InputSite::kAttnIn, .producer = TensorRole::kAttnNorm,
                             .consumers = kAttnInConsumers, .fold = FoldPoint::kNormWeight};
constexpr SiteWiring kAttnOut{.site = InputSite::kAttnOut, .producer = TensorRole::kAttnV,
                              .consumers = kAttnOutConsumers, .fold = FoldPoint::kProducerRows,
                              .condition = FoldCondition::kOneQueryHeadPerKvHead};
constexpr SiteWiring kHead{.site = InputSite::kHeadIn, .producer = TensorRole::kFinalNorm,
                           .consumers = kHeadInConsumers, .fold = FoldPoint::kNone};

constexpr std::array<SiteWiring, 2> kMoeSites = {{kAttnIn, kAttnOut}};
constexpr std::array<InputSite, 2> kMoeOrder = {InputSite::kAttnOut, InputSite::kAttnIn};

constexpr std::array<SiteWiring, 4> kSharedSites = {{
    kAttnIn,
    kAttnOut,
    {.site = InputSite::kMlpIn, .producer = TensorRole::kMlpNorm, .consumers = kMlpInConsumers,
     .fold = FoldPoint::kNone},
    {.site = InputSite::kMlpDown, .producer = TensorRole::kMlpUp, .consumers = kMlpDownConsumers,
     .fold = FoldPoint::kProducerRows},
}};
constexpr std::array<InputSite, 3> kSharedOrder = {InputSite::kAttnOut, InputSite::kAttnIn, InputSite::kMlpDown};

}  // namespace

constexpr BlockTopology kMoeBlock{
    .name = "moe",
    .layer_sites = kMoeSites,
    .head = kHead,
    .migration_order = kMoeOrder,
};

constexpr BlockTopology kMoeSharedBlock{
    .name = "moe-shared",
    .layer_sites = kSharedSites,
    .head = kHead,
    .migration_order = kSharedOrder,
};

}  // namespace calq::model
