// The ggml tensor type table: ids, names and block layouts as llama.cpp defines them
// (ggml/include/ggml.h `enum ggml_type`, block structs in ggml/src/ggml-common.h). The ids are
// ABI: a GGUF file stores them, so they never change and removed ones are never reused.
#include <array>
#include <optional>
#include <string>

#include "io/gguf.h"

namespace calq::io {
namespace {

constexpr int64_t kQK = 256;  // QK_K: the super-block of the K-quants, IQ and TQ types

// Indexed by id; ids llama.cpp removed from GGUF (4 Q4_2, 5 Q4_3, 31-33 Q4_0_x_x, 36-38
// IQ4_NL_x_x) stay empty so files using them are rejected instead of misread.
constexpr std::array<std::optional<GgmlTypeInfo>, 43> kTypes = {{
    GgmlTypeInfo{0, "F32", 1, 4},
    GgmlTypeInfo{1, "F16", 1, 2},
    GgmlTypeInfo{2, "Q4_0", 32, 2 + 16},
    GgmlTypeInfo{3, "Q4_1", 32, 2 + 2 + 16},
    std::nullopt,  // 4: Q4_2, removed
    std::nullopt,  // 5: Q4_3, removed
    GgmlTypeInfo{6, "Q5_0", 32, 2 + 4 + 16},
    GgmlTypeInfo{7, "Q5_1", 32, 2 + 2 + 4 + 16},
    GgmlTypeInfo{8, "Q8_0", 32, 2 + 32},
    GgmlTypeInfo{9, "Q8_1", 32, 2 + 2 + 32},
    GgmlTypeInfo{10, "Q2_K", kQK, 2 + 2 + kQK / 16 + kQK / 4},
    GgmlTypeInfo{11, "Q3_K", kQK, 2 + kQK / 4 + kQK / 8 + 12},
    GgmlTypeInfo{12, "Q4_K", kQK, 2 + 2 + 12 + kQK / 2},
    GgmlTypeInfo{13, "Q5_K", kQK, 2 + 2 + 12 + kQK / 2 + kQK / 8},
    GgmlTypeInfo{14, "Q6_K", kQK, 2 + kQK / 16 + 3 * kQK / 4},
    GgmlTypeInfo{15, "Q8_K", kQK, 4 + kQK + kQK / 16 * 2},
    GgmlTypeInfo{16, "IQ2_XXS", kQK, 2 + kQK / 8 * 2},
    GgmlTypeInfo{17, "IQ2_XS", kQK, 2 + kQK / 8 * 2 + kQK / 32},
    GgmlTypeInfo{18, "IQ3_XXS", kQK, 2 + 3 * (kQK / 8)},
    GgmlTypeInfo{19, "IQ1_S", kQK, 2 + kQK / 8 + kQK / 16},
    GgmlTypeInfo{20, "IQ4_NL", 32, 2 + 16},
    GgmlTypeInfo{21, "IQ3_S", kQK, 2 + 13 * (kQK / 32) + kQK / 64},
    GgmlTypeInfo{22, "IQ2_S", kQK, 2 + kQK / 4 + kQK / 16},
    GgmlTypeInfo{23, "IQ4_XS", kQK, 2 + 2 + kQK / 64 + kQK / 2},
    GgmlTypeInfo{24, "I8", 1, 1},
    GgmlTypeInfo{25, "I16", 1, 2},
    GgmlTypeInfo{26, "I32", 1, 4},
    GgmlTypeInfo{27, "I64", 1, 8},
    GgmlTypeInfo{28, "F64", 1, 8},
    GgmlTypeInfo{29, "IQ1_M", kQK, kQK / 8 + kQK / 16 + kQK / 32},
    GgmlTypeInfo{30, "BF16", 1, 2},
    std::nullopt,  // 31: Q4_0_4_4, removed (repacked at load time now)
    std::nullopt,  // 32: Q4_0_4_8, removed
    std::nullopt,  // 33: Q4_0_8_8, removed
    GgmlTypeInfo{34, "TQ1_0", kQK, (kQK - 4 * kQK / 64) / 5 + kQK / 64 + 2},
    GgmlTypeInfo{35, "TQ2_0", kQK, kQK / 4 + 2},
    std::nullopt,  // 36: IQ4_NL_4_4, removed
    std::nullopt,  // 37: IQ4_NL_4_8, removed
    std::nullopt,  // 38: IQ4_NL_8_8, removed
    GgmlTypeInfo{39, "MXFP4", 32, 1 + 16},
    GgmlTypeInfo{40, "NVFP4", 64, 64 / 16 + 64 / 2},
    GgmlTypeInfo{41, "Q1_0", 128, 2 + 128 / 8},
    GgmlTypeInfo{42, "Q2_0", 64, 2 + 64 / 4},
}};

constexpr bool table_is_consistent() {
  for (size_t i = 0; i < kTypes.size(); ++i) {
    if (kTypes[i] && (kTypes[i]->id != i || kTypes[i]->block_size <= 0 ||
                      kTypes[i]->type_size <= 0)) {
      return false;
    }
  }
  return true;
}
static_assert(table_is_consistent(), "every entry sits at its own id");

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  if (id >= kTypes.size() || !kTypes[id]) return nullptr;
  return &*kTypes[id];
}

std::string ggml_type_name(uint32_t id) {
  const GgmlTypeInfo* info = ggml_type_info(id);
  return info != nullptr ? std::string(info->name) : "type " + std::to_string(id);
}

const GgmlTypeInfo* ggml_type_by_name(std::string_view name) {
  for (const auto& entry : kTypes) {
    if (entry && entry->name == name) return &*entry;
  }
  return nullptr;
}

}  // namespace calq::io
