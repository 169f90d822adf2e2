// The DIRU recurrence on CPU for one slice of the batch: the whole time loop, forward and
// backward, with the gate math fused per step (semantics: diru_fast/scan/contract.py).
//
// Batch rows are independent in the recurrence, so the launcher (diru_cpu.cpp) splits the
// batch into one slice per thread and each thread runs the full time loop on its own rows:
// no synchronisation between steps. Per step a slice of R rows does three GEMMs (BLAS) and
// three fused elementwise passes over [R, d] tiles that stay in L1/L2.
//
// Shapes (T steps, B batch rows, d hidden; every buffer row-major):
//   xp     [T, B, 3d]   x W_ih^T + b_ih of every step
//   h0     [B, d]
//   w_hh   [3d, d]      w_int, w_out [d, d]      b_int, b_out [d]
//   hs     [T, B, d]    saved [T, B, 4d] = u | s | z | r   (saved == nullptr: inference)
//   len    [B] int64 or nullptr (every step live): row b is live at step t iff t < len[b]
//   grad_hs [T, B, d] -> d_p [T, B, 3d], d_zp [T, B, d], d_yp [T, B, d], d_h0 [B, d]
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "diru_cpu_blas.h"
#include "diru_cpu_math.h"

namespace diru_cpu {

template <typename T>
struct ScanArgs {
  int64_t T_steps, B, d;
  const T* xp;
  const T* h0;
  const T* w_hh;
  const T* w_int;
  const T* b_int;
  const T* w_out;
  const T* b_out;
  const int64_t* len;  // may be null
  T* hs;
  T* saved;  // may be null (inference)
  // backward only
  const T* grad_hs;
  T* d_p;
  T* d_zp;
  T* d_yp;
  T* d_h0;
};

// Apply `body(j, count)` over the columns [0, n) of a row in lane-width pieces.
template <typename L, typename F>
DIRU_INLINE void for_lanes(int64_t n, F&& body) {
  int64_t j = 0;
  for (; j + L::kWidth <= n; j += L::kWidth) body(j, L::kWidth);
  if (j < n) body(j, static_cast<int>(n - j));
}

// ------------------------------------------------------------------------------------------
// Forward over rows [r0, r1) of every step. scratch: (r1 - r0) * 6d elements (kFwdScratch).
// ------------------------------------------------------------------------------------------
template <typename T, typename L>
DIRU_INLINE void scan_fwd_rows(const ScanArgs<T>& a, int64_t r0, int64_t r1, T* scratch) {
  using V = typename L::value;
  const int64_t d = a.d, B = a.B, R = r1 - r0;
  const int64_t d3 = 3 * d, d4 = 4 * d;
  T* pbuf = scratch;            // [R, 3d]  h_{t-1} W_hh^T
  T* obuf = pbuf + R * d3;      // [R, d]   o = u * s
  T* rbuf = obuf + R * d;       // [R, d]   r (only when nothing is saved)
  T* ybuf = rbuf + R * d;       // [R, d]   o W_int^T, then (z * r) W_out^T
  const bool save = a.saved != nullptr;

  for (int64_t t = 0; t < a.T_steps; ++t) {
    const T* h_prev = t == 0 ? a.h0 + r0 * d : a.hs + ((t - 1) * B + r0) * d;  // [R, d]
    const T* xp_t = a.xp + (t * B + r0) * d3;                                   // [R, 3d]
    T* h_t = a.hs + (t * B + r0) * d;                                            // [R, d]
    T* sv_t = save ? a.saved + (t * B + r0) * d4 : nullptr;                      // [R, 4d]

    // P = h_{t-1} W_hh^T; then u, s, r and o = u * s
    gemm_rm<T>(false, true, R, d3, d, T(1), h_prev, d, a.w_hh, d, T(0), pbuf, d3);
    for (int64_t i = 0; i < R; ++i) {
      const T* p = pbuf + i * d3;
      const T* x = xp_t + i * d3;
      T* o = obuf + i * d;
      T* u_out = save ? sv_t + i * d4 : nullptr;
      T* r_out = save ? sv_t + i * d4 + 3 * d : rbuf + i * d;
      for_lanes<L>(d, [&](int64_t j, int c) {
        V u = L::tanh(L::load(p + j, c) + L::load(x + j, c));
        V s = L::sigmoid(L::load(p + d + j, c) + L::load(x + d + j, c));
        V r = L::sigmoid(L::load(p + 2 * d + j, c) + L::load(x + 2 * d + j, c));
        L::store(o + j, u * s, c);
        L::store(r_out + j, r, c);
        if (save) {
          L::store(u_out + j, u, c);
          L::store(u_out + d + j, s, c);
        }
      });
    }

    // z = tanh(o W_int^T + b_int); q = z * r (into obuf)
    gemm_rm<T>(false, true, R, d, d, T(1), obuf, d, a.w_int, d, T(0), ybuf, d);
    for (int64_t i = 0; i < R; ++i) {
      const T* zp = ybuf + i * d;
      const T* r_in = save ? sv_t + i * d4 + 3 * d : rbuf + i * d;
      T* q = obuf + i * d;
      T* z_out = save ? sv_t + i * d4 + 2 * d : nullptr;
      for_lanes<L>(d, [&](int64_t j, int c) {
        V z = L::tanh(L::load(zp + j, c) + L::load(a.b_int + j, c));
        L::store(q + j, z * L::load(r_in + j, c), c);
        if (save) L::store(z_out + j, z, c);
      });
    }

    // h_t = tanh(q W_out^T + b_out + h_{t-1})
    gemm_rm<T>(false, true, R, d, d, T(1), obuf, d, a.w_out, d, T(0), ybuf, d);
    for (int64_t i = 0; i < R; ++i) {
      const T* y = ybuf + i * d;
      const T* hp = h_prev + i * d;
      T* h = h_t + i * d;
      for_lanes<L>(d, [&](int64_t j, int c) {
        L::store(h + j, L::tanh(L::load(y + j, c) + L::load(a.b_out + j, c) + L::load(hp + j, c)), c);
      });
    }

    // Padded steps (t >= len[b]): keep the state (selected, so nothing computed leaks) and
    // save zero gates.
    if (a.len != nullptr) {
      for (int64_t i = 0; i < R; ++i) {
        if (t < a.len[r0 + i]) continue;
        std::memcpy(h_t + i * d, h_prev + i * d, sizeof(T) * d);
        if (save) std::fill(sv_t + i * d4, sv_t + (i + 1) * d4, T(0));
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Backward over rows [r0, r1), reverse time. scratch: (r1 - r0) * 3d elements (kBwdScratch).
// ------------------------------------------------------------------------------------------
template <typename T, typename L>
DIRU_INLINE void scan_bwd_rows(const ScanArgs<T>& a, int64_t r0, int64_t r1, T* scratch) {
  using V = typename L::value;
  const int64_t d = a.d, B = a.B, R = r1 - r0;
  const int64_t d3 = 3 * d, d4 = 4 * d;
  T* dh = scratch;             // [R, d]  dL/dh_t (running)
  T* dh_next = dh + R * d;     // [R, d]  dL/dh_{t-1} being formed
  T* dq = dh_next + R * d;     // [R, d]  dL/d(z * r), then dL/do, then dP W_hh
  std::fill(dh, dh + R * d, T(0));

  for (int64_t t = a.T_steps - 1; t >= 0; --t) {
    const T* g_t = a.grad_hs + (t * B + r0) * d;   // [R, d]
    const T* h_t = a.hs + (t * B + r0) * d;        // [R, d]
    const T* sv_t = a.saved + (t * B + r0) * d4;   // [R, 4d]
    T* dp_t = a.d_p + (t * B + r0) * d3;           // [R, 3d]
    T* dzp_t = a.d_zp + (t * B + r0) * d;          // [R, d]
    T* dyp_t = a.d_yp + (t * B + r0) * d;          // [R, d]

    // dh += grad_hs[t]; dyp = dh * (1 - h_t^2)
    for (int64_t i = 0; i < R; ++i) {
      T* g = dh + i * d;
      const T* gi = g_t + i * d;
      const T* h = h_t + i * d;
      T* y = dyp_t + i * d;
      for_lanes<L>(d, [&](int64_t j, int c) {
        V acc = L::load(g + j, c) + L::load(gi + j, c);
        V hv = L::load(h + j, c);
        L::store(g + j, acc, c);
        L::store(y + j, acc * (L::splat(T(1)) - hv * hv), c);
      });
    }

    // dq = dyp W_out; dzp = dq r (1 - z^2); dr_pre = dq z r (1 - r)
    gemm_rm<T>(false, false, R, d, d, T(1), dyp_t, d, a.w_out, d, T(0), dq, d);
    for (int64_t i = 0; i < R; ++i) {
      const T* q = dq + i * d;
      const T* sv = sv_t + i * d4;
      T* dz = dzp_t + i * d;
      T* dr = dp_t + i * d3 + 2 * d;
      for_lanes<L>(d, [&](int64_t j, int c) {
        V dqv = L::load(q + j, c);
        V z = L::load(sv + 2 * d + j, c);
        V r = L::load(sv + 3 * d + j, c);
        L::store(dz + j, dqv * r * (L::splat(T(1)) - z * z), c);
        L::store(dr + j, dqv * z * r * (L::splat(T(1)) - r), c);
      });
    }

    // do = dzp W_int; da = do s (1 - u^2); ds_pre = do u s (1 - s)
    gemm_rm<T>(false, false, R, d, d, T(1), dzp_t, d, a.w_int, d, T(0), dq, d);
    for (int64_t i = 0; i < R; ++i) {
      const T* dov = dq + i * d;
      const T* sv = sv_t + i * d4;
      T* dpa = dp_t + i * d3;
      for_lanes<L>(d, [&](int64_t j, int c) {
        V g = L::load(dov + j, c);
        V u = L::load(sv + j, c);
        V s = L::load(sv + d + j, c);
        L::store(dpa + j, g * s * (L::splat(T(1)) - u * u), c);
        L::store(dpa + d + j, g * u * s * (L::splat(T(1)) - s), c);
      });
    }

    // dh_{t-1} = dyp + dP W_hh. The product goes to scratch and is added after: a BLAS call with
    // beta = 1 accumulates into the O(1) state gradient term by term, which for few rows (MKL's
    // small-matrix path) loses several bits against rounding the product once.
    gemm_rm<T>(false, false, R, d, d3, T(1), dp_t, d3, a.w_hh, d, T(0), dq, d);
    for (int64_t i = 0; i < R; ++i) {
      const T* y = dyp_t + i * d;
      const T* pw = dq + i * d;
      T* n = dh_next + i * d;
      for_lanes<L>(d, [&](int64_t j, int c) { L::store(n + j, L::load(y + j, c) + L::load(pw + j, c), c); });
    }

    // Padded steps: zero per-step gradients, the state gradient passes through unchanged.
    if (a.len != nullptr) {
      for (int64_t i = 0; i < R; ++i) {
        if (t < a.len[r0 + i]) continue;
        std::fill(dp_t + i * d3, dp_t + (i + 1) * d3, T(0));
        std::fill(dzp_t + i * d, dzp_t + (i + 1) * d, T(0));
        std::fill(dyp_t + i * d, dyp_t + (i + 1) * d, T(0));
        std::memcpy(dh_next + i * d, dh + i * d, sizeof(T) * d);
      }
    }
    std::swap(dh, dh_next);
  }
  std::memcpy(a.d_h0 + r0 * d, dh, sizeof(T) * R * d);
}

// Non-inline entry points, one per dtype (defined in diru_cpu_kernels.cpp; the float32 ones
// are compiled for several ISAs and picked at load time).
void scan_fwd_rows_f32(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch);
void scan_bwd_rows_f32(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch);
void scan_fwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch);
void scan_bwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch);

constexpr int64_t kFwdScratch = 6;  // scratch per row, in units of d
constexpr int64_t kBwdScratch = 3;  // dh, dh_next, dq

}  // namespace diru_cpu
