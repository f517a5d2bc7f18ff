// NF4 (QLoRA's 4-bit NormalFloat) as bitsandbytes defines it, shared by calq's nf4 formats (nf4.cpp) and
// nf4-bnb (nf4_bnb.cpp): the 16 levels (bitsandbytes' published table, get_4bit_type("nf4") and the CUDA
// kernel's nf4_dequantization_lut), ascending, index 7 exactly 0; and the code of a value already divided
// by its block's absmax: the nearest level, ties to the lower one (x > midpoint picks the upper level; the
// fp32 midpoints are dQuantizeNF4's thresholds).
#pragma once

#include <cstdint>

namespace calq {

inline constexpr float kNf4Levels[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

uint8_t nf4_code(float v);

}  // namespace calq
