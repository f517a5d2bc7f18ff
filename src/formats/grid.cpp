#include "formats/grid.h"

#include <cassert>
#include <unordered_map>
#include <vector>

namespace calq {

// Each codec family file defines one of these (internal to the formats layer). A codec refers to
// the registered Format it mirrors, so the registry must be complete before they are made.
std::vector<std::unique_ptr<GridCodec>> make_int_grid_codecs();   // int_grid.cpp
std::vector<std::unique_ptr<GridCodec>> make_gguf_grid_codecs();  // gguf_grid.cpp

namespace {

struct CodecRegistry {
  std::vector<std::unique_ptr<GridCodec>> codecs;
  std::unordered_map<const Format*, const GridCodec*> by_format;

  CodecRegistry() {
    for (auto* make : {&make_int_grid_codecs, &make_gguf_grid_codecs}) {
      for (auto& codec : make()) {
        const bool fresh = by_format.emplace(&codec->format(), codec.get()).second;
        (void)fresh;
        assert(fresh && "two grid codecs for one format");
        codecs.push_back(std::move(codec));
      }
    }
  }
};

}  // namespace

const GridCodec* find_grid_codec(const Format& format) {
  static const CodecRegistry registry;  // thread-safe lazy init; codecs are immutable afterwards
  const auto it = registry.by_format.find(&format);
  return it == registry.by_format.end() ? nullptr : it->second;
}

}  // namespace calq
