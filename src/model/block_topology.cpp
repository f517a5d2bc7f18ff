#include "model/block_topology.h"

#include <algorithm>
#include <array>
#include <cassert>

#include "core/error.h"
#include "model/model.h"

namespace calq::model {
namespace {

constexpr std::array<std::string_view, kNumInputSites> kSiteNames = {
    "attn_in", "attn_out", "mlp_in", "mlp_down", "head_in", "moe_in", "expert_in", "expert_down"};

}  // namespace

std::string_view site_name(InputSite site) {
  const auto i = static_cast<size_t>(site);
  assert(i < kSiteNames.size());
  return kSiteNames[i];
}

std::optional<InputSite> site_by_name(std::string_view name) {
  for (size_t i = 0; i < kSiteNames.size(); ++i) {
    if (kSiteNames[i] == name) return static_cast<InputSite>(i);
  }
  return std::nullopt;
}

const BlockTopology& block_topology(const ModelConfig& config) {
  const Architecture* arch = find_architecture(config.model_type);
  if (arch == nullptr) {
    fail(ErrorKind::kInvalidArgument, "model_type '{}' is not a supported architecture", config.model_type);
  }
  assert(arch->block != nullptr && "architecture table without a block topology");
  return *arch->block;
}

const SiteWiring* find_site(const BlockTopology& block, InputSite site) {
  for (const SiteWiring& w : block.layer_sites) {
    if (w.site == site) return &w;
  }
  return block.head.site == site ? &block.head : nullptr;
}

const SiteWiring* site_of(const BlockTopology& block, TensorRole linear_role) {
  const auto reads = [&](const SiteWiring& w) {
    return std::find(w.consumers.begin(), w.consumers.end(), linear_role) != w.consumers.end();
  };
  for (const SiteWiring& w : block.layer_sites) {
    if (reads(w)) return &w;
  }
  return reads(block.head) ? &block.head : nullptr;
}

bool can_fold(const SiteWiring& site, const ModelConfig& config) {
  if (site.fold == FoldPoint::kNone) return false;
  switch (site.condition) {
    case FoldCondition::kAlways: return true;
    case FoldCondition::kOneQueryHeadPerKvHead: return config.num_heads == config.num_kv_heads;
  }
  return false;
}

int64_t site_width(const SiteWiring& site, const ModelConfig& config) {
  assert(!site.consumers.empty());
  return expected_shape(config, site.consumers.front()).back();
}

std::vector<MigrationGroup> migration_groups(const BlockTopology& block, const ModelConfig& config) {
  std::vector<MigrationGroup> out;
  out.reserve(block.migration_order.size());
  for (const InputSite s : block.migration_order) {
    const SiteWiring* w = find_site(block, s);
    assert(w != nullptr && "migration order names a site the block lacks");
    out.push_back({.site = w, .foldable = can_fold(*w, config)});
  }
  return out;
}

}  // namespace calq::model
