// CPU kernel levels for runtime dispatch.
//
// calq is built for one x86-64 floor (x86-64-v3: AVX2, FMA, F16C; CMakeLists.txt) and carries
// faster kernels for newer instruction sets, compiled with per-function target attributes. Which
// of them run is decided here, once per process, from what the CPU and the OS offer:
//  * kScalar — plain C++ (the reference twins); every machine.
//  * kAvx2 — 256-bit integer and float vectors; the build's floor.
//  * kAvx512Vnni — AVX-512 F/BW/VL with VNNI (vpdpbusd: four u8·s8 products summed into int32);
//    the OS must save the 512-bit state (XCR0), which __builtin_cpu_supports checks.
// Contract:
//  * detected_kernel_level() is the best level this machine supports; kernel_level() is the one
//    kernels use: the detected level, lowered by the environment variable CALQ_KERNEL_LEVEL
//    ("scalar", "avx2", "avx512-vnni"; read once) or by set_kernel_level_cap (tests). A cap above
//    what the machine has is ignored: a level the CPU lacks never runs.
//  * An unknown CALQ_KERNEL_LEVEL value is ignored too; kernel_level_note() then says so (the CLI
//    prints it), so a typo is visible rather than silently slow.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace calq {

enum class KernelLevel : int { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2 };

std::string_view kernel_level_name(KernelLevel level);
std::optional<KernelLevel> kernel_level_by_name(std::string_view name);

KernelLevel detected_kernel_level();
KernelLevel kernel_level();
// Caps kernel_level() at `cap` (std::nullopt: back to the environment's cap). Not thread-safe
// against kernels running concurrently; for tests and start-up code.
void set_kernel_level_cap(std::optional<KernelLevel> cap);
// Empty, or a sentence about an ignored CALQ_KERNEL_LEVEL value.
std::string kernel_level_note();

}  // namespace calq
