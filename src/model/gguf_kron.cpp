// Reading online input transforms (kron_transform.h) from a GGUF file (gguf_export.h, gguf_model.h).
#include "model/gguf_kron.h"

#include <fmt/format.h>

#include <cassert>
#include <optional>
#include <string>
#include <utility>

#include "core/error.h"
#include "model/gguf_export.h"
#include "model/loader_util.h"

namespace calq::model {
namespace {

// "blk.<layer>.calq_kron.<site>.<a|b>" split into its parts; nullopt when it is not that form.
struct KronName {
  int64_t layer;
  std::string site;
  char factor;
};
std::optional<KronName> parse_kron_name(std::string_view name) {
  constexpr std::string_view kBlk = "blk.";
  if (name.rfind(kBlk, 0) != 0) return std::nullopt;
  name.remove_prefix(kBlk.size());
  int64_t layer = 0;
  size_t digits = 0;
  while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9' && digits < 9) {
    layer = layer * 10 + (name[digits] - '0');
    ++digits;
  }
  if (digits == 0 || digits >= name.size() || name[digits] != '.') return std::nullopt;
  name.remove_prefix(digits + 1);
  if (name.rfind(kCalqKronTag, 0) != 0 || name.size() <= kCalqKronTag.size() + 3 ||
      name[kCalqKronTag.size()] != '.') {
    return std::nullopt;
  }
  name.remove_prefix(kCalqKronTag.size() + 1);
  const char factor = name.back();
  if (name[name.size() - 2] != '.' || (factor != 'a' && factor != 'b')) return std::nullopt;
  return KronName{.layer = layer, .site = std::string(name.substr(0, name.size() - 2)), .factor = factor};
}

}  // namespace

bool is_kron_tensor_name(std::string_view name) { return name.find(kCalqKronTag) != std::string_view::npos; }

void read_gguf_transforms(const io::GgufFile& file, Model& m, ThreadPool& pool) {
  const std::string origin = file.path().string();
  const BlockTopology& block = block_topology(m.config);
  const auto factor = [&](const io::GgufTensorInfo& info) {
    if (info.type != io::kGgmlF32 || info.ne.size() != 2 || info.ne[0] != info.ne[1] || info.ne[0] < 1) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' must be a square F32 matrix (it is {} with ne {})", origin, info.name,
           io::ggml_type_name(info.type), shape_string(info.ne));
    }
    return widen_checked(DType::kF32, file.tensor_data(info).data(), Shape{info.ne[1], info.ne[0]}, pool, origin,
                         info.name);
  };
  for (const io::GgufTensorInfo& info : file.tensors()) {
    if (!is_kron_tensor_name(info.name)) continue;
    const std::optional<KronName> parsed = parse_kron_name(info.name);
    if (!parsed) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' is not named blk.<layer>.{}.<site>.a or .b", origin, info.name,
           kCalqKronTag);
    }
    if (parsed->layer >= m.config.num_layers) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' belongs to layer {} but {}.block_count is {}", origin, info.name,
           parsed->layer, m.arch->gguf_arch, m.config.num_layers);
    }
    const std::optional<InputSite> site = site_by_name(parsed->site);
    const SiteWiring* wiring = nullptr;
    for (const SiteWiring& w : block.layer_sites) {
      if (site && w.site == *site) wiring = &w;
    }
    if (wiring == nullptr) {
      fail(ErrorKind::kFormat, "{}: tensor '{}': '{}' is not an input site of a {} decoder layer", origin, info.name,
           parsed->site, block.name);
    }
    if (parsed->factor == 'b') {
      const std::string a_name = calq_kron_tensor_name(parsed->layer, *site, 'a');
      if (file.find_tensor(a_name) == nullptr) {
        fail(ErrorKind::kFormat, "{}: tensor '{}' without its partner '{}'", origin, info.name, a_name);
      }
      continue;  // read with its A
    }
    const std::string b_name = calq_kron_tensor_name(parsed->layer, *site, 'b');
    const io::GgufTensorInfo* b_info = file.find_tensor(b_name);
    if (b_info == nullptr) fail(ErrorKind::kFormat, "{}: tensor '{}' without its partner '{}'", origin, info.name, b_name);
    Tensor a = factor(info);
    Tensor b = factor(*b_info);
    const int64_t width = site_width(*wiring, m.config);
    if (a.dim(0) * b.dim(0) != width) {
      fail(ErrorKind::kFormat, "{}: tensors '{}' and '{}' make a transform of width {} × {} = {}, but site {} has width {}",
           origin, info.name, b_name, a.dim(0), b.dim(0), a.dim(0) * b.dim(0), parsed->site, width);
    }
    std::optional<KronTransform>& slot = m.layers[static_cast<size_t>(parsed->layer)].transforms[static_cast<size_t>(*site)];
    assert(!slot && "tensor names are unique in a GGUF file");
    slot = KronTransform::make(std::move(a), std::move(b), fmt::format("{}: tensor '{}'", origin, info.name));
  }
}

}  // namespace calq::model
