#include "model/block_topology.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "model/tiny_model_testutil.h"

namespace calq::model {
namespace {

// A config of `type` with distinct widths everywhere, so a site paired with the wrong producer
// shows as a width mismatch. Grouped-query (4 query heads on 2 kv heads) or not.
ModelConfig config_of(const std::string& type, bool grouped) {
  ModelConfig c = testutil::tiny_config(/*tied=*/false);
  c.model_type = type;
  c.hidden_size = 40;
  c.num_heads = 4;
  c.num_kv_heads = grouped ? 2 : 4;
  c.head_dim = 12;  // q_dim 48 != hidden 40
  c.intermediate_size = 56;
  c.qkv_bias = type == "qwen2";
  return c;
}

std::vector<const Architecture*> registered() {
  std::vector<const Architecture*> out;
  for (const auto& type : supported_model_types()) out.push_back(find_architecture(type));
  return out;
}

// The layer site whose consumers include `role`, by index into layer_sites; -1 if none.
int consumer_site_index(const BlockTopology& block, TensorRole role) {
  for (size_t i = 0; i < block.layer_sites.size(); ++i) {
    const auto& c = block.layer_sites[i].consumers;
    if (std::find(c.begin(), c.end(), role) != c.end()) return static_cast<int>(i);
  }
  return -1;
}

TEST(BlockTopology, EveryArchitectureDeclaresAConsistentBlock) {
  for (const Architecture* arch : registered()) {
    SCOPED_TRACE(arch->model_type);
    ASSERT_NE(arch->block, nullptr);
    const BlockTopology& block = *arch->block;
    EXPECT_FALSE(block.name.empty());
    ASSERT_FALSE(block.layer_sites.empty());

    // Sites are distinct; the head's is not a layer site.
    std::set<InputSite> sites;
    for (const SiteWiring& w : block.layer_sites) {
      EXPECT_TRUE(sites.insert(w.site).second) << site_name(w.site);
    }
    EXPECT_TRUE(sites.insert(block.head.site).second);

    // Every per-layer linear role the table has is consumed by exactly one layer site; in forward order the
    // consumers are the roles in the order a layer applies them. The head reads only the output.
    std::vector<TensorRole> consumed;
    for (const SiteWiring& w : block.layer_sites) {
      ASSERT_FALSE(w.consumers.empty()) << site_name(w.site);
      for (const TensorRole r : w.consumers) {
        EXPECT_TRUE(is_linear(r) && is_per_layer(r)) << role_name(r);
        EXPECT_TRUE(has_slot(*arch, r)) << role_name(r);
        consumed.push_back(r);
      }
    }
    // (A MoE block's experts and router read the MLP input apart from the sites: moe.h.)
    std::vector<TensorRole> held;
    for (const TensorRole r : kLayerLinearRoles) {
      if (has_slot(*arch, r)) held.push_back(r);
    }
    EXPECT_EQ(consumed, held) << arch->model_type;
    ASSERT_EQ(block.head.consumers.size(), 1u);
    EXPECT_EQ(block.head.consumers[0], TensorRole::kOutput);
    EXPECT_TRUE(is_norm(block.head.producer) && !is_per_layer(block.head.producer));
    EXPECT_TRUE(has_slot(*arch, block.head.producer));

    // Producers exist and come before their consumers: a per-layer norm, or a linear of an earlier
    // site. The fold point matches the producer's kind.
    for (size_t i = 0; i < block.layer_sites.size(); ++i) {
      const SiteWiring& w = block.layer_sites[i];
      SCOPED_TRACE(site_name(w.site));
      EXPECT_TRUE(has_slot(*arch, w.producer)) << role_name(w.producer);
      if (is_norm(w.producer)) {
        EXPECT_TRUE(is_per_layer(w.producer));
        EXPECT_NE(w.fold, FoldPoint::kProducerRows);
      } else {
        EXPECT_TRUE(is_linear(w.producer) && is_per_layer(w.producer)) << role_name(w.producer);
        const int at = consumer_site_index(block, w.producer);
        EXPECT_GE(at, 0);
        EXPECT_LT(at, static_cast<int>(i));
        EXPECT_NE(w.fold, FoldPoint::kNormWeight);
      }
      // Where a fold is allowed, the producer's output has exactly the site's width, and every
      // consumer reads that width.
      for (const bool grouped : {false, true}) {
        const ModelConfig c = config_of(std::string(arch->model_type), grouped);
        const int64_t width = site_width(w, c);
        for (const TensorRole r : w.consumers) EXPECT_EQ(expected_shape(c, r).back(), width) << role_name(r);
        if (can_fold(w, c)) {
          EXPECT_EQ(expected_shape(c, w.producer).front(), width) << role_name(w.producer);
        }
        // Without grouped-query attention every fold point can be used.
        if (!grouped) {
          EXPECT_EQ(can_fold(w, c), w.fold != FoldPoint::kNone);
        }
      }
    }
    EXPECT_EQ(site_width(block.head, config_of(std::string(arch->model_type), true)), 40);

    // Migration order: a permutation of the foldable layer sites, with every site whose producer
    // is another site's consumer before that site (its fold rescales the other's weights).
    std::vector<InputSite> foldable, order(block.migration_order.begin(), block.migration_order.end());
    for (const SiteWiring& w : block.layer_sites) {
      if (w.fold != FoldPoint::kNone) foldable.push_back(w.site);
    }
    EXPECT_TRUE(std::is_permutation(order.begin(), order.end(), foldable.begin(), foldable.end()));
    const auto position = [&](InputSite s) { return std::find(order.begin(), order.end(), s) - order.begin(); };
    for (const SiteWiring& w : block.layer_sites) {
      if (w.fold != FoldPoint::kProducerRows) continue;
      const int producer_at = consumer_site_index(block, w.producer);
      ASSERT_GE(producer_at, 0);
      const InputSite producer_site = block.layer_sites[static_cast<size_t>(producer_at)].site;
      EXPECT_LT(position(w.site), position(producer_site)) << site_name(w.site);
    }
  }
}

TEST(BlockTopology, SiteNamesRoundTrip) {
  std::set<std::string_view> names;
  for (int i = 0; i < kNumInputSites; ++i) {
    const auto site = static_cast<InputSite>(i);
    EXPECT_TRUE(names.insert(site_name(site)).second);
    EXPECT_EQ(site_by_name(site_name(site)), site);
  }
  EXPECT_FALSE(site_by_name("attn_q").has_value());
  EXPECT_FALSE(site_by_name("").has_value());
}

// The wiring the pipeline, calibration and fold code had written out by hand before the topology.
TEST(BlockTopology, LlamaBlockIsTheWiringCalqAlwaysUsed) {
  for (const Architecture* arch : registered()) {
    EXPECT_EQ(arch->block, arch->moe == nullptr ? &kLlamaBlock
                           : arch->moe->shared_expert ? &kMoeSharedBlock : &kMoeBlock)
        << arch->model_type;
  }
  using R = TensorRole;
  struct Old {
    InputSite site;
    std::vector<R> consumers;
    R producer;
    FoldPoint fold;
  };
  const std::vector<Old> old = {
      {InputSite::kAttnIn, {R::kAttnQ, R::kAttnK, R::kAttnV}, R::kAttnNorm, FoldPoint::kNormWeight},
      {InputSite::kAttnOut, {R::kAttnOut}, R::kAttnV, FoldPoint::kProducerRows},
      {InputSite::kMlpIn, {R::kMlpGate, R::kMlpUp}, R::kMlpNorm, FoldPoint::kNormWeight},
      {InputSite::kMlpDown, {R::kMlpDown}, R::kMlpUp, FoldPoint::kProducerRows},
  };
  ASSERT_EQ(kLlamaBlock.layer_sites.size(), old.size());
  for (size_t i = 0; i < old.size(); ++i) {
    const SiteWiring& w = kLlamaBlock.layer_sites[i];
    EXPECT_EQ(w.site, old[i].site);
    EXPECT_EQ(std::vector<R>(w.consumers.begin(), w.consumers.end()), old[i].consumers);
    EXPECT_EQ(w.producer, old[i].producer);
    EXPECT_EQ(w.fold, old[i].fold);
    for (const R r : old[i].consumers) EXPECT_EQ(site_of(kLlamaBlock, r), &w);
    EXPECT_EQ(find_site(kLlamaBlock, old[i].site), &w);
  }
  EXPECT_EQ(site_of(kLlamaBlock, R::kOutput), &kLlamaBlock.head);
  EXPECT_EQ(find_site(kLlamaBlock, InputSite::kHeadIn), &kLlamaBlock.head);
  EXPECT_EQ(site_of(kLlamaBlock, R::kAttnNorm), nullptr);
  EXPECT_EQ(kLlamaBlock.head.fold, FoldPoint::kNone);

  // kMigrationOrder = attn_out, attn_in, mlp_down, mlp_in; o skipped when heads share kv heads.
  for (const bool grouped : {false, true}) {
    const auto groups = migration_groups(kLlamaBlock, config_of("llama", grouped));
    ASSERT_EQ(groups.size(), 4u);
    const InputSite want[] = {InputSite::kAttnOut, InputSite::kAttnIn, InputSite::kMlpDown, InputSite::kMlpIn};
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(groups[i].site->site, want[i]);
      EXPECT_EQ(groups[i].foldable, !(grouped && want[i] == InputSite::kAttnOut));
    }
  }
}

TEST(BlockTopology, WidthsAreTheOldStatisticsWidths) {
  const ModelConfig c = config_of("qwen2", true);
  const std::map<InputSite, int64_t> want = {{InputSite::kAttnIn, c.hidden_size},
                                             {InputSite::kAttnOut, c.q_dim()},
                                             {InputSite::kMlpIn, c.hidden_size},
                                             {InputSite::kMlpDown, c.intermediate_size},
                                             {InputSite::kHeadIn, c.hidden_size}};
  for (const auto& [site, width] : want) {
    EXPECT_EQ(site_width(*find_site(kLlamaBlock, site), c), width) << site_name(site);
  }
}

TEST(BlockTopology, ConfigPicksItsArchitecturesBlock) {
  EXPECT_EQ(&block_topology(config_of("mistral", false)), &kLlamaBlock);
  ModelConfig c = config_of("llama", false);
  c.model_type = "gpt2";
  try {
    block_topology(c);
    FAIL() << "unknown model type accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("gpt2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace calq::model
