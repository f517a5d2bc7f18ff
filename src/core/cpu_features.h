// CPU kernel levels for runtime dispatch.
//
// calq is built for one x86-64 floor (x86-64-v3: AVX2, FMA, F16C; CMakeLists.txt) and carries
// faster kernels for newer instruction sets, compiled with per-function target attributes. Which
// of them run is decided here, once per process, from what the CPU and the OS offer. The levels,
// in order of capability (the enum's numbering):
//  * kScalar — plain C++ (the reference twins); every machine.
//  * kAvx2 — 256-bit integer and float vectors; the build's floor.
//  * kAvxVnni — AVX-VNNI: the VEX-encoded 256-bit vpdpbusd (four u8·s8 products summed into int32;
//    CPUID leaf 7 subleaf 1, EAX bit 4) on top of AVX2; Intel Alder Lake and later, AMD Zen 5. The
//    OS must save the 256-bit state (OSXSAVE and XCR0's SSE and AVX bits), checked here.
//  * kAvx512Vnni — AVX-512 F/BW/VL with VNNI (the 512-bit vpdpbusd); the OS must save the 512-bit
//    state (XCR0), which __builtin_cpu_supports checks.
// The levels are not a chain: Ice Lake and Cascade Lake servers and AMD Zen 4 have AVX-512 VNNI but
// no AVX-VNNI. So a machine supports a set of levels, and a cap picks the best supported one at or
// below it (capping such a machine at "avx-vnni" runs avx2).
// Contract:
//  * kernel_level_supported(l): the CPU and OS offer everything level l's kernels execute (kScalar
//    and, on x86-64-v3 machines, kAvx2 always). detected_kernel_level() is the best supported level;
//    kernel_level() is the one kernels use: the best supported level at or below the cap, which is
//    the environment variable CALQ_KERNEL_LEVEL ("scalar", "avx2", "avx-vnni", "avx512-vnni"; read
//    once) or set_kernel_level_cap (tests). A level the CPU lacks never runs.
//  * An unknown CALQ_KERNEL_LEVEL value is ignored; kernel_level_note() then says so (the CLI
//    prints it), so a typo is visible rather than silently slow.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calq {

enum class KernelLevel : int { kScalar = 0, kAvx2 = 1, kAvxVnni = 2, kAvx512Vnni = 3 };

std::string_view kernel_level_name(KernelLevel level);
std::optional<KernelLevel> kernel_level_by_name(std::string_view name);
// Every level, ascending.
std::vector<KernelLevel> all_kernel_levels();

bool kernel_level_supported(KernelLevel level);
std::vector<KernelLevel> supported_kernel_levels();  // ascending; kScalar first
// The best supported level at or below `cap` (kScalar at worst).
KernelLevel best_supported_level(KernelLevel cap);
KernelLevel detected_kernel_level();
KernelLevel kernel_level();
// Caps kernel_level() at `cap` (std::nullopt: back to the environment's cap). Not thread-safe
// against kernels running concurrently; for tests and start-up code.
void set_kernel_level_cap(std::optional<KernelLevel> cap);
// Empty, or a sentence about an ignored CALQ_KERNEL_LEVEL value.
std::string kernel_level_note();

}  // namespace calq
