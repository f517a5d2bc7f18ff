// Small floating-point codecs: FP8 E4M3 ("fn": no infinities), FP8 E5M2 (IEEE-like) and FP4 E2M1
// (OCP Microscaling), used by the fp8, mx and nf4 families.
//
// Encoding: sign bit on top, then the exponent, then the mantissa. Exponent bias 7 (E4M3), 15
// (E5M2), 1 (E2M1); exponent field 0 is subnormal (m · 2^(1 − bias − mbits)).
//  * E4M3: max ±448 (S.1111.110); S.1111.111 is NaN; no infinities. Min subnormal 2^−9.
//  * E5M2: max ±57344 (S.11110.11); S.11111.00 is ±inf, S.11111.{01,10,11} NaN. Min subnormal 2^−16.
//  * E2M1: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 for codes 0..7; sign in bit 3; no inf/NaN.
// Conversion from float: round to nearest, ties to even code; saturating (a finite value beyond the
// largest finite magnitude becomes ±max); the sign of zero is kept (−0 → S=1, all else 0).
// NaN → S.1111.111 (E4M3) / S.11111.11 (E5M2) / ±6 (E2M1, which has no NaN; inputs are validated
// before they get here). ±inf → ±inf (E5M2) or ±max (E4M3, E2M1).
// Decoding is exact (every code is a float). The _table functions are the 256-entry decode
// tables (built from the scalar decoders) that the fast paths use.
#pragma once

#include <cstdint>

namespace calq {

uint8_t f32_to_e4m3(float x);
float e4m3_to_f32(uint8_t code);
uint8_t f32_to_e5m2(float x);
float e5m2_to_f32(uint8_t code);
uint8_t f32_to_e2m1(float x);     // 4-bit code in the low nibble
float e2m1_to_f32(uint8_t code);  // code & 15

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;
inline constexpr float kE2M1Max = 6.0f;

const float* e4m3_table();  // [256]
const float* e5m2_table();  // [256]

// out[i] = table[codes[i]] · scale, i < n. The AVX2 version gathers from the table; the scalar
// twin decodes each code with the scalar decoder; they agree bit for bit.
void fp8_decode_scaled(bool e4m3, const uint8_t* codes, int64_t n, float scale, float* out);
void fp8_decode_scaled_reference(bool e4m3, const uint8_t* codes, int64_t n, float scale, float* out);

}  // namespace calq
