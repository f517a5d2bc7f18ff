// The format registry: one line per family file. A new family is one file defining
// `FormatList make_<family>_formats()` plus its test, and one line here.
#include <algorithm>
#include <cassert>
#include <map>

#include "core/error.h"
#include "formats/format.h"

namespace calq {

// ---- Families (each defined in its own file) ----
FormatList make_float_formats();  // f16, bf16 (float.cpp)
// Helpers add their family declarations here.
FormatList make_int_formats();  // int<b>-<pt|pc|gN>-<sym|asym>[-f32] (int_format.cpp)
FormatList make_nf4_formats();  // nf4, nf4-dq, fp4, fp4-dq (nf4.cpp)
FormatList make_nf4_bnb_formats();  // nf4-bnb (nf4_bnb.cpp)
FormatList make_fp8_formats();  // fp8-e4m3[-pt], fp8-e5m2[-pt] (fp8.cpp)
FormatList make_mx_formats();   // mxfp4, nvfp4 (mx.cpp)
FormatList make_gguf_legacy_formats();  // q4_0, q4_1, q5_0, q5_1, q8_0 (gguf_legacy.cpp)
FormatList make_gguf_iq4_formats();     // iq4_nl, iq4_xs (gguf_iq4.cpp)
FormatList make_gguf_kquant_formats();  // q2_k .. q6_k (gguf_kquants.cpp)

namespace {

struct Registry {
  std::vector<std::unique_ptr<Format>> owned;
  std::vector<const Format*> all;
  std::map<std::string, const Format*, std::less<>> by_name;
  std::map<uint32_t, const Format*> by_ggml;

  void add(FormatList list) {
    for (auto& f : list) {
      const auto& t = f->traits();
      [[maybe_unused]] const bool fresh = by_name.emplace(t.name, f.get()).second;
      assert(fresh && "duplicate format name");
      if (t.ggml_type) {
        [[maybe_unused]] const bool fresh_id = by_ggml.emplace(*t.ggml_type, f.get()).second;
        assert(fresh_id && "duplicate ggml type id");
      }
      all.push_back(f.get());
      owned.push_back(std::move(f));
    }
  }
};

const Registry& registry() {
  static const Registry reg = [] {
    Registry r;
    r.add(make_float_formats());
    // Helpers add their family calls here.
    r.add(make_int_formats());
    r.add(make_nf4_formats());
    r.add(make_nf4_bnb_formats());
    r.add(make_fp8_formats());
    r.add(make_mx_formats());
    r.add(make_gguf_legacy_formats());
    r.add(make_gguf_iq4_formats());
    r.add(make_gguf_kquant_formats());
    return r;
  }();
  return reg;
}

}  // namespace

const std::vector<const Format*>& all_formats() { return registry().all; }

const Format* find_format(std::string_view name) {
  const auto& m = registry().by_name;
  auto it = m.find(name);
  return it == m.end() ? nullptr : it->second;
}

const Format& format_by_name(std::string_view name) {
  if (const Format* f = find_format(name)) return *f;
  // Suggest names sharing the prefix before the first '-' or '_' (e.g. "int4" -> int4-g128-asym ...).
  std::string prefix(name.substr(0, std::min(name.find_first_of("-_"), name.size())));
  std::string known;
  for (const Format* f : all_formats()) {
    if (!prefix.empty() && f->name().rfind(prefix, 0) != 0) continue;
    if (!known.empty()) known += ", ";
    known += f->name();
  }
  if (known.empty()) {
    for (const Format* f : all_formats()) {
      if (f->traits().family == "int") continue;  // dozens of int variants: named by pattern below
      if (!known.empty()) known += ", ";
      known += f->name();
    }
    known += ", int<bits>-<granularity>-<sym|asym> (see `calq formats`)";
  }
  fail(ErrorKind::kInvalidArgument, "unknown format '{}'; known: {}", name, known);
}

const Format* format_by_ggml_type(uint32_t ggml_type) {
  const auto& m = registry().by_ggml;
  auto it = m.find(ggml_type);
  return it == m.end() ? nullptr : it->second;
}

}  // namespace calq
