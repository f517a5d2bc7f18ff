// Bit layouts of llama.cpp's block_q2_K .. block_q6_K (ggml-common.h) and their scalar decoders.
// The decoders form every value with the same float operations in the same order as ggml's
// dequantize_row_qN_K (products of fp16 scale and integer code, then ·q, then − min; no fused
// multiply-add), so the floats are bit-identical. (The products d·sc·q have at most 22 significant
// bits for q2/q4/q5_K, so they are exact and a fused d·q − m gives the same float; q3/q6_K have no
// subtraction.) Element e of a super-block:
//  * q2_K/q3_K 2-bit field: byte qs[32·(e/128) + e%32], bits 2·((e%128)/32);
//  * q3_K high bit: hmask[e%32] bit e/32 (set = no −4 offset);
//  * q4_K/q5_K nibble: qs[32·(e/64) + e%32], low nibble when (e%64) < 32; q5_K 5th bit: qh[e%32]
//    bit e/32;
//  * q6_K: ql[64·(e/128) + e%64] low nibble when (e%128) < 64; qh[32·(e/128) + e%32] bits 2·((e%128)/32).
#include <cassert>
#include <cstring>

#include "formats/gguf_kquants.h"
#include "formats/format_util.h"

namespace calq::kquant {
namespace {

inline const uint8_t* bytes(const std::byte* p) { return reinterpret_cast<const uint8_t*>(p); }
inline uint8_t* bytes(std::byte* p) { return reinterpret_cast<uint8_t*>(p); }

// 2-bit fields of 256 values into 64 bytes (q2_K and q3_K order).
void pack_2bit(const uint8_t* v, uint8_t* qs) {
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* s = v + 128 * h + l;
      qs[32 * h + l] = uint8_t((s[0] & 3) | ((s[32] & 3) << 2) | ((s[64] & 3) << 4) | ((s[96] & 3) << 6));
    }
  }
}

// Byte offsets inside each block.
constexpr size_t kQ2Scales = 0, kQ2Qs = 16, kQ2D = 80, kQ2Dmin = 82, kQ2Bytes = 84;
constexpr size_t kQ3Hmask = 0, kQ3Qs = 32, kQ3Scales = 96, kQ3D = 108, kQ3Bytes = 110;
constexpr size_t kQ4D = 0, kQ4Dmin = 2, kQ4Scales = 4, kQ4Qs = 16, kQ4Bytes = 144;
constexpr size_t kQ5D = 0, kQ5Dmin = 2, kQ5Scales = 4, kQ5Qh = 16, kQ5Qs = 48, kQ5Bytes = 176;
constexpr size_t kQ6Ql = 0, kQ6Qh = 128, kQ6Scales = 192, kQ6D = 208, kQ6Bytes = 210;

}  // namespace

void pack_scales_k4(const uint8_t* sc, const uint8_t* mn, uint8_t* out12) {
  for (int j = 0; j < 4; ++j) {
    out12[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out12[j + 4] = uint8_t((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    out12[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}

void unpack_scale_k4(const uint8_t* in12, int j, uint8_t& sc, uint8_t& mn) {
  if (j < 4) {
    sc = in12[j] & 63;
    mn = in12[j + 4] & 63;
  } else {
    sc = uint8_t((in12[j + 4] & 15) | ((in12[j - 4] >> 6) << 4));
    mn = uint8_t((in12[j + 4] >> 4) | ((in12[j] >> 6) << 4));
  }
}

// ---- q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin ----

void pack_q2_k(const AffineBlock& b, std::byte* out) {
  uint8_t* p = bytes(out);
  for (int j = 0; j < 16; ++j) p[kQ2Scales + j] = uint8_t((b.sc[j] & 15) | (b.mn[j] << 4));
  pack_2bit(b.q, p + kQ2Qs);
  store_f16(out + kQ2D, b.d);
  store_f16(out + kQ2Dmin, b.dmin);
}

void decode_q2_k(const std::byte* in, int64_t n, float* out) {
  assert(n % kSuper == 0);
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ2Bytes, out += kSuper) {
    const uint8_t* p = bytes(in);
    const float d = load_f16(in + kQ2D), dmin = load_f16(in + kQ2Dmin);
    for (int e = 0; e < kSuper; ++e) {
      const uint8_t s = p[kQ2Scales + e / 16];
      const float dl = d * float(s & 15), ml = dmin * float(s >> 4);
      const int q = (p[kQ2Qs + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      out[e] = dl * float(q) - ml;
    }
  }
}

// ---- q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit, offset 32), d ----

void pack_q3_k(const SymmetricBlock& b, std::byte* out) {
  uint8_t* p = bytes(out);
  uint8_t low[kSuper];
  std::memset(p + kQ3Hmask, 0, 32);
  for (int e = 0; e < kSuper; ++e) {
    const int q = b.l[e] + 4;  // 0..7
    if (q > 3) p[kQ3Hmask + e % 32] |= uint8_t(1 << (e / 32));
    low[e] = uint8_t(q & 3);
  }
  pack_2bit(low, p + kQ3Qs);
  uint8_t* s = p + kQ3Scales;
  std::memset(s, 0, 12);
  for (int j = 0; j < 16; ++j) {
    const int u = b.c[j] + 32;  // 0..63
    s[j % 8] |= uint8_t((u & 15) << (j < 8 ? 0 : 4));
    s[8 + j % 4] |= uint8_t((u >> 4) << (2 * (j / 4)));
  }
  store_f16(out + kQ3D, b.d);
}

void decode_q3_k(const std::byte* in, int64_t n, float* out) {
  assert(n % kSuper == 0);
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ3Bytes, out += kSuper) {
    const uint8_t* p = bytes(in);
    const uint8_t* s = p + kQ3Scales;
    const float d = load_f16(in + kQ3D);
    for (int j = 0; j < 16; ++j) {
      const int u = ((s[j % 8] >> (j < 8 ? 0 : 4)) & 15) | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
      const float dl = d * float(u - 32);
      for (int e = 16 * j; e < 16 * j + 16; ++e) {
        const int lo = (p[kQ3Qs + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        const int hi = (p[kQ3Hmask + e % 32] >> (e / 32)) & 1;
        out[e] = dl * float(lo - (hi ? 0 : 4));
      }
    }
  }
}

// ---- q4_K: d, dmin, scales[12], qs[128] ----

void pack_q4_k(const AffineBlock& b, std::byte* out) {
  uint8_t* p = bytes(out);
  store_f16(out + kQ4D, b.d);
  store_f16(out + kQ4Dmin, b.dmin);
  pack_scales_k4(b.sc, b.mn, p + kQ4Scales);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) p[kQ4Qs + 32 * c + l] = uint8_t(b.q[64 * c + l] | (b.q[64 * c + 32 + l] << 4));
  }
}

void decode_q4_k(const std::byte* in, int64_t n, float* out) {
  assert(n % kSuper == 0);
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ4Bytes, out += kSuper) {
    const uint8_t* p = bytes(in);
    const float d = load_f16(in + kQ4D), dmin = load_f16(in + kQ4Dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, mn;
      unpack_scale_k4(p + kQ4Scales, j, sc, mn);
      const float dl = d * float(sc), ml = dmin * float(mn);
      const uint8_t* q = p + kQ4Qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) out[32 * j + l] = dl * float((q[l] >> shift) & 15) - ml;
    }
  }
}

// ---- q5_K: d, dmin, scales[12], qh[32], qs[128] ----

void pack_q5_k(const AffineBlock& b, std::byte* out) {
  uint8_t* p = bytes(out);
  store_f16(out + kQ5D, b.d);
  store_f16(out + kQ5Dmin, b.dmin);
  pack_scales_k4(b.sc, b.mn, p + kQ5Scales);
  std::memset(p + kQ5Qh, 0, 32);
  for (int e = 0; e < kSuper; ++e) {
    if (b.q[e] & 16) p[kQ5Qh + e % 32] |= uint8_t(1 << (e / 32));
  }
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      p[kQ5Qs + 32 * c + l] = uint8_t((b.q[64 * c + l] & 15) | ((b.q[64 * c + 32 + l] & 15) << 4));
    }
  }
}

void decode_q5_k(const std::byte* in, int64_t n, float* out) {
  assert(n % kSuper == 0);
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ5Bytes, out += kSuper) {
    const uint8_t* p = bytes(in);
    const float d = load_f16(in + kQ5D), dmin = load_f16(in + kQ5Dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, mn;
      unpack_scale_k4(p + kQ5Scales, j, sc, mn);
      const float dl = d * float(sc), ml = dmin * float(mn);
      const uint8_t* q = p + kQ5Qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 15) | (((p[kQ5Qh + l] >> j) & 1) << 4);
        out[32 * j + l] = dl * float(v) - ml;
      }
    }
  }
}

// ---- q6_K: ql[128], qh[64], int8 scales[16], d ----

void pack_q6_k(const SymmetricBlock& b, std::byte* out) {
  uint8_t* p = bytes(out);
  std::memset(p + kQ6Ql, 0, 192);
  for (int e = 0; e < kSuper; ++e) {
    const int q = b.l[e] + 32;  // 0..63
    const int h = e / 128, r = e % 128;
    p[kQ6Ql + 64 * h + r % 64] |= uint8_t((q & 15) << (r < 64 ? 0 : 4));
    p[kQ6Qh + 32 * h + r % 32] |= uint8_t((q >> 4) << (2 * (r / 32)));
  }
  std::memcpy(p + kQ6Scales, b.c, 16);
  store_f16(out + kQ6D, b.d);
}

void decode_q6_k(const std::byte* in, int64_t n, float* out) {
  assert(n % kSuper == 0);
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ6Bytes, out += kSuper) {
    const uint8_t* p = bytes(in);
    const float d = load_f16(in + kQ6D);
    for (int e = 0; e < kSuper; ++e) {
      const int h = e / 128, r = e % 128;
      const int lo = (p[kQ6Ql + 64 * h + r % 64] >> (r < 64 ? 0 : 4)) & 15;
      const int hi = (p[kQ6Qh + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const auto sc = static_cast<int8_t>(p[kQ6Scales + e / 16]);
      out[e] = (d * float(sc)) * float((lo | (hi << 4)) - 32);
    }
  }
}

}  // namespace calq::kquant

// ---- Integer codecs (int_dot.h): the decoders above with each value split as scale·u + offset ----

namespace calq::kquant {

void decode_int_q2_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset) {
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ2Bytes, u += kSuper, scale += 16, offset += 16) {
    const uint8_t* p = bytes(in);
    const float d = load_f16(in + kQ2D), dmin = load_f16(in + kQ2Dmin);
    for (int j = 0; j < 16; ++j) {
      const uint8_t s = p[kQ2Scales + j];
      scale[j] = d * float(s & 15);
      offset[j] = -(dmin * float(s >> 4));
    }
    for (int e = 0; e < kSuper; ++e) u[e] = uint8_t((p[kQ2Qs + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
  }
}

void decode_int_q3_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset) {
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ3Bytes, u += kSuper, scale += 16, offset += 16) {
    const uint8_t* p = bytes(in);
    const uint8_t* s = p + kQ3Scales;
    const float d = load_f16(in + kQ3D);
    for (int j = 0; j < 16; ++j) {
      const int c = ((s[j % 8] >> (j < 8 ? 0 : 4)) & 15) | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
      scale[j] = d * float(c - 32);
      offset[j] = -4.0f * scale[j];
    }
    for (int e = 0; e < kSuper; ++e) {
      const int lo = (p[kQ3Qs + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const int hi = (p[kQ3Hmask + e % 32] >> (e / 32)) & 1;
      u[e] = uint8_t(lo + 4 * hi);
    }
  }
}

// q4_K and q5_K share scales and low nibbles; q5_K adds the fifth bit from qh.
static void decode_int_q45_k(const std::byte* in, int64_t n, bool five, uint8_t* u, float* scale, float* offset) {
  const size_t bb = five ? kQ5Bytes : kQ4Bytes;
  const size_t d_at = five ? kQ5D : kQ4D, dmin_at = five ? kQ5Dmin : kQ4Dmin;
  const size_t sc_at = five ? kQ5Scales : kQ4Scales, qs_at = five ? kQ5Qs : kQ4Qs;
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += bb, u += kSuper, scale += 8, offset += 8) {
    const uint8_t* p = bytes(in);
    const float d = load_f16(in + d_at), dmin = load_f16(in + dmin_at);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, mn;
      unpack_scale_k4(p + sc_at, j, sc, mn);
      scale[j] = d * float(sc);
      offset[j] = -(dmin * float(mn));
      const uint8_t* q = p + qs_at + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> shift) & 15;
        if (five) v |= ((p[kQ5Qh + l] >> j) & 1) << 4;
        u[32 * j + l] = uint8_t(v);
      }
    }
  }
}

void decode_int_q4_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset) {
  decode_int_q45_k(in, n, false, u, scale, offset);
}

void decode_int_q5_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset) {
  decode_int_q45_k(in, n, true, u, scale, offset);
}

void decode_int_q6_k(const std::byte* in, int64_t n, uint8_t* u, float* scale, float* offset) {
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += kQ6Bytes, u += kSuper, scale += 16, offset += 16) {
    const uint8_t* p = bytes(in);
    const float d = load_f16(in + kQ6D);
    for (int j = 0; j < 16; ++j) {
      scale[j] = d * float(static_cast<int8_t>(p[kQ6Scales + j]));
      offset[j] = -32.0f * scale[j];
    }
    for (int e = 0; e < kSuper; ++e) {
      const int h = e / 128, r = e % 128;
      const int lo = (p[kQ6Ql + 64 * h + r % 64] >> (r < 64 ? 0 : 4)) & 15;
      const int hi = (p[kQ6Qh + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
      u[e] = uint8_t(lo | (hi << 4));
    }
  }
}

}  // namespace calq::kquant
