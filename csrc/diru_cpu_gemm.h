// The per-step products of the DIRU CPU kernel: C[M, N] = A[M, K] · B[K, N], row-major, where B is a
// weight matrix that stays the same for all T steps of a call.
//
// Two implementations behind one interface (the time loops in diru_cpu_kernels.h are templates over
// it):
//
//   BlasProducts<T>  — one BLAS call per product (diru_cpu_blas.h). float64, and float32 on CPUs
//                      without AVX2.
//   PackedProducts   — float32 on AVX2 / AVX-512: each weight matrix is packed once per call into
//                      column panels of NR values (panel p holds B[0..K), columns [p·NR, p·NR + NR),
//                      zero-padded), and a register-blocked micro-kernel computes MR×NR tiles of C:
//                      per k it loads one row of the panel (NR/W vectors) and broadcasts MR values of
//                      A. The products are small (M = the rows of a batch slice, 1..32; K, N = d..3d),
//                      where a BLAS call spends much of its time outside the multiply-adds; measured on
//                      the project's AMD EPYC (Zen 4) VM: 95-115 GFLOP/s against MKL's 30-80 for the
//                      same calls.
//
// The products of a call (forward: h W_hh^T, o W_int^T, q W_out^T, and x W_ih^T where the kernel
// computes the input projection; backward: dy W_out, dz W_int, dP W_hh) are indexed by Product. Forward products multiply by a weight's transpose; the packing
// takes care of it, so both directions run the same micro-kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "diru_cpu_blas.h"
#include "diru_cpu_math.h"

namespace diru_cpu {

enum Product : int {
  kFwdHH = 0,   // [R, d]  · W_hh^T  -> [R, 3d]
  kFwdInt = 1,  // [R, d]  · W_int^T -> [R, d]
  kFwdOut = 2,  // [R, d]  · W_out^T -> [R, d]
  kBwdOut = 3,  // [R, d]  · W_out   -> [R, d]
  kBwdInt = 4,  // [R, d]  · W_int   -> [R, d]
  kBwdHH = 5,   // [R, 3d] · W_hh    -> [R, d]
  kFwdIH = 6,   // [R, n]  · W_ih^T  -> [R, 3d]   (the input projection, when the kernel computes it)
  kFwdAtt = 7,  // [R, d]  · W_hh[3d:]^T -> [R, k] (attention: the logits' h part, k more packed columns)
  kFwdIHAtt = 8,  // [R, n] · W_ih[3d:]^T -> [R, k] (attention: the logits' x part, when the kernel projects)
  kProducts = 9,
};

// The weights of a call, row-major as the contract passes them: w_hh [3d, d], w_int/w_out [d, d];
// w_ih [3d, n] only where the kernel computes the input projection itself (n = 0 otherwise); with
// attention both have k more rows, the logits' (w_hh [3d+k, d], w_ih [3d+k, n]).
template <typename T>
struct Weights {
  int64_t d;
  const T* w_hh;
  const T* w_int;
  const T* w_out;
  const T* w_ih = nullptr;
  int64_t n = 0;
  int64_t k = 0;
};

// (B, K, N, transposed, blocks) of product p: B is W (or W^T when transposed) with W stored
// row-major; its N columns are `blocks` blocks of d units (h W_hh^T: [a | s_pre | r_pre]).
template <typename T>
struct ProductShape {
  const T* w;
  int64_t k, n;
  bool transposed;  // B = W^T, W stored [N, K]
  int64_t blocks;
};

template <typename T>
inline ProductShape<T> product_shape(const Weights<T>& w, int p) {
  const int64_t d = w.d;
  switch (p) {
    case kFwdHH: return {w.w_hh, d, 3 * d, true, 3};
    case kFwdInt: return {w.w_int, d, d, true, 1};
    case kFwdOut: return {w.w_out, d, d, true, 1};
    case kBwdOut: return {w.w_out, d, d, false, 1};
    case kBwdInt: return {w.w_int, d, d, false, 1};
    case kFwdIH: return {w.w_ih, w.n, 3 * d, true, 3};
    case kFwdAtt: return {w.w_hh + 3 * d * d, d, w.k, true, 1};
    case kFwdIHAtt: return {w.w_ih + 3 * d * w.n, w.n, w.k, true, 1};
    default: return {w.w_hh, 3 * d + w.k, d, false, 1};  // kBwdHH: dP [R, 3d+k] (the logits' de included)
  }
}

// ---------------------------------------------------------------------------------------------
// One BLAS call per product.
// ---------------------------------------------------------------------------------------------
// Columns of the products a column-split thread computes: units [c0, c1) of every d-wide block of
// C (the three blocks of the h W_hh^T product, the one block of the others).
struct UnitRange {
  int64_t c0, c1;
};

template <typename T>
struct BlasProducts {
  Weights<T> w;
  // C[M, N] = A[M, K] · B  (lda: A's row stride, ldc: C's)
  DIRU_INLINE void operator()(int p, int64_t M, const T* A, int64_t lda, T* C, int64_t ldc) const {
    const ProductShape<T> s = product_shape(w, p);
    // B = W^T (W [N, K]) or B = W (W [K, N]), both with W's rows contiguous
    gemm_rm<T>(false, s.transposed, M, s.n, s.k, T(1), A, lda, s.w, s.transposed ? s.k : s.n, T(0), C, ldc);
  }
  // the units [c0, c1) of every block of C
  DIRU_INLINE void operator()(int p, int64_t M, const T* A, int64_t lda, T* C, int64_t ldc, UnitRange u) const {
    const ProductShape<T> s = product_shape(w, p);
    const int64_t nb = s.n / s.blocks;
    if (u.c0 == 0 && u.c1 == nb) return (*this)(p, M, A, lda, C, ldc);
    for (int64_t blk = 0; blk < s.blocks; ++blk) {
      const int64_t c0 = blk * nb + u.c0;
      const T* b = s.transposed ? s.w + c0 * s.k : s.w + c0;  // W rows c0.. (W^T columns) or W columns c0..
      gemm_rm<T>(false, s.transposed, M, u.c1 - u.c0, s.k, T(1), A, lda, b, s.transposed ? s.k : s.n, T(0),
                 C + c0, ldc);
    }
  }
};

#if DIRU_CPU_HAVE_VECTOR_EXT
// ---------------------------------------------------------------------------------------------
// Packed panels and the micro-kernel (float32). Vec: a GCC vector of W floats; NV vectors per
// panel row (NR = NV·W columns); MR rows of A per tile.
// ---------------------------------------------------------------------------------------------
template <typename Vec, int MR, int NV>
struct PanelGemm {
  static constexpr int W = sizeof(Vec) / sizeof(float);
  static constexpr int NR = NV * W;
  // The narrow products' micro-kernel (the k attention logits: N = k, a few columns): one vector of
  // columns, 8 rows, so a panel wastes at most W - 1 columns.
  using Narrow = PanelGemm<Vec, 8, 1>;
  static bool narrow(int p) { return p == kFwdAtt || p == kFwdIHAtt; }

  static int64_t panels(int64_t n) { return (n + NR - 1) / NR; }
  // floats of packed storage for a [K, N] operand made of `blocks` column blocks of N / blocks each
  static int64_t packed_size(int64_t k, int64_t n, int64_t blocks) { return blocks * panels(n / blocks) * NR * k; }

  // Pack B[K, N] (B = W^T with W [N, K] row-major when transposed, else B = W [K, N]), block by
  // block: each block of N / blocks columns gets its own panels (zero-padded to NR), so a thread
  // can own the same units of every block.
  static void pack(const float* w, int64_t k, int64_t n, bool transposed, int64_t blocks, float* out) {
    const int64_t nb = n / blocks;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      for (int64_t p = 0; p < panels(nb); ++p) {
        const int64_t c0 = blk * nb + p * NR, cols = std::min<int64_t>(NR, nb - p * NR);
        float* panel = out + (blk * panels(nb) + p) * NR * k;
        for (int64_t kk = 0; kk < k; ++kk) {
          float* dst = panel + kk * NR;
          if (transposed) {
            for (int64_t j = 0; j < cols; ++j) dst[j] = w[(c0 + j) * k + kk];
          } else {
            std::memcpy(dst, w + kk * n + c0, sizeof(float) * cols);
          }
          for (int64_t j = cols; j < NR; ++j) dst[j] = 0.0f;
        }
      }
    }
  }

  static DIRU_INLINE void store(float* C, const Vec* acc, int64_t cols) {
    if (cols == NR) {
      for (int v = 0; v < NV; ++v) std::memcpy(C + v * W, &acc[v], sizeof(Vec));
    } else {  // the last panel of a block that is not a multiple of NR wide: the valid columns only
      float row[NR];
      for (int v = 0; v < NV; ++v) std::memcpy(row + v * W, &acc[v], sizeof(Vec));
      std::memcpy(C, row, sizeof(float) * cols);
    }
  }

  // C[rows, cols] (rows <= R, cols <= NR) = A[rows, K] · panel[K, NR]
  template <int R>
  static DIRU_INLINE void tile(const float* A, int64_t lda, const float* panel, int64_t k, float* C, int64_t ldc,
                               int rows, int64_t cols) {
    Vec acc[R][NV];
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = Vec{};
    for (int64_t kk = 0; kk < k; ++kk) {
      Vec b[NV];
      for (int v = 0; v < NV; ++v) std::memcpy(&b[v], panel + kk * NR + v * W, sizeof(Vec));
      for (int i = 0; i < R; ++i) {
        const Vec a = A[i * lda + kk] - Vec{};  // broadcast
        for (int v = 0; v < NV; ++v) acc[i][v] += a * b[v];
      }
    }
    for (int i = 0; i < rows; ++i) store(C + i * ldc, acc[i], cols);
  }

  // One row of C over P panels at once (a single row gives a tile too few independent
  // accumulators to hide the multiply-add latency): C[0, P·NR) = a[K] · panels[p0 .. p0 + P)
  template <int P>
  static DIRU_INLINE void row(const float* a, const float* panel0, int64_t k, float* C, int64_t last_cols) {
    Vec acc[P][NV];
    for (int q = 0; q < P; ++q)
      for (int v = 0; v < NV; ++v) acc[q][v] = Vec{};
    for (int64_t kk = 0; kk < k; ++kk) {
      const Vec x = a[kk] - Vec{};
      for (int q = 0; q < P; ++q) {
        Vec b[NV];
        for (int v = 0; v < NV; ++v) std::memcpy(&b[v], panel0 + (q * k + kk) * NR + v * W, sizeof(Vec));
        for (int v = 0; v < NV; ++v) acc[q][v] += x * b[v];
      }
    }
    for (int q = 0; q < P; ++q) store(C + q * NR, acc[q], q == P - 1 ? last_cols : NR);
  }

  // C[M, cols of units [c0, c1) in each block] = A[M, K] · B, B packed by pack() with `blocks`
  // blocks of nb columns; c0 is a multiple of NR (or 0), c1 <= nb.
  static DIRU_INLINE void run(const float* A, int64_t lda, int64_t M, const float* packed, int64_t k, int64_t nb,
                              int64_t blocks, float* C, int64_t ldc, int64_t c0, int64_t c1) {
    const int64_t p0 = c0 / NR, p1 = panels(c1), per_block = panels(nb);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const float* base = packed + blk * per_block * NR * k;
      float* cb = C + blk * nb;
      if (M == 1) {
        int64_t p = p0;
        for (; p + 4 <= p1; p += 4)
          row<4>(A, base + p * NR * k, k, cb + p * NR, std::min<int64_t>(NR, c1 - (p + 3) * NR));
        for (; p < p1; ++p) row<1>(A, base + p * NR * k, k, cb + p * NR, std::min<int64_t>(NR, c1 - p * NR));
        continue;
      }
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t cols = std::min<int64_t>(NR, c1 - p * NR);
        const float* panel = base + p * NR * k;
        int64_t i = 0;
        for (; i + MR <= M; i += MR) tile<MR>(A + i * lda, lda, panel, k, cb + i * ldc + p * NR, ldc, MR, cols);
        for (; i < M; ++i) tile<1>(A + i * lda, lda, panel, k, cb + i * ldc + p * NR, ldc, 1, cols);
      }
    }
  }
};

// The packed weights of one call (packed by the launcher, shared by every thread), as products.
template <typename G>
struct PackedProducts {
  const float* packed[kProducts];
  int64_t k[kProducts], nb[kProducts], blocks[kProducts];

  // all of C
  DIRU_INLINE void operator()(int p, int64_t M, const float* A, int64_t lda, float* C, int64_t ldc) const {
    if (G::narrow(p)) return G::Narrow::run(A, lda, M, packed[p], k[p], nb[p], blocks[p], C, ldc, 0, nb[p]);
    G::run(A, lda, M, packed[p], k[p], nb[p], blocks[p], C, ldc, 0, nb[p]);
  }
  // the units [c0, c1) of every block of C
  DIRU_INLINE void operator()(int p, int64_t M, const float* A, int64_t lda, float* C, int64_t ldc,
                              UnitRange u) const {
    G::run(A, lda, M, packed[p], k[p], nb[p], blocks[p], C, ldc, u.c0, u.c1);
  }
};

typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));
// AVX-512: 8 rows x 32 columns, 16 zmm accumulators. AVX2: 6 rows x 16 columns, 12 ymm accumulators.
using GemmAvx512 = PanelGemm<Vec16, 8, 2>;
using GemmAvx2 = PanelGemm<Vec8, 6, 2>;
#endif

}  // namespace diru_cpu
