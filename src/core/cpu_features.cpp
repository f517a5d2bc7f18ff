#include "core/cpu_features.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <fmt/format.h>

namespace calq {
namespace {

constexpr std::array<KernelLevel, 4> kLevels = {KernelLevel::kScalar, KernelLevel::kAvx2, KernelLevel::kAvxVnni,
                                                KernelLevel::kAvx512Vnni};

#if defined(__x86_64__) || defined(__i386__)
// AVX-VNNI (CPUID.(EAX=7, ECX=1):EAX bit 4) with the YMM state enabled by the OS: OSXSAVE
// (CPUID.1:ECX bit 27), then XCR0 bits 1 (SSE) and 2 (AVX) read with xgetbv. Checked by hand:
// libgcc's __builtin_cpu_supports("avxvnni") is missing from older compilers.
bool has_avx_vnni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & (1u << 27)) == 0) return false;
  uint32_t xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6u) != 0x6u) return false;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) == 0) return false;
  return (a & (1u << 4)) != 0;
}
#endif

struct Support {
  bool level[kLevels.size()] = {};
};

Support detect() {
  Support s;
  s.level[static_cast<int>(KernelLevel::kScalar)] = true;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  s.level[static_cast<int>(KernelLevel::kAvx2)] = avx2;
  s.level[static_cast<int>(KernelLevel::kAvxVnni)] = avx2 && has_avx_vnni();
  s.level[static_cast<int>(KernelLevel::kAvx512Vnni)] =
      avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
  return s;
}

const Support& support() {
  static const Support s = detect();
  return s;
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
      r.note = fmt::format(
          "CALQ_KERNEL_LEVEL=\"{}\" is not a kernel level (scalar, avx2, avx-vnni, avx512-vnni); ignored", v);
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
    case KernelLevel::kAvxVnni: return "avx-vnni";
    case KernelLevel::kAvx512Vnni: return "avx512-vnni";
  }
  return "?";
}

std::optional<KernelLevel> kernel_level_by_name(std::string_view name) {
  for (auto l : kLevels) {
    if (kernel_level_name(l) == name) return l;
  }
  return std::nullopt;
}

std::vector<KernelLevel> all_kernel_levels() { return {kLevels.begin(), kLevels.end()}; }

bool kernel_level_supported(KernelLevel level) {
  const int i = static_cast<int>(level);
  return i >= 0 && i < static_cast<int>(kLevels.size()) && support().level[i];
}

std::vector<KernelLevel> supported_kernel_levels() {
  std::vector<KernelLevel> out;
  for (auto l : kLevels) {
    if (kernel_level_supported(l)) out.push_back(l);
  }
  return out;
}

KernelLevel best_supported_level(KernelLevel cap) {
  for (int i = static_cast<int>(cap); i > 0; --i) {
    if (kernel_level_supported(static_cast<KernelLevel>(i))) return static_cast<KernelLevel>(i);
  }
  return KernelLevel::kScalar;
}

KernelLevel detected_kernel_level() {
  static const KernelLevel level = best_supported_level(kLevels.back());
  return level;
}

KernelLevel kernel_level() {
  const int cap = g_cap.load(std::memory_order_relaxed);
  const std::optional<KernelLevel> c = cap >= 0 ? std::optional(static_cast<KernelLevel>(cap)) : env_cap().cap;
  return c ? best_supported_level(*c) : detected_kernel_level();
}

void set_kernel_level_cap(std::optional<KernelLevel> cap) {
  g_cap.store(cap ? static_cast<int>(*cap) : -1, std::memory_order_relaxed);
}

std::string kernel_level_note() { return env_cap().note; }

}  // namespace calq
