// The method registry: one line per method file. A new method is one file defining
// `MethodList make_<name>_methods()` plus its test, and one line here (docs/ARCHITECTURE.md, "Add a method").
#include <cassert>
#include <map>

#include "core/error.h"
#include "quant/method.h"

namespace calq::quant {

// ---- Methods (each defined in its own file), in the order --help and error messages list them ----
MethodList make_rotate_methods();       // rotate (method_rotate.cpp)
MethodList make_smoothquant_methods();  // smoothquant (method_smoothquant.cpp)
MethodList make_awq_methods();          // awq (method_awq.cpp)
MethodList make_flatquant_methods();    // flatquant (method_flatquant.cpp)
MethodList make_rtn_methods();          // rtn (method_rtn.cpp)
MethodList make_gptq_methods();         // gptq (method_gptq.cpp)
MethodList make_qat_block_methods();    // qat-block (method_qat_block.cpp)
MethodList make_qat_e2e_methods();      // qat-e2e (method_qat_e2e.cpp)
MethodList make_autoround_methods();    // autoround (method_autoround.cpp)
MethodList make_zeroqat_methods();      // zeroqat (method_zeroqat.cpp)
MethodList make_lora_compensate_methods();  // lora-compensate (method_lora_compensate.cpp)
MethodList make_activation_methods();   // int8-token, int4-token, int8-tensor, llm-int8 (method_activation.cpp)

namespace {

struct Registry {
  std::vector<std::unique_ptr<Method>> owned;
  std::vector<const Method*> all;
  std::map<std::string, const Method*, std::less<>> by_name;

  void add(MethodList list) {
    for (auto& m : list) {
      [[maybe_unused]] const bool fresh = by_name.emplace(m->name(), m.get()).second;
      assert(fresh && "duplicate method name");
      all.push_back(m.get());
      owned.push_back(std::move(m));
    }
  }
};

const Registry& registry() {
  static const Registry reg = [] {
    Registry r;
    r.add(make_rotate_methods());
    r.add(make_smoothquant_methods());
    r.add(make_awq_methods());
    r.add(make_flatquant_methods());
    r.add(make_rtn_methods());
    r.add(make_gptq_methods());
    r.add(make_qat_block_methods());
    r.add(make_qat_e2e_methods());
    r.add(make_autoround_methods());
    r.add(make_zeroqat_methods());
    r.add(make_lora_compensate_methods());
    r.add(make_activation_methods());
    return r;
  }();
  return reg;
}

std::string names_where(bool any_stage, MethodStage stage) {
  std::string s;
  for (const Method* m : all_methods()) {
    if (any_stage || m->stage() == stage) s += (s.empty() ? "" : ", ") + m->name();
  }
  return s;
}

}  // namespace

const std::vector<const Method*>& all_methods() { return registry().all; }

const Method* find_method(std::string_view name) {
  const auto& m = registry().by_name;
  auto it = m.find(name);
  return it == m.end() ? nullptr : it->second;
}

const Method& method_by_name(std::string_view name) {
  if (const Method* m = find_method(name)) return *m;
  fail(ErrorKind::kInvalidArgument, "unknown method '{}' (known: {})", name, method_names());
}

std::string method_names(MethodStage stage) { return names_where(false, stage); }
std::string method_names() { return names_where(true, MethodStage::kModelTransform); }

}  // namespace calq::quant
