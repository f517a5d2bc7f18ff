#include "model/site_transform.h"

#include <fmt/format.h>

#include <utility>

#include "core/error.h"

namespace calq::model {
namespace {

// The layer sites of `block` that can carry a transform: every site a decoder layer has.
const SiteWiring* layer_site(const BlockTopology& block, InputSite site) {
  for (const SiteWiring& w : block.layer_sites) {
    if (w.site == site) return &w;
  }
  return nullptr;
}

std::string tensor_label(const Model& m, TensorRole role, int64_t layer) {
  if (m.arch != nullptr && has_slot(*m.arch, role)) return hf_tensor_name(*m.arch, role, layer);
  return fmt::format("layer {} {}", layer, role_name(role));
}

}  // namespace

std::string site_transform_context(int64_t layer, InputSite site) {
  return fmt::format("layer {} site {}", layer, site_name(site));
}

void set_site_transform(Model& m, int64_t layer, InputSite site, KronTransform t, ThreadPool& pool,
                        const KronFoldOptions& options) {
  if (static_cast<size_t>(site) >= static_cast<size_t>(kNumInputSites)) {
    fail(ErrorKind::kInvalidArgument, "input site {} does not exist", static_cast<int>(site));
  }
  const std::string context = site_transform_context(layer, site);
  if (layer < 0 || layer >= static_cast<int64_t>(m.layers.size())) {
    fail(ErrorKind::kInvalidArgument, "{}: the model has {} layers", context, m.layers.size());
  }
  const BlockTopology& block = block_topology(m.config);
  const SiteWiring* wiring = layer_site(block, site);
  if (wiring == nullptr) {
    fail(ErrorKind::kInvalidArgument, "{}: not an input site of a {} decoder layer", context, block.name);
  }
  LayerWeights& lw = m.layers[static_cast<size_t>(layer)];
  if (lw.transform(site) != nullptr) fail(ErrorKind::kInvalidArgument, "{}: the site already has a transform", context);
  const int64_t width = site_width(*wiring, m.config);
  if (t.width() != width) {
    fail(ErrorKind::kInvalidArgument, "{}: transform of width {} × {} = {} for a site of width {}", context, t.n1(),
         t.n2(), t.width(), width);
  }
  for (const TensorRole role : wiring->consumers) {
    if (lw.adapter(role) != nullptr) {
      // The adapter would read x·T with factors trained on x.
      fail(ErrorKind::kInvalidArgument, "{}: consumer '{}' has a LoRA adapter (install transforms before adding adapters)",
           context, tensor_label(m, role, layer));
    }
    const LinearWeight& w = lw.linear(role);
    if (w.empty() || w.is_quantized()) {
      fail(ErrorKind::kInvalidArgument,
           "{}: consumer '{}' is {}; the transform folds into dense float32 weights (install transforms before "
           "quantizing)",
           context, tensor_label(m, role, layer), w.empty() ? std::string("missing") : "held in format " + w.format_name());
    }
  }
  const KronFold fold(t, context, options);
  for (const TensorRole role : wiring->consumers) {
    lw.linear(role) = LinearWeight(fold.apply(lw.linear(role).dense(), pool));
  }
  lw.transforms[static_cast<size_t>(site)] = std::move(t);
}

}  // namespace calq::model
