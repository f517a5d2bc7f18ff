#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>

#include <fmt/format.h>

namespace calq {
namespace {

KernelLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
    return KernelLevel::kAvx512Vnni;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KernelLevel::kAvx2;
#endif
  return KernelLevel::kScalar;
}

struct EnvCap {
  std::optional<KernelLevel> cap;
  std::string note;
};

const EnvCap& env_cap() {
  static const EnvCap c = [] {
    EnvCap r;
    const char* v = std::getenv("CALQ_KERNEL_LEVEL");
    if (v == nullptr || *v == '\0') return r;
    r.cap = kernel_level_by_name(v);
    if (!r.cap) {
      r.note = fmt::format("CALQ_KERNEL_LEVEL=\"{}\" is not a kernel level (scalar, avx2, avx512-vnni); ignored", v);
    }
    return r;
  }();
  return c;
}

// -1: no override (use the environment's cap).
std::atomic<int> g_cap{-1};

}  // namespace

std::string_view kernel_level_name(KernelLevel level) {
  switch (level) {
    case KernelLevel::kScalar: return "scalar";
    case KernelLevel::kAvx2: return "avx2";
    case KernelLevel::kAvx512Vnni: return "avx512-vnni";
  }
  return "?";
}

std::optional<KernelLevel> kernel_level_by_name(std::string_view name) {
  for (auto l : {KernelLevel::kScalar, KernelLevel::kAvx2, KernelLevel::kAvx512Vnni}) {
    if (kernel_level_name(l) == name) return l;
  }
  return std::nullopt;
}

KernelLevel detected_kernel_level() {
  static const KernelLevel level = detect();
  return level;
}

KernelLevel kernel_level() {
  KernelLevel l = detected_kernel_level();
  const int cap = g_cap.load(std::memory_order_relaxed);
  const std::optional<KernelLevel> c = cap >= 0 ? std::optional(static_cast<KernelLevel>(cap)) : env_cap().cap;
  if (c && static_cast<int>(*c) < static_cast<int>(l)) l = *c;
  return l;
}

void set_kernel_level_cap(std::optional<KernelLevel> cap) {
  g_cap.store(cap ? static_cast<int>(*cap) : -1, std::memory_order_relaxed);
}

std::string kernel_level_note() { return env_cap().note; }

}  // namespace calq
