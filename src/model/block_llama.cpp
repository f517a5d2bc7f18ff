// The standard Llama decoder block, shared by the llama, mistral and qwen2 tables:
//   h += o(attention(q, k, v of attn_norm(h)));  h += down(silu(gate(x)) · up(x)), x = mlp_norm(h)
//   logits = output(final_norm(h))
#include <array>

#include "model/block_topology.h"

namespace calq::model {
namespace {

constexpr std::array<TensorRole, 3> kAttnInConsumers = {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV};
constexpr std::array<TensorRole, 1> kAttnOutConsumers = {TensorRole::kAttnOut};
constexpr std::array<TensorRole, 2> kMlpInConsumers = {TensorRole::kMlpGate, TensorRole::kMlpUp};
constexpr std::array<TensorRole, 1> kMlpDownConsumers = {TensorRole::kMlpDown};
constexpr std::array<TensorRole, 1> kHeadInConsumers = {TensorRole::kOutput};

constexpr std::array<SiteWiring, 4> kLayerSites = {{
    {.site = InputSite::kAttnIn, .producer = TensorRole::kAttnNorm, .consumers = kAttnInConsumers,
     .fold = FoldPoint::kNormWeight},
    // Attention output channel c is a convex combination of v's channel c (and its bias).
    {.site = InputSite::kAttnOut, .producer = TensorRole::kAttnV, .consumers = kAttnOutConsumers,
     .fold = FoldPoint::kProducerRows, .condition = FoldCondition::kOneQueryHeadPerKvHead},
    {.site = InputSite::kMlpIn, .producer = TensorRole::kMlpNorm, .consumers = kMlpInConsumers,
     .fold = FoldPoint::kNormWeight},
    // down reads silu(gate) · up, which is linear in each row of up.
    {.site = InputSite::kMlpDown, .producer = TensorRole::kMlpUp, .consumers = kMlpDownConsumers,
     .fold = FoldPoint::kProducerRows},
}};

// o's scales fold into the rows of v and down's into the rows of up, which are consumers of
// attn_in and mlp_in: those two are searched after, on the weights as they are then (the other
// order would rescale their clipped weights row by row after their search).
constexpr std::array<InputSite, 4> kMigrationOrder = {InputSite::kAttnOut, InputSite::kAttnIn,
                                                      InputSite::kMlpDown, InputSite::kMlpIn};

}  // namespace

constexpr BlockTopology kLlamaBlock{
    .name = "llama",
    .layer_sites = kLayerSites,
    .head = {.site = InputSite::kHeadIn, .producer = TensorRole::kFinalNorm, .consumers = kHeadInConsumers,
             .fold = FoldPoint::kNone},
    .migration_order = kMigrationOrder,
};

}  // namespace calq::model
