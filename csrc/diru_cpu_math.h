// Elementwise math of the DIRU CPU kernel, written once for two "lane" types:
//
//   double  — one float64 value; std::tanh / std::exp (the float64 path must match the
//             float64 reference to 1e-12, so it uses the C library's functions)
//   VecF    — 16 float32 values in a GCC/Clang vector type; tanh / sigmoid / exp are
//             branch-free polynomial approximations accurate to a few ulp, so the compiler
//             emits one SIMD instruction stream for whatever ISA the caller is compiled for
//             (SSE2, AVX2, AVX-512 — see DIRU_CPU_CLONES in diru_cpu_kernels.h).
//
// Compilers without GCC vector extensions (MSVC) get a scalar float32 path instead
// (DIRU_CPU_HAVE_VECTOR_EXT == 0) with the same formulas on single floats.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) || defined(__clang__)
#define DIRU_CPU_HAVE_VECTOR_EXT 1
#define DIRU_INLINE inline __attribute__((always_inline))
#else
#define DIRU_CPU_HAVE_VECTOR_EXT 0
#define DIRU_INLINE inline
#endif

namespace diru_cpu {

// Compartment dropout's counter-based mask (its statement: diru_fast/scan/dropout.py): unit j of
// row r = t*B + b is kept iff mix32(mask_row_key(seed, r) ^ j * 0x9E3779B9) >= threshold.
DIRU_INLINE uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}
DIRU_INLINE uint32_t mask_row_key(uint64_t seed, uint64_t row) {
  const uint32_t k = mix32(static_cast<uint32_t>(seed) ^ static_cast<uint32_t>(row));
  return mix32(k ^ static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(row >> 32));
}
DIRU_INLINE bool mask_keeps(uint32_t key, int64_t j, uint32_t threshold) {
  return mix32(key ^ (static_cast<uint32_t>(j) * 0x9E3779B9U)) >= threshold;
}

// ---------------------------------------------------------------------------------------------
// float64: one value per lane, C library functions.
// ---------------------------------------------------------------------------------------------
struct LaneD {
  using value = double;
  using scalar = double;
  static constexpr int kWidth = 1;
  static DIRU_INLINE value load(const scalar* p, int) { return *p; }
  static DIRU_INLINE void store(scalar* p, value v, int) { *p = v; }
  static DIRU_INLINE value splat(scalar s) { return s; }
  static DIRU_INLINE value exp(value x) { return std::exp(x); }
  static DIRU_INLINE value tanh(value x) { return std::tanh(x); }
  static DIRU_INLINE value sigmoid(value x) { return 1.0 / (1.0 + std::exp(-x)); }
  static DIRU_INLINE value relu(value x) { return x < 0.0 ? 0.0 : x; }         // NaN stays NaN
  static DIRU_INLINE value positive(value u) { return u > 0.0 ? 1.0 : 0.0; }  // [u > 0]: relu's slope
  static DIRU_INLINE scalar sum(value v) { return v; }
  static DIRU_INLINE void sum4(value a, value b, value c, value e, scalar* out) {
    out[0] = a, out[1] = b, out[2] = c, out[3] = e;
  }
  // the dropout mask's value of unit j: scale where kept, else 0
  static DIRU_INLINE value keep(uint32_t key, int64_t j, uint32_t threshold, scalar scale) {
    return mask_keeps(key, j, threshold) ? scale : 0.0;
  }
};

#if DIRU_CPU_HAVE_VECTOR_EXT
// ---------------------------------------------------------------------------------------------
// float32: 16 lanes. `count` < 16 loads / stores a partial vector (the row's tail); the unused
// lanes hold zeros and are never stored.
// ---------------------------------------------------------------------------------------------
typedef float VecF __attribute__((vector_size(64)));
typedef int32_t VecI __attribute__((vector_size(64)));
typedef uint32_t VecU __attribute__((vector_size(64)));

struct LaneF {
  using value = VecF;
  using scalar = float;
  static constexpr int kWidth = 16;

  static DIRU_INLINE value load(const float* p, int count) {
    value v;
    if (count == kWidth) {
      std::memcpy(&v, p, sizeof(v));
    } else {
      float tmp[kWidth] = {0};
      std::memcpy(tmp, p, sizeof(float) * count);
      std::memcpy(&v, tmp, sizeof(v));
    }
    return v;
  }
  static DIRU_INLINE void store(float* p, value v, int count) {
    if (count == kWidth) {
      std::memcpy(p, &v, sizeof(v));
    } else {
      float tmp[kWidth];
      std::memcpy(tmp, &v, sizeof(v));
      std::memcpy(p, tmp, sizeof(float) * count);
    }
  }
  // every lane s, -0.0 included (0 + -0.0 would give +0.0): lane 0 shuffled to all 16, which GCC
  // emits as one broadcast (`s - value{}` and the 16-element initializer with a run-time s became
  // sixteen masked broadcasts; a 4-wide vector shuffled to 16 went through the stack)
  // GCC 12 still expands it that way for a scalar computed just before (k * alpha_c): splat the
  // factors and multiply the vectors there.
  static DIRU_INLINE value splat(float s) {
    const value v = {s};
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  }

  // mask ? a : b, with mask lanes all-ones or all-zeros (the result of a vector comparison).
  static DIRU_INLINE value select(VecI mask, value a, value b) {
    return (value)((mask & (VecI)a) | (~mask & (VecI)b));
  }

  // exp(x), relative error ~2 ulp on [-87, 88]; beyond, as float32 rounds it: +inf above
  // log(FLT_MAX) = 88.72, 0 below -87.34 (where exp underflows into the subnormals: at most 1.2e-38
  // from the true value), so sigmoid and tanh reach 0 and +-1 exactly as torch's do, with no floor
  // of exp(-87) (sigmoid(-1e36) must be 0, not 6e-39: times a relu output of 1e36 that floor was
  // 0.006). The polynomial runs on x clamped to [-87, 88]; NaN stays NaN.
  static DIRU_INLINE value exp(value x) {
    const VecI overflow = x > 88.7228391f, underflow = x < -87.3365448f;
    x = select(x > 88.0f, splat(88.0f), x);
    x = select(x < -87.0f, splat(-87.0f), x);
    // x = n ln2 + f, |f| <= ln2 / 2; n by round-to-nearest with the 1.5 * 2^23 trick
    const value magic = splat(12582912.0f);
    value n = (x * 1.44269504088896341f + magic) - magic;
    value f = x - n * 0.693359375f;   // ln2 split in two: the high part is exact in float
    f = f + n * 2.12194440e-4f;       // ... and the low part (ln2 = 0.693359375 - 2.12194440e-4)
    // exp(f) on |f| <= ln2/2: degree-6 minimax polynomial (Cephes expf coefficients)
    value p = splat(1.9875691500e-4f);
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    // scale by 2^n through the exponent bits (n in [-126, 127] after the clamp)
    VecI e = (__builtin_convertvector(n, VecI) + 127) << 23;
    return select(underflow, splat(0.0f), select(overflow, splat(__builtin_inff()), p * (value)e));
  }

  static DIRU_INLINE value sigmoid(value x) { return 1.0f / (1.0f + exp(-x)); }

  // relu(x) (NaN stays NaN: the comparison is false) and its slope [u > 0] from u = relu(a)
  // (both in two 8-lane halves, as keep below: on AVX2, which has no 16-lane registers, GCC lowers a
  // 16-lane comparison lane by lane through the stack; an 8-lane one is one instruction on either ISA)
  static DIRU_INLINE value relu(value x) {
    const V8 lo = low(x), hi = high(x);
    return join((V8)(~(I8)(lo < 0.0f) & (I8)lo), (V8)(~(I8)(hi < 0.0f) & (I8)hi));
  }
  static DIRU_INLINE value positive(value u) {
    const I8 one = (I8)(V8{} + 1.0f);
    return join((V8)((I8)(low(u) > 0.0f) & one), (V8)((I8)(high(u) > 0.0f) & one));
  }
  typedef float V8 __attribute__((vector_size(32)));
  typedef int32_t I8 __attribute__((vector_size(32)));
  typedef uint32_t U8 __attribute__((vector_size(32)));
  static DIRU_INLINE V8 low(value v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
  static DIRU_INLINE V8 high(value v) { return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15); }
  static DIRU_INLINE value join(V8 lo, V8 hi) {
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }

  // The sum of the 16 lanes, halving the width four times (vector adds and shuffles).
  static DIRU_INLINE float sum(value v) {
    typedef float V8 __attribute__((vector_size(32)));
    typedef float V4 __attribute__((vector_size(16)));
    V8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    V4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
  }

  // The sums of four vectors' lanes, each added in sum's order (so each equals sum(v) bitwise), with
  // the four reductions sharing their shuffles and adds: out[0..4) = sum(a), sum(b), sum(c), sum(e).
  static DIRU_INLINE void sum4(value a, value b, value c, value e, float* out) {
    typedef float V4 __attribute__((vector_size(16)));
    // lanes i + i+8: a's 8 partial sums in lanes 0-7, b's in 8-15 (and c, e)
    const value ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                     __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const value ce = __builtin_shufflevector(c, e, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                     __builtin_shufflevector(c, e, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    // lanes i + i+4 of each: 4 partial sums per vector, a | b | c | e
    const value q = __builtin_shufflevector(ab, ce, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                    __builtin_shufflevector(ab, ce, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    // (s0 + s2) and (s1 + s3) of each, then their sum
    const V8 h = __builtin_shufflevector(q, q, 0, 1, 4, 5, 8, 9, 12, 13) +
                 __builtin_shufflevector(q, q, 2, 3, 6, 7, 10, 11, 14, 15);
    const V4 r = __builtin_shufflevector(h, h, 0, 2, 4, 6) + __builtin_shufflevector(h, h, 1, 3, 5, 7);
    std::memcpy(out, &r, sizeof(r));
  }

  // The dropout mask's values of units [j, j + 16) of a row with key `key`: scale where kept, else 0
  // (mask_keeps lane-wide: integer multiplies, shifts and xors).
  static DIRU_INLINE value keep(uint32_t key, int64_t j, uint32_t threshold, float scale) {
    return join(keep8(key, static_cast<uint32_t>(j), threshold, scale),
                keep8(key, static_cast<uint32_t>(j) + 8, threshold, scale));
  }
  // units [j, j + 8) (a helper, not a lambda: a lambda is compiled for the build's baseline ISA, not
  // the caller's, and its 256-bit vector result would cross that ABI boundary)
  static DIRU_INLINE V8 keep8(uint32_t key, uint32_t j, uint32_t threshold, float scale) {
    // (lane + j) * 0x9E3779B9 as lane * 0x9E3779B9 + j * 0x9E3779B9 (mod 2^32: the same bits, one
    // vector multiply fewer)
    const U8 lanes_c = {0x0U, 0x9E3779B9U, 0x3C6EF372U, 0xDAA66D2BU, 0x78DDE6E4U, 0x1715609DU, 0xB54CDA56U, 0x5384540FU};
    U8 x = (U8{} + key) ^ (lanes_c + (U8{} + j * 0x9E3779B9U));
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return (V8)((I8)(x >= (U8{} + threshold)) & (I8)(V8{} + scale));
  }



  // tanh(x): an odd polynomial for |x| < 0.625 (where 1 - 2/(e^2x + 1) would cancel),
  // 1 - 2 / (e^{2|x|} + 1) with the sign restored elsewhere. Max error ~2 ulp.
  static DIRU_INLINE value tanh(value x) {
    const VecI sign_bit = VecI{} + INT32_MIN;
    VecI sign = (VecI)x & sign_bit;
    value ax = (value)((VecI)x & ~sign_bit);
    value s = x * x;
    value small = splat(-5.70498872745e-3f);
    small = small * s + 2.06390887954e-2f;
    small = small * s - 5.37397155531e-2f;
    small = small * s + 1.33314422036e-1f;
    small = small * s - 3.33332819422e-1f;
    small = small * s * x + x;
    value large = 1.0f - 2.0f / (exp(ax + ax) + 1.0f);
    large = (value)((VecI)large | sign);
    return select(ax < 0.625f, small, large);
  }
};
#else
// ---------------------------------------------------------------------------------------------
// float32 without vector extensions: one float per lane, C library functions.
// ---------------------------------------------------------------------------------------------
struct LaneF {
  using value = float;
  using scalar = float;
  static constexpr int kWidth = 1;
  static DIRU_INLINE value load(const float* p, int) { return *p; }
  static DIRU_INLINE void store(float* p, value v, int) { *p = v; }
  static DIRU_INLINE value splat(float s) { return s; }
  static DIRU_INLINE value exp(value x) { return std::exp(x); }
  static DIRU_INLINE value tanh(value x) { return std::tanh(x); }
  static DIRU_INLINE value sigmoid(value x) { return 1.0f / (1.0f + std::exp(-x)); }
  static DIRU_INLINE value relu(value x) { return x < 0.0f ? 0.0f : x; }
  static DIRU_INLINE value positive(value u) { return u > 0.0f ? 1.0f : 0.0f; }
  static DIRU_INLINE scalar sum(value v) { return v; }
  static DIRU_INLINE void sum4(value a, value b, value c, value e, scalar* out) {
    out[0] = a, out[1] = b, out[2] = c, out[3] = e;
  }
  static DIRU_INLINE value keep(uint32_t key, int64_t j, uint32_t threshold, float scale) {
    return mask_keeps(key, j, threshold) ? scale : 0.0f;
  }
};
#endif

template <typename T>
struct LaneOf;
template <>
struct LaneOf<float> {
  using type = LaneF;
};
template <>
struct LaneOf<double> {
  using type = LaneD;
};

}  // namespace diru_cpu
