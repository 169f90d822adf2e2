// bfloat16 and float16 on the DIRU CPU kernel: the 16-bit entry points, and the bfloat16 products of
// the float32 time loop on AMX tiles and on AVX512_BF16 (the rule: diru_cpu_bf16.h).
//
// Packed weights (both bfloat16 ISAs): panels of 16 columns; panel p of a [K, N] operand B holds its
// columns [16p, 16p + 16) as Kp/2 rows of 16 bfloat16 pairs, row q = (B[2q, c], B[2q + 1, c]) for
// each column c (Kp = K rounded up to 32, zero-padded; a partial last panel zero-padded too). One row
// is one 512-bit vector of 16 pairs (VDPBF16PS's right operand), and 16 rows are one AMX B tile
// (32 values of K by 16 columns). A pair takes the room of one float, so the launcher's float32
// storage for packed weights holds them (packed_size counts floats).
//
// Left operand: each product first rounds its A [M, K] (float32: the state, o, q or a gradient) to
// a bfloat16 buffer [M rounded up to 16, Kp] (a thread's own, zero-padded in K), then multiplies it
// with the packed panels, accumulating in float32; C is float32.
#include "diru_cpu_bf16.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && DIRU_CPU_HAVE_VECTOR_EXT && \
    !defined(DIRU_CPU_NO_ISA_VARIANTS) && (defined(__clang__) || __GNUC__ >= 11)
#define DIRU_CPU_BF16_VARIANTS 1
#define DIRU_TARGET_BF16_FEATURES "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,bmi2,f16c"
#define DIRU_TARGET_BF16 __attribute__((target(DIRU_TARGET_BF16_FEATURES)))
#define DIRU_TARGET_AMX __attribute__((target(DIRU_TARGET_BF16_FEATURES ",amx-tile,amx-bf16")))
#else
#define DIRU_CPU_BF16_VARIANTS 0
#endif

namespace diru_cpu {

bool is_16bit(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

namespace {

// Whether the running call is a bfloat16 one, and whether it is a 16-bit one (set by the 16-bit entry
// points for the float32 call they make on this thread; call_kernels() and pooled_float_buffer() read
// them on the same thread before any work is split).
thread_local bool t_bfloat16_call = false;
thread_local bool t_16bit_call = false;

class SixteenBitCall {
 public:
  explicit SixteenBitCall(at::ScalarType dtype) : bf16_(t_bfloat16_call), any_(t_16bit_call) {
    t_bfloat16_call = dtype == at::kBFloat16;
    t_16bit_call = true;
  }
  ~SixteenBitCall() {
    t_bfloat16_call = bf16_;
    t_16bit_call = any_;
  }
  SixteenBitCall(const SixteenBitCall&) = delete;
  SixteenBitCall& operator=(const SixteenBitCall&) = delete;

 private:
  bool bf16_, any_;
};

constexpr int kPoolBuffers = 8;
constexpr int64_t kMinPooled = 16384;  // floats (64 KiB): smaller ones come from malloc's free lists anyway

constexpr int64_t kPanel = 16;  // columns per panel
constexpr int64_t kChunk = 32;  // K per AMX tile (one 64-byte tile row of bfloat16)

int64_t padded_k(int64_t k) { return (k + kChunk - 1) / kChunk * kChunk; }
int64_t panels(int64_t n) { return (n + kPanel - 1) / kPanel; }

// float32 -> bfloat16, round to nearest even (NaN stays a quiet NaN)
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// (p: the product; every product packs alike here, the narrow attention logits included)
int64_t packed_size_bf16(int /*p*/, int64_t k, int64_t n, int64_t blocks) {
  return blocks * panels(n / blocks) * kPanel * (padded_k(k) / 2);
}

// Pack B [K, N] (B = W^T with W [N, K] row-major when transposed, else B = W [K, N]) as bfloat16 pairs,
// block by block (each block of N / blocks columns gets its own panels, as the float32 packing does).
// Panels in parallel (the launcher packs before its threads start); a transposed panel is read row by row
// of W.
void pack_bf16(int /*p*/, const float* w, int64_t k, int64_t n, bool transposed, int64_t blocks, float* out) {
  const int64_t nb = n / blocks, kp = padded_k(k), per_block = panels(nb);
  uint32_t* words = reinterpret_cast<uint32_t*>(out);
  at::parallel_for(0, blocks * per_block, 1, [&](int64_t begin, int64_t end) {
    for (int64_t id = begin; id < end; ++id) {
      const int64_t blk = id / per_block, p = id % per_block;
      const int64_t c0 = blk * nb + p * kPanel, cols = std::min<int64_t>(kPanel, nb - p * kPanel);
      uint32_t* panel = words + id * kPanel * (kp / 2);
      std::fill(panel, panel + kPanel * (kp / 2), 0u);
      for (int64_t j = 0; j < cols; ++j) {
        for (int64_t kk = 0; kk < k; ++kk) {
          const uint32_t v = to_bf16(transposed ? w[(c0 + j) * k + kk] : w[kk * n + c0 + j]);
          panel[(kk / 2) * kPanel + j] |= (kk % 2 == 0) ? v : v << 16;
        }
      }
    }
  });
}

bool cpu_has(Bf16Isa isa) {
#if DIRU_CPU_BF16_VARIANTS
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!avx512 || !__builtin_cpu_supports("avx512bf16")) return false;
  if (isa == Bf16Isa::kAvx512Bf16) return true;
#if defined(__linux__) && defined(SYS_arch_prctl)
  if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) return false;
  // Linux hands out AMX's tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA):
  // once per process, for every thread.
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
  return false;
#endif
#else
  (void)isa;
  return false;
#endif
}

Bf16Isa isa_from_env(Bf16Isa best) {
  const char* v = std::getenv("DIRU_FAST_CPU_BF16_ISA");
  if (v == nullptr || *v == '\0') return best;
  for (Bf16Isa isa : {Bf16Isa::kAmx, Bf16Isa::kAvx512Bf16, Bf16Isa::kUpcast})
    if (std::strcmp(v, bf16_isa_name(isa)) == 0 && bf16_isa_supported(isa)) return isa;
  return best;
}

#if DIRU_CPU_BF16_VARIANTS
// ---------------------------------------------------------------------------------------------
// The left operand in bfloat16: A [M, K] (row stride lda) -> out [M, kp], zero-padded in K.
// ---------------------------------------------------------------------------------------------
DIRU_TARGET_BF16 DIRU_INLINE void round_rows(const float* A, int64_t lda, int64_t M, int64_t K, int64_t kp,
                                             uint16_t* out) {
  for (int64_t i = 0; i < M; ++i) {
    const float* a = A + i * lda;
    uint16_t* o = out + i * kp;
    for (int64_t j = 0; j < kp; j += 32) {
      const int64_t left = K - j;
      const __mmask16 m0 = left >= 16 ? 0xffff : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0;
      const __mmask16 m1 = left >= 32 ? 0xffff : left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0;
      const __m512 lo = _mm512_maskz_loadu_ps(m0, a + j), hi = _mm512_maskz_loadu_ps(m1, a + j + 16);
      _mm512_storeu_si512(o + j, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX512_BF16: C[rows <= R, NP panels] = a[rows, kp] . panels, R x NP accumulators over kp / 2 pairs.
// ---------------------------------------------------------------------------------------------
template <int R, int NP>
DIRU_TARGET_BF16 DIRU_INLINE void dp_tile(const uint32_t* a, int64_t a_words, const uint32_t* panel,
                                          int64_t panel_words, int64_t pairs, float* C, int64_t ldc, int rows,
                                          const int64_t* cols) {
  __m512 acc[R][NP];
  for (int i = 0; i < R; ++i)
    for (int q = 0; q < NP; ++q) acc[i][q] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i b[NP];
    for (int q = 0; q < NP; ++q) b[q] = _mm512_loadu_si512(panel + q * panel_words + p * kPanel);
    for (int i = 0; i < R; ++i) {
      const __m512i x = _mm512_set1_epi32(static_cast<int>(a[i * a_words + p]));
      for (int q = 0; q < NP; ++q) acc[i][q] = _mm512_dpbf16_ps(acc[i][q], (__m512bh)x, (__m512bh)b[q]);
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int q = 0; q < NP; ++q)
      _mm512_mask_storeu_ps(C + i * ldc + q * kPanel, static_cast<__mmask16>((1u << cols[q]) - 1), acc[i][q]);
}

struct DpGemm {
  static constexpr bool kTiles = false;
  // C[M, units [c0, c1) of each block] from the bfloat16 rows a [M, kp] and B's packed panels
  DIRU_TARGET_BF16 static void run(const uint16_t* a16, int64_t kp, int64_t M, const float* packed, int64_t nb,
                                   int64_t blocks, float* C, int64_t ldc, int64_t c0, int64_t c1) {
    const uint32_t* a = reinterpret_cast<const uint32_t*>(a16);
    const int64_t a_words = kp / 2, panel_words = kPanel * (kp / 2), pairs = kp / 2;
    const int64_t p0 = c0 / kPanel, p1 = panels(c1), per_block = panels(nb);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const uint32_t* base = reinterpret_cast<const uint32_t*>(packed) + blk * per_block * panel_words;
      float* cb = C + blk * nb;
      for (int64_t p = p0; p < p1; p += 2) {
        const int np = p + 1 < p1 ? 2 : 1;
        int64_t cols[2];
        for (int q = 0; q < np; ++q) cols[q] = std::min<int64_t>(kPanel, c1 - (p + q) * kPanel);
        const uint32_t* panel = base + p * panel_words;
        int64_t i = 0;
        if (np == 2) {
          for (; i + 8 <= M; i += 8)
            dp_tile<8, 2>(a + i * a_words, a_words, panel, panel_words, pairs, cb + i * ldc + p * kPanel, ldc, 8, cols);
          for (; i < M; ++i)
            dp_tile<1, 2>(a + i * a_words, a_words, panel, panel_words, pairs, cb + i * ldc + p * kPanel, ldc, 1, cols);
        } else {
          for (; i + 8 <= M; i += 8)
            dp_tile<8, 1>(a + i * a_words, a_words, panel, panel_words, pairs, cb + i * ldc + p * kPanel, ldc, 8, cols);
          for (; i < M; ++i)
            dp_tile<1, 1>(a + i * a_words, a_words, panel, panel_words, pairs, cb + i * ldc + p * kPanel, ldc, 1, cols);
        }
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// AMX: every tile 16 rows x 64 bytes. tmm0-3 accumulate C for up to 4 panels, tmm4 holds A's
// 16 rows x 32 values of K, tmm5-7 B's tiles (16 pairs x 16 columns) in turn.
// ---------------------------------------------------------------------------------------------
struct alignas(64) TileConfig {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

DIRU_TARGET_AMX void amx_configure() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  // GCC 12's ldtilecfg builtin does not tell the compiler it reads cfg: without this barrier the
  // stores above are dropped as dead (only the memset's zeros reach the configuration)
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

DIRU_TARGET_AMX void amx_release() { _tile_release(); }

// Tiles configured for the life of one thread's share of a call (other code on this thread, e.g.
// oneDNN, may configure them differently between calls).
class AmxTiles {
 public:
  AmxTiles() { amx_configure(); }
  ~AmxTiles() { amx_release(); }
  AmxTiles(const AmxTiles&) = delete;
  AmxTiles& operator=(const AmxTiles&) = delete;
};

// a partial C tile (fewer than 16 rows or columns) -> C[rows, cols], from the tile stored whole in tmp
DIRU_INLINE void copy_tile(const float* tmp, float* C, int64_t ldc, int rows, int64_t cols) {
  for (int i = 0; i < rows; ++i) std::memcpy(C + i * ldc, tmp + i * kPanel, sizeof(float) * cols);
}

// tile Q -> C[rows, cols] (a tile store writes 16 whole rows; Q a literal: the tile's register name)
#define DIRU_AMX_STORE(Q, C, ldc, rows, cols)                                    \
  do {                                                                         \
    if ((rows) == 16 && (cols) == kPanel) {                                    \
      _tile_stored(Q, C, (ldc) * static_cast<int64_t>(sizeof(float)));        \
    } else {                                                                   \
      alignas(64) float tmp_[16 * kPanel];                                     \
      _tile_stored(Q, tmp_, kPanel * static_cast<int64_t>(sizeof(float)));     \
      copy_tile(tmp_, C, ldc, rows, cols);                                     \
    }                                                                          \
  } while (0)

// C[rows, NP panels] += a[16 rows, kp] . panels (kp / 32 tile products per panel)
template <int NP>
DIRU_TARGET_AMX DIRU_INLINE void amx_tiles(const uint16_t* a, int64_t kp, const char* panel, int64_t panel_bytes,
                                           float* C, int64_t ldc, int rows, const int64_t* cols) {
  const int64_t a_stride = kp * static_cast<int64_t>(sizeof(uint16_t));
  _tile_zero(0);
  if (NP > 1) _tile_zero(1);
  if (NP > 2) _tile_zero(2);
  if (NP > 3) _tile_zero(3);
  for (int64_t kc = 0; kc < kp / kChunk; ++kc) {
    const char* b = panel + kc * 1024;  // 16 pairs x 16 columns x 4 bytes
    _tile_loadd(4, a + kc * kChunk, a_stride);
    _tile_loadd(5, b, 64);
    _tile_dpbf16ps(0, 4, 5);
    if (NP > 1) {
      _tile_loadd(6, b + panel_bytes, 64);
      _tile_dpbf16ps(1, 4, 6);
    }
    if (NP > 2) {
      _tile_loadd(7, b + 2 * panel_bytes, 64);
      _tile_dpbf16ps(2, 4, 7);
    }
    if (NP > 3) {
      _tile_loadd(5, b + 3 * panel_bytes, 64);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  DIRU_AMX_STORE(0, C, ldc, rows, cols[0]);
  if (NP > 1) DIRU_AMX_STORE(1, C + kPanel, ldc, rows, cols[1]);
  if (NP > 2) DIRU_AMX_STORE(2, C + 2 * kPanel, ldc, rows, cols[2]);
  if (NP > 3) DIRU_AMX_STORE(3, C + 3 * kPanel, ldc, rows, cols[3]);
}

struct AmxGemm {
  static constexpr bool kTiles = true;
  // as DpGemm::run; a16 has M rounded up to 16 rows (rows past M are read, their results dropped)
  DIRU_TARGET_AMX static void run(const uint16_t* a16, int64_t kp, int64_t M, const float* packed, int64_t nb,
                                  int64_t blocks, float* C, int64_t ldc, int64_t c0, int64_t c1) {
    const int64_t panel_bytes = kPanel * (kp / 2) * 4;
    const int64_t p0 = c0 / kPanel, p1 = panels(c1), per_block = panels(nb);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const char* base = reinterpret_cast<const char*>(packed) + blk * per_block * panel_bytes;
      float* cb = C + blk * nb;
      for (int64_t i = 0; i < M; i += 16) {
        const int rows = static_cast<int>(std::min<int64_t>(16, M - i));
        for (int64_t p = p0; p < p1; p += 4) {
          const int np = static_cast<int>(std::min<int64_t>(4, p1 - p));
          int64_t cols[4];
          for (int q = 0; q < np; ++q) cols[q] = std::min<int64_t>(kPanel, c1 - (p + q) * kPanel);
          const char* panel = base + p * panel_bytes;
          float* c = cb + i * ldc + p * kPanel;
          const uint16_t* a = a16 + i * kp;
          switch (np) {
            case 4: amx_tiles<4>(a, kp, panel, panel_bytes, c, ldc, rows, cols); break;
            case 3: amx_tiles<3>(a, kp, panel, panel_bytes, c, ldc, rows, cols); break;
            case 2: amx_tiles<2>(a, kp, panel, panel_bytes, c, ldc, rows, cols); break;
            default: amx_tiles<1>(a, kp, panel, panel_bytes, c, ldc, rows, cols); break;
          }
        }
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// The products of the float32 time loop (the interface of diru_cpu_gemm.h's PackedProducts) on
// bfloat16 panels. buf: this thread's bfloat16 rows, [max rows rounded up to 16, max kp].
// ---------------------------------------------------------------------------------------------
template <typename G>
struct Bf16Products {
  const float* packed[kProducts];
  int64_t k[kProducts], nb[kProducts], blocks[kProducts];
  uint16_t* buf;

  DIRU_TARGET_BF16 __attribute__((noinline)) void operator()(int p, int64_t M, const float* A, int64_t lda, float* C,
                                                             int64_t ldc, UnitRange u) const {
    const int64_t kp = padded_k(k[p]);
    round_rows(A, lda, M, k[p], kp, buf);
    G::run(buf, kp, M, packed[p], nb[p], blocks[p], C, ldc, u.c0, u.c1);
  }
  DIRU_INLINE void operator()(int p, int64_t M, const float* A, int64_t lda, float* C, int64_t ldc) const {
    (*this)(p, M, A, lda, C, ldc, UnitRange{0, nb[p]});
  }
};

// o = u s, q = z r of rows [r0, r1) of saved (row stride ld) rounded to bfloat16, as to_bf16 does
// (round to nearest even, a NaN stays a quiet NaN): out [rows, 2, d].
DIRU_TARGET_BF16 void gate_products_rows(const float* saved, int64_t ld, int64_t d, int64_t r0, int64_t r1,
                                         uint16_t* out) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), quiet = _mm512_set1_epi32(0x40);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  for (int64_t r = r0; r < r1; ++r) {
    const float* sv = saved + r * ld;
    uint16_t* o = out + r * 2 * d;
    for (int g = 0; g < 2; ++g) {  // o = u * s (columns [0, d) and [d, 2d)), q = z * r ([2d, 3d) and [3d, 4d))
      const float* x = sv + 2 * g * d;
      const float* y = x + d;
      uint16_t* dst = o + g * d;
      for (int64_t j = 0; j < d; j += 16) {
        const __mmask16 m = d - j >= 16 ? 0xffff : static_cast<__mmask16>((1u << (d - j)) - 1);
        const __m512i u = _mm512_castps_si512(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, y + j)));
        const __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i v = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(hi, one))), 16);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        v = _mm512_mask_mov_epi32(v, nan, _mm512_or_si512(hi, quiet));
        _mm256_mask_storeu_epi16(dst + j, m, _mm512_cvtepi32_epi16(v));
      }
    }
  }
}

// The bfloat16 rows buffer of one thread's share of a call: rows x the widest padded K of its products.
struct RowsBuffer {
  std::vector<uint16_t> data;
  RowsBuffer(const PackedWeights& w, int64_t rows) {
    int64_t kp = 0;
    for (int p = 0; p < kProducts; ++p)
      if (w.panels[p] != nullptr) kp = std::max(kp, padded_k(w.k[p]));
    data.assign(static_cast<size_t>((rows + 15) / 16 * 16 * kp), 0);
  }
};

template <typename G>
Bf16Products<G> bf16_products(const PackedWeights& w, uint16_t* buf) {
  Bf16Products<G> p;
  for (int i = 0; i < kProducts; ++i) {
    p.packed[i] = w.panels[i];
    p.k[i] = w.k[i];
    p.nb[i] = w.nb[i];
    p.blocks[i] = w.blocks[i];
  }
  p.buf = buf;
  return p;
}

// The time loops on one bfloat16 ISA (G), their elementwise code compiled for AVX-512.
#define DIRU_BF16_KERNELS_FOR(TARGET, SUFFIX, G, SCOPE)                                                       \
  TARGET void fwd_##SUFFIX(const ScanArgs<float>& a, const PackedWeights& w, int64_t r0, int64_t r1,          \
                           float* scratch) {                                                                  \
    RowsBuffer buf(w, r1 - r0);                                                                               \
    SCOPE;                                                                                                    \
    scan_fwd_rows<float, LaneF>(a, bf16_products<G>(w, buf.data.data()), r0, r1, scratch);                    \
  }                                                                                                           \
  TARGET void bwd_##SUFFIX(const ScanArgs<float>& a, const PackedWeights& w, int64_t r0, int64_t r1,          \
                           float* scratch) {                                                                  \
    RowsBuffer buf(w, r1 - r0);                                                                               \
    SCOPE;                                                                                                    \
    scan_bwd_rows<float, LaneF>(a, bf16_products<G>(w, buf.data.data()), r0, r1, scratch);                    \
  }                                                                                                           \
  TARGET void fwd_cols_##SUFFIX(const ScanArgs<float>& a, const PackedWeights& w, int64_t c0, int64_t c1,     \
                                float* scratch, SpinBarrier& barrier) {                                       \
    RowsBuffer buf(w, a.B);                                                                                   \
    SCOPE;                                                                                                    \
    scan_fwd_part<float, LaneF>(a, bf16_products<G>(w, buf.data.data()), 0, a.B, UnitRange{c0, c1}, scratch,  \
                                BarrierSync16{barrier});                                                      \
  }

struct BarrierSync16 {
  SpinBarrier& barrier;
  DIRU_INLINE void operator()() const { barrier.wait(); }
};

DIRU_BF16_KERNELS_FOR(DIRU_TARGET_BF16, avx512bf16, DpGemm, (void)0)
DIRU_BF16_KERNELS_FOR(DIRU_TARGET_BF16, amx, AmxGemm, AmxTiles tiles)

// A bfloat16 ISA's table: its packing and packed time loops; calls too small to pack for run the
// AVX-512 float32 kernels' (BLAS products on the float32 weights).
F32Kernels bf16_table(const char* name, decltype(F32Kernels::fwd) fwd, decltype(F32Kernels::bwd) bwd,
                      decltype(F32Kernels::fwd_cols) cols) {
  F32Kernels k = f32_kernels(Isa::kAvx512);
  k.name = name;
  k.panel_width = kPanel;
  k.packed_size = packed_size_bf16;
  k.pack = pack_bf16;
  k.fwd = fwd;
  k.bwd = bwd;
  k.fwd_cols = cols;
  return k;
}
#endif

const F32Kernels* bf16_kernels(Bf16Isa isa) {
#if DIRU_CPU_BF16_VARIANTS
  static const F32Kernels amx = bf16_table("amx", fwd_amx, bwd_amx, fwd_cols_amx);
  static const F32Kernels dp = bf16_table("avx512bf16", fwd_avx512bf16, bwd_avx512bf16, fwd_cols_avx512bf16);
  if (isa == Bf16Isa::kAmx) return &amx;
  if (isa == Bf16Isa::kAvx512Bf16) return &dp;
#endif
  (void)isa;
  return nullptr;
}

// every floating input of a 16-bit call shares its dtype; returns it as float32
at::Tensor to_float(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.defined(), "diru_fast cpu kernel: ", name, " is undefined");
  TORCH_CHECK(t.scalar_type() == dtype, "diru_fast cpu kernel: ", name, " has dtype ", t.scalar_type(),
              ", expected ", dtype, " (all inputs share one dtype)");
  return t.to(at::kFloat);
}

// The call's per-step operands (x or xp, grad_hs, hs) and weights converted into a float32 buffer this
// thread keeps between calls (one per slot): converting into memory already touched takes a fifth of the
// time of converting into a fresh allocation (measured: [100, 32, 768], 0.56 ms against 2.7 ms, page
// faults). The result is read by the float32 call only, never returned.
enum Slot : int { kXp = 0, kGradHs, kHs, kWih, kWhh, kWint, kWout, kSlots };

at::Tensor to_float_buffer(const at::Tensor& t, const char* name, at::ScalarType dtype, Slot slot) {
  TORCH_CHECK(t.defined(), "diru_fast cpu kernel: ", name, " is undefined");
  TORCH_CHECK(t.scalar_type() == dtype, "diru_fast cpu kernel: ", name, " has dtype ", t.scalar_type(),
              ", expected ", dtype, " (all inputs share one dtype)");
  thread_local at::Tensor buffers[kSlots];
  at::Tensor& buffer = buffers[slot];
  if (!buffer.defined() || buffer.numel() < t.numel()) buffer = at::empty({t.numel()}, t.options().dtype(at::kFloat));
  at::Tensor out = buffer.narrow(0, 0, t.numel()).view(t.sizes());
  out.copy_(t);
  return out;
}

c10::optional<at::Tensor> to_float(const c10::optional<at::Tensor>& t, const char* name, at::ScalarType dtype) {
  if (!t.has_value() || !t->defined()) return c10::nullopt;
  return to_float(*t, name, dtype);
}

// Time decay's rate [d] and gaps [T, B] in float32, from whichever floating dtype the caller holds them in.
c10::optional<at::Tensor> any_to_float(const c10::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return t;
  return t->scalar_type() == at::kFloat ? *t : t->to(at::kFloat);
}

}  // namespace

at::Tensor pooled_float_buffer(at::IntArrayRef shape) {
  if (!t_16bit_call) return at::Tensor();
  const int64_t n = c10::multiply_integers(shape);
  if (n < kMinPooled) return at::Tensor();
  thread_local std::vector<at::Tensor> pool;  // 1-D float32 buffers
  // free: referenced by the pool alone (no tensor, view or saved tensor of anyone else shares its storage)
  const auto is_free = [](const at::Tensor& b) { return b.use_count() == 1 && b.storage().use_count() == 1; };
  at::Tensor* best = nullptr;  // the smallest free buffer that fits and wastes at most half of itself
  for (at::Tensor& b : pool)
    if (is_free(b) && b.numel() >= n && b.numel() <= 2 * n && (best == nullptr || b.numel() < best->numel()))
      best = &b;
  if (best == nullptr) {
    at::Tensor fresh = at::empty({n}, at::TensorOptions().dtype(at::kFloat));
    if (static_cast<int>(pool.size()) < kPoolBuffers) {
      pool.push_back(fresh);
      best = &pool.back();
    } else {  // replace the smallest free buffer, if any (the others may hold larger calls' tensors)
      for (at::Tensor& b : pool)
        if (is_free(b) && (best == nullptr || b.numel() < best->numel())) best = &b;
      if (best == nullptr) return fresh.view(shape);
      *best = fresh;
    }
  }
  return best->narrow(0, 0, n).view(shape);
}

bool bf16_isa_supported(Bf16Isa isa) {
  if (isa == Bf16Isa::kUpcast) return true;
  static const bool dp = cpu_has(Bf16Isa::kAvx512Bf16);
  static const bool amx = cpu_has(Bf16Isa::kAmx);
  return isa == Bf16Isa::kAmx ? amx : dp;
}

const char* bf16_isa_name(Bf16Isa isa) {
  return isa == Bf16Isa::kAmx ? "amx" : isa == Bf16Isa::kAvx512Bf16 ? "avx512bf16" : "upcast";
}

// AMX where the CPU has it, else float32 products: the AVX512_BF16 path is opt-in, as it measured slower
// than float32 products on the project's AMX machine (scan_fwd T=100 B=32 d=256, one thread: AMX 5.4 ms,
// float32 products 16 ms, VDPBF16PS 24 ms; its inner loop is 16 VDPBF16PS per 10 loads, so that is the
// instruction's throughput there). A CPU with AVX512_BF16 but no AMX may differ: time it with set_bf16_isa.
Bf16Isa& active_bf16_isa() {
  static Bf16Isa isa = isa_from_env(bf16_isa_supported(Bf16Isa::kAmx) ? Bf16Isa::kAmx : Bf16Isa::kUpcast);
  return isa;
}

const F32Kernels& call_kernels() {
  const Isa isa = active_isa();
  if (t_bfloat16_call && isa == Isa::kAvx512) {
    const F32Kernels* k = bf16_kernels(active_bf16_isa());
    if (k != nullptr) return *k;
  }
  return f32_kernels(isa);
}

std::tuple<at::Tensor, at::Tensor> scan_fwd_16bit(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w_hh,
                                                  const at::Tensor& w_int, const at::Tensor& b_int,
                                                  const at::Tensor& w_out, const at::Tensor& b_out,
                                                  const c10::optional<at::Tensor>& lengths, bool need_saved,
                                                  int64_t activation, const c10::optional<at::Tensor>& compartment_of,
                                                  const c10::optional<at::Tensor>& mask,
                                                  const c10::optional<at::Tensor>& decay,
                                                  const c10::optional<at::Tensor>& rate,
                                                  const c10::optional<at::Tensor>& dt,
                                                  const c10::optional<int64_t>& mask_seed, int64_t mask_threshold,
                                                  double mask_scale) {
  const auto dtype = xp.scalar_type();
  const SixteenBitCall call(dtype);
  auto out = scan_fwd(to_float_buffer(xp, "xp", dtype, kXp), to_float(h0, "h0", dtype),
                      to_float_buffer(w_hh, "w_hh", dtype, kWhh), to_float_buffer(w_int, "w_int", dtype, kWint),
                      to_float(b_int, "b_int", dtype), to_float_buffer(w_out, "w_out", dtype, kWout),
                      to_float(b_out, "b_out", dtype), lengths, need_saved, activation, compartment_of, mask, decay,
                      any_to_float(rate), any_to_float(dt), mask_seed, mask_threshold, mask_scale);
  return {std::get<0>(out).to(dtype), std::get<1>(out)};
}

at::Tensor scan_fwd_x_16bit(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                            const c10::optional<at::Tensor>& b_ih, const at::Tensor& w_hh, const at::Tensor& w_int,
                            const at::Tensor& b_int, const at::Tensor& w_out, const at::Tensor& b_out,
                            const c10::optional<at::Tensor>& lengths, int64_t activation,
                            const c10::optional<at::Tensor>& compartment_of, const c10::optional<at::Tensor>& decay,
                            const c10::optional<at::Tensor>& rate, const c10::optional<at::Tensor>& dt) {
  const auto dtype = x.scalar_type();
  const SixteenBitCall call(dtype);
  return scan_fwd_x(to_float_buffer(x, "x", dtype, kXp), to_float(h0, "h0", dtype),
                    to_float_buffer(w_ih, "w_ih", dtype, kWih), to_float(b_ih, "b_ih", dtype),
                    to_float_buffer(w_hh, "w_hh", dtype, kWhh), to_float_buffer(w_int, "w_int", dtype, kWint),
                    to_float(b_int, "b_int", dtype), to_float_buffer(w_out, "w_out", dtype, kWout),
                    to_float(b_out, "b_out", dtype), lengths, activation, compartment_of, decay, any_to_float(rate),
                    any_to_float(dt))
      .to(dtype);
}

ScanBwdResult scan_bwd_16bit(
    const at::Tensor& grad_hs, const at::Tensor& h0, const at::Tensor& hs, const at::Tensor& saved,
    const at::Tensor& w_hh, const at::Tensor& w_int, const at::Tensor& w_out, const c10::optional<at::Tensor>& lengths,
    int64_t activation, const c10::optional<at::Tensor>& compartment_of, const c10::optional<at::Tensor>& mask,
    const c10::optional<at::Tensor>& decay, const c10::optional<at::Tensor>& rate,
    const c10::optional<at::Tensor>& dt, const c10::optional<int64_t>& mask_seed, int64_t mask_threshold,
    double mask_scale, bool want_o) {
  const auto dtype = hs.scalar_type();
  const SixteenBitCall call(dtype);
  TORCH_CHECK(saved.scalar_type() == at::kFloat, "diru_fast cpu kernel: saved has dtype ", saved.scalar_type(),
              ", expected Float (a 16-bit call saves its gates in float32)");
  auto out = scan_bwd(to_float_buffer(grad_hs, "grad_hs", dtype, kGradHs), to_float(h0, "h0", dtype),
                      to_float_buffer(hs, "hs", dtype, kHs), saved, to_float_buffer(w_hh, "w_hh", dtype, kWhh),
                      to_float_buffer(w_int, "w_int", dtype, kWint), to_float_buffer(w_out, "w_out", dtype, kWout),
                      lengths, activation, compartment_of, mask, decay, any_to_float(rate), any_to_float(dt), mask_seed,
                      mask_threshold, mask_scale, want_o);
  // d_rate and d_dt (defined only with rate and dt) in the call's dtype, like d_h0; hd and o stay float32
  const auto in_dtype = [dtype](const at::Tensor& t) { return t.defined() ? t.to(dtype) : t; };
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out).to(dtype), std::get<4>(out),
          in_dtype(std::get<5>(out)), in_dtype(std::get<6>(out)), std::get<7>(out)};
}

at::Tensor cell_step_16bit(const at::Tensor& x, const c10::optional<at::Tensor>& h, const at::Tensor& w_ih,
                           const c10::optional<at::Tensor>& b_ih, const at::Tensor& w_hh, const at::Tensor& w_int,
                           const c10::optional<at::Tensor>& b_int, const at::Tensor& w_out,
                           const c10::optional<at::Tensor>& b_out, int64_t activation,
                           const c10::optional<at::Tensor>& compartment_of) {
  const auto dtype = x.scalar_type();
  const SixteenBitCall call(dtype);
  return cell_step(to_float(x, "x", dtype), to_float(h, "h", dtype), to_float_buffer(w_ih, "w_ih", dtype, kWih),
                   to_float(b_ih, "b_ih", dtype), to_float_buffer(w_hh, "w_hh", dtype, kWhh),
                   to_float_buffer(w_int, "w_int", dtype, kWint), to_float(b_int, "b_int", dtype),
                   to_float_buffer(w_out, "w_out", dtype, kWout), to_float(b_out, "b_out", dtype), activation,
                   compartment_of)
      .to(dtype);
}

c10::optional<at::Tensor> gate_products(const at::Tensor& saved, int64_t d, at::ScalarType dtype) {
#if DIRU_CPU_BF16_VARIANTS
  if (dtype != at::kBFloat16 || active_isa() != Isa::kAvx512 || !bf16_isa_supported(Bf16Isa::kAvx512Bf16))
    return c10::nullopt;
  TORCH_CHECK(saved.scalar_type() == at::kFloat && saved.dim() == 3 && saved.size(2) >= 4 * d && d > 0,
              "diru_fast cpu kernel: gate_products needs float32 saved gates [T, B, 4d+k], got ", saved.scalar_type(),
              " ", saved.sizes());
  const at::Tensor sv = saved.contiguous();
  const int64_t rows = sv.size(0) * sv.size(1), ld = sv.size(2);
  at::Tensor out = at::empty({rows, 2, d}, sv.options().dtype(at::kBFloat16));
  const float* src = sv.data_ptr<float>();
  uint16_t* dst = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) { gate_products_rows(src, ld, d, r0, r1, dst); });
  return out;
#else
  (void)saved, (void)d, (void)dtype;
  return c10::nullopt;
#endif
}

void add_bf16_bindings(pybind11::module& m) {
  namespace py = pybind11;
  m.def("gate_products", &gate_products, "o = u s and q = z r of float32 saved gates [T, B, 4d+k], rounded to "
        "bfloat16: [T*B, 2, d]; None where the fused form does not run (not bfloat16, no AVX-512)",
        py::arg("saved"), py::arg("d"), py::arg("dtype"));
  m.def("bf16_isa", [] { return std::string(bf16_isa_name(active_bf16_isa())); },
        "the products of bfloat16 calls: 'amx', 'avx512bf16' (bfloat16 products) or 'upcast' (float32 products); "
        "bfloat16 products run only while the float32 instruction set is 'avx512'");
  m.def("supported_bf16_isas", [] {
    std::vector<std::string> names;
    for (Bf16Isa isa : {Bf16Isa::kAmx, Bf16Isa::kAvx512Bf16, Bf16Isa::kUpcast})
      if (bf16_isa_supported(isa)) names.push_back(bf16_isa_name(isa));
    return names;
  }, "the bfloat16 product paths this CPU and build run");
  m.def(
      "set_bf16_isa",
      [](const std::string& name) {
        for (Bf16Isa isa : {Bf16Isa::kAmx, Bf16Isa::kAvx512Bf16, Bf16Isa::kUpcast}) {
          if (name != bf16_isa_name(isa)) continue;
          TORCH_CHECK(bf16_isa_supported(isa), "diru_fast cpu kernel: this CPU or build does not run ", name);
          std::string previous = bf16_isa_name(active_bf16_isa());
          active_bf16_isa() = isa;
          return previous;
        }
        TORCH_CHECK(false, "diru_fast cpu kernel: unknown bfloat16 path '", name, "' (amx, avx512bf16, upcast)");
      },
      "use bfloat16 path 'amx', 'avx512bf16' or 'upcast' (tests, tuning); returns the previous one");
}

}  // namespace diru_cpu
