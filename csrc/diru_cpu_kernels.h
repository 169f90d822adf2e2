// The DIRU recurrence on CPU for one slice of the batch: the whole time loop, forward and
// backward, with the gate math fused per step (semantics: diru_fast/scan/contract.py).
//
// Batch rows are independent in the recurrence, so the launcher (diru_cpu.cpp) splits the
// batch into one slice per thread and each thread runs the full time loop on its own rows:
// no synchronisation between steps. Per step a slice of R rows does three GEMMs (BLAS) and
// three fused elementwise passes over [R, d] tiles that stay in L1/L2.
//
// Shapes (T steps, B batch rows, d hidden, k attention logits: 0 without attention; every buffer
// row-major):
//   xp     [T, B, 3d+k] x W_ih^T + b_ih of every step
//   h0     [B, d]
//   w_hh   [3d+k, d]    w_int, w_out [d, d]      b_int, b_out [d]
//   hs     [T, B, d]    saved [T, B, 4d+k] = u | s | z | r | alpha   (saved == nullptr: inference)
//   len    [B] int64 or nullptr (every step live): row b is live at step t iff t < len[b]
//   grad_hs [T, B, d] -> d_p [T, B, 3d+k], d_zp [T, B, d], d_yp [T, B, d], d_h0 [B, d]
//
// Options (docs/THEORY.md §1.2–1.6), each off by default at no cost to the plain cell:
//   relu   u = relu(a) instead of tanh(a)
//   comp   [d] int64, compartment_of (attention, k > 0): the k logits e = the last k columns of
//          P_t; the 3d-column product stays the packed one, e's h part is a product of its own
//          (kFwdAtt: w_hh's last k rows, k more packed columns; where the kernel projects x, e's x
//          part likewise, kFwdIHAtt); alpha = softmax(e) lane-wide over the slice's rows, unit j's
//          output scaled by k * alpha[comp[j]]. Backward: de W_hh[3d:] is part of the dP W_hh product.
//   mask   [T, B, d] or nullptr: o_t <- o_t * mask_t (compartment dropout)
//   hash_mask: compartment dropout with the mask of a seed (diru_fast/scan/dropout.py), evaluated in
//          the step: unit j of row (t, b) is mask_scale where mask_keeps(mask_row_key(mask_seed,
//          t*B + b), j, mask_threshold), else 0; instead of mask
//   o_out  [T, B, d] or nullptr (backward, with attention or dropout): writes o_t = u s (k alpha_c)
//          (mask_t), the rows of the w_int gradient
//   decay  [T, B, d] or nullptr: time decay, the step reads hd = decay_t * h_{t-1} wherever it reads
//          h_{t-1} (the products, the logits, the residual); a padded step keeps h_{t-1} undecayed.
//          Backward: the state gradient carried to step t-1 is decay_t * (dyp + dP W_hh)
//          (docs/THEORY.md §1.6, §2.3).
//   rate, dt [d], [T, B] or nullptr: time decay from its rates and gaps, decay_t = exp(-rate * dt_t)
//          formed in the step (one exp per element; nothing [T, B, d] read); instead of decay. The
//          backward then also writes what the decay's gradient needs: hd_out [T, B, d] (the decayed
//          states, the rows of the w_hh gradient), d_dt [T, B] = dL/ddt and d_rate_rows [B, d] (per
//          row, dL/drate summed over the steps), from dL/dhd_t = dyp + dP W_hh times hd_t.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "diru_cpu_blas.h"
#include "diru_cpu_gemm.h"
#include "diru_cpu_math.h"

namespace diru_cpu {

template <typename T>
struct ScanArgs {
  int64_t T_steps, B, d;
  const T* xp;  // [T, B, 3d]; null when the kernel projects x itself (inference):
  const T* x = nullptr;     // [T, B, n]
  const T* w_ih = nullptr;  // [3d, n]
  const T* b_ih = nullptr;  // [3d]
  int64_t n = 0;
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
  // options
  bool relu = false;
  int64_t k = 0;                   // attention logits (0: no attention)
  const int64_t* comp = nullptr;   // [d] compartment of each unit, when k > 0
  const T* mask = nullptr;         // [T, B, d] or null
  const T* decay = nullptr;        // [T, B, d] or null
  const T* rate = nullptr;         // [d] or null: decay_t = exp(-rate * dt_t) (with dt)
  const T* dt = nullptr;           // [T, B]
  T* hd_out = nullptr;             // backward with rate: [T, B, d] hd_t
  T* d_dt = nullptr;               //                     [T, B]
  T* d_rate_rows = nullptr;        //                     [B, d]
  bool hash_mask = false;
  uint64_t mask_seed = 0;
  uint32_t mask_threshold = 0;
  T mask_scale = T(1);
  T* o_out = nullptr;              // backward: [T, B, d] o_t, or null
};

// The dropout mask's values of units [j, j + c) of row (t, b), times f: lanes of f * mask_t.
template <typename L, typename T>
DIRU_INLINE typename L::value masked(const ScanArgs<T>& a, const T* mask_row, uint32_t key, int64_t j, int c,
                                     typename L::value f) {
  if (mask_row != nullptr) return f * L::load(mask_row + j, c);
  if (a.hash_mask) return f * L::keep(key, j, a.mask_threshold, a.mask_scale);
  return f;
}

// Row (t, b)'s decay factors over units [j, j + c): decay_t (given) or exp(-rate * dt_t) (formed).
template <typename L, typename T>
DIRU_INLINE typename L::value decay_factors(const ScanArgs<T>& a, int64_t t, int64_t b, int64_t j, int c) {
  if (a.decay != nullptr) return L::load(a.decay + (t * a.B + b) * a.d + j, c);
  return L::exp(-L::load(a.rate + j, c) * L::splat(a.dt[t * a.B + b]));
}

// The sum of a lane vector's values, as a tree (log2 of the width dependent adds, not the width).
template <typename L>
DIRU_INLINE typename L::scalar lane_sum(typename L::value v) {
  return L::sum(v);
}

// The attention softmax over each row of e [R, k] in place (each row's max subtracted first; the
// exponentials lane-wide over all R*k logits).
template <typename L, typename T>
DIRU_INLINE void softmax_rows(T* e, int64_t R, int64_t k) {
  for (int64_t i = 0; i < R; ++i) {
    T* row = e + i * k;
    T m = row[0];
    for (int64_t c = 1; c < k; ++c) m = row[c] > m ? row[c] : m;
    for (int64_t c = 0; c < k; ++c) row[c] -= m;
  }
  for_lanes<L>(R * k, [&](int64_t j, int c) { L::store(e + j, L::exp(L::load(e + j, c)), c); });
  for (int64_t i = 0; i < R; ++i) {
    T* row = e + i * k;
    T sum = T(0);
    for (int64_t c = 0; c < k; ++c) sum += row[c];
    for (int64_t c = 0; c < k; ++c) row[c] /= sum;
  }
}

// The units of a call as runs of consecutive units in one compartment: (j0, j1, c) triples, so
// the per-compartment factors and sums run lane-wide (compartment_of is usually contiguous: k
// runs). Without attention, one run [0, d) of compartment -1.
inline std::vector<int64_t> compartment_runs(const int64_t* comp, int64_t d, int64_t k) {
  std::vector<int64_t> runs;
  if (k == 0) return {0, d, -1};
  for (int64_t j = 0; j < d; ++j) {
    if (j == 0 || comp[j] != comp[j - 1]) {
      runs.insert(runs.end(), {j, j + 1, comp[j]});
    } else {
      runs[runs.size() - 2] = j + 1;  // extend the current run
    }
  }
  return runs;
}

// Apply `body(j, count)` over the columns [0, n) of a row in lane-width pieces.
template <typename L, typename F>
DIRU_INLINE void for_lanes(int64_t n, F&& body) {
  int64_t j = 0;
  for (; j + L::kWidth <= n; j += L::kWidth) body(j, L::kWidth);
  if (j < n) body(j, static_cast<int>(n - j));
}

// ------------------------------------------------------------------------------------------
// Forward over rows [r0, r1) and units [u.c0, u.c1) of every step. Two ways to share a call:
//   batch slices:  each thread owns rows [r0, r1) and all d units; scratch is its own; sync() is a
//                  no-op (rows are independent in the recurrence).
//   column split:  each thread owns units [c0, c1) of every product (and of the state) for all
//                  rows; scratch is shared; sync() is a barrier of all threads, at the three points
//                  where a product needs every unit of its input (o, q, then h_t for the next step).
// scratch: (r1 - r0) * 10d elements (kFwdScratch). prod: the per-step products (diru_cpu_gemm.h).
// ------------------------------------------------------------------------------------------
template <typename T, typename L, typename P, typename Sync>
DIRU_INLINE void scan_fwd_part(const ScanArgs<T>& a, const P& prod, int64_t r0, int64_t r1, UnitRange u,
                               T* scratch, const Sync& sync) {
  using V = typename L::value;
  const int64_t d = a.d, B = a.B, R = r1 - r0, k = a.k;
  const int64_t d3 = 3 * d, d4 = 4 * d + k;  // d4: saved's row stride
  const int64_t c0 = u.c0, width = u.c1 - u.c0;
  T* pbuf = scratch;            // [R, 3d]  h_{t-1} W_hh^T
  T* obuf = pbuf + R * d3;      // [R, d]   o = u * s
  T* qbuf = obuf + R * d;       // [R, d]   q = z * r
  T* rbuf = qbuf + R * d;       // [R, d]   r (only when nothing is saved)
  T* ybuf = rbuf + R * d;       // [R, d]   o W_int^T, then q W_out^T
  T* xbuf = ybuf + R * d;       // [R, 3d]  x_t W_ih^T + b_ih (when the kernel projects x itself)
  const bool save = a.saved != nullptr, project = a.x != nullptr;
  const int64_t xs = project ? d3 : d3 + k;  // the row stride of this step's projections
  // Options: g [R, d], the per-unit factor of o (k alpha_c, times the mask), for this thread's
  // units; alpha [R, k] (column split: every thread computes all of it, one writes it to saved).
  const bool relu = a.relu, scaled = k > 0 || a.mask != nullptr || a.hash_mask;
  std::vector<T> opt_buf(scaled ? R * (d + 2 * k) : 0);
  T* gbuf = opt_buf.data();
  T* abuf = gbuf + R * d;   // [R, k] e, then alpha
  T* xabuf = abuf + R * k;  // [R, k] e's x part (when the kernel projects x)
  const std::vector<int64_t> runs = scaled ? compartment_runs(a.comp, d, k) : std::vector<int64_t>();
  // Time decay: this thread's copy of the decayed state hd [R, d] (column split: all units, the
  // products read whole rows)
  const bool decaying = a.decay != nullptr || a.rate != nullptr;
  std::vector<T> decay_buf(decaying ? R * d : 0);
  // With rates and gaps: each row's factors exp(-rate * dt) [R, d], formed again only when its gap
  // changes (the same gap gives the same factors, bit for bit; a regular series has one gap)
  std::vector<T> factor_buf(a.rate != nullptr ? R * d : 0);
  std::vector<T> factor_dt(a.rate != nullptr ? R : 0);  // the gap each row's factors are of

  for (int64_t t = 0; t < a.T_steps; ++t) {
    const T* h_prev = t == 0 ? a.h0 + r0 * d : a.hs + ((t - 1) * B + r0) * d;  // [R, d]
    const T* h_in = h_prev;  // the state the step reads: h_{t-1}, or hd = decay_t * h_{t-1}
    if (decaying) {
      for (int64_t i = 0; i < R; ++i) {
        T* hd = decay_buf.data() + i * d;
        const T* hp = h_prev + i * d;
        if (a.rate != nullptr) {
          T* f = factor_buf.data() + i * d;
          const T gap = a.dt[t * a.B + r0 + i];
          if (t == 0 || std::memcmp(&gap, &factor_dt[i], sizeof(T)) != 0) {
            factor_dt[i] = gap;
            for_lanes<L>(d, [&](int64_t j, int c) { L::store(f + j, decay_factors<L>(a, t, r0 + i, j, c), c); });
          }
          for_lanes<L>(d, [&](int64_t j, int c) { L::store(hd + j, L::load(f + j, c) * L::load(hp + j, c), c); });
          continue;
        }
        for_lanes<L>(d, [&](int64_t j, int c) {
          L::store(hd + j, decay_factors<L>(a, t, r0 + i, j, c) * L::load(hp + j, c), c);
        });
      }
      h_in = decay_buf.data();
    }
    T* h_t = a.hs + (t * B + r0) * d;                                            // [R, d]
    T* sv_t = save ? a.saved + (t * B + r0) * d4 : nullptr;                      // [R, 4d]
    const T* xp_t = project ? xbuf : a.xp + (t * B + r0) * xs;                 // [R, 3d(+k)]
    if (project) {  // this step's input projection only: it stays in cache
      prod(kFwdIH, R, a.x + (t * B + r0) * a.n, a.n, xbuf, d3, u);
      for (int64_t i = 0; i < R; ++i)
        for (int64_t g = 0; g < 3; ++g) {
          T* xr = xbuf + i * d3 + g * d + c0;
          const T* b = a.b_ih + g * d + c0;
          for_lanes<L>(width, [&](int64_t j, int c) { L::store(xr + j, L::load(xr + j, c) + L::load(b + j, c), c); });
        }
    }

    // Options: alpha = softmax(e), e = xp_t[3d:] + h_{t-1} W_hh[3d:]^T (all k logits in every
    // thread of a column split); g = k alpha_c (* mask_t)
    if (k > 0) {
      prod(kFwdAtt, R, h_in, d, abuf, k);
      if (project) prod(kFwdIHAtt, R, a.x + (t * B + r0) * a.n, a.n, xabuf, k);
      for (int64_t i = 0; i < R; ++i)
        for (int64_t c = 0; c < k; ++c)
          abuf[i * k + c] += project ? xabuf[i * k + c] + a.b_ih[d3 + c] : xp_t[i * xs + d3 + c];
      softmax_rows<L>(abuf, R, k);
    }
    if (scaled) {
      const T* mask_t = a.mask != nullptr ? a.mask + (t * B + r0) * d : nullptr;  // [R, d]
      for (int64_t i = 0; i < R; ++i) {
        T* e = abuf + i * k;
        if (k > 0 && save && c0 == 0) std::memcpy(sv_t + i * d4 + 4 * d, e, sizeof(T) * k);
        const uint32_t key = a.hash_mask ? mask_row_key(a.mask_seed, t * B + r0 + i) : 0;
        for (size_t q = 0; q < runs.size(); q += 3) {  // g over this thread's units of each run
          const int64_t j0 = std::max(runs[q], c0), j1 = std::min(runs[q + 1], u.c1);
          if (j0 >= j1) continue;
          // g = k alpha_c, times the mask: k and alpha_c broadcast, then multiplied (the product
          // broadcast became sixteen dependent masked broadcasts, 7% of the step; same bits)
          T* g = gbuf + i * d;
          const V ka = k > 0 ? L::splat(T(k)) * L::splat(e[runs[q + 2]]) : L::splat(T(1));
          const T* m = mask_t != nullptr ? mask_t + i * d : nullptr;
          for_lanes<L>(j1 - j0, [&](int64_t j, int c) { L::store(g + j0 + j, masked<L>(a, m, key, j0 + j, c, ka), c); });
        }
      }
    }

    // P = h_{t-1} W_hh^T (hd with time decay); then u, s, r and o = u * s (* g)
    prod(kFwdHH, R, h_in, d, pbuf, d3, u);
    for (int64_t i = 0; i < R; ++i) {
      const T* p = pbuf + i * d3 + c0;
      const T* x = xp_t + i * xs + c0;
      const T* gi = gbuf + i * d + c0;
      T* o = obuf + i * d + c0;
      T* u_out = save ? sv_t + i * d4 + c0 : nullptr;
      T* r_out = save ? sv_t + i * d4 + 3 * d + c0 : rbuf + i * d + c0;
      for_lanes<L>(width, [&](int64_t j, int c) {
        const V pa = L::load(p + j, c) + L::load(x + j, c);
        V uu = relu ? L::relu(pa) : L::tanh(pa);
        V s = L::sigmoid(L::load(p + d + j, c) + L::load(x + d + j, c));
        V r = L::sigmoid(L::load(p + 2 * d + j, c) + L::load(x + 2 * d + j, c));
        L::store(o + j, scaled ? uu * s * L::load(gi + j, c) : uu * s, c);
        L::store(r_out + j, r, c);
        if (save) {
          L::store(u_out + j, uu, c);
          L::store(u_out + d + j, s, c);
        }
      });
    }
    sync();

    // z = tanh(o W_int^T + b_int); q = z * r
    prod(kFwdInt, R, obuf, d, ybuf, d, u);
    for (int64_t i = 0; i < R; ++i) {
      const T* zp = ybuf + i * d + c0;
      const T* r_in = save ? sv_t + i * d4 + 3 * d + c0 : rbuf + i * d + c0;
      const T* bi = a.b_int + c0;
      T* q = qbuf + i * d + c0;
      T* z_out = save ? sv_t + i * d4 + 2 * d + c0 : nullptr;
      for_lanes<L>(width, [&](int64_t j, int c) {
        V z = L::tanh(L::load(zp + j, c) + L::load(bi + j, c));
        L::store(q + j, z * L::load(r_in + j, c), c);
        if (save) L::store(z_out + j, z, c);
      });
    }
    sync();

    // h_t = tanh(q W_out^T + b_out + h_{t-1}) (hd with time decay)
    prod(kFwdOut, R, qbuf, d, ybuf, d, u);
    for (int64_t i = 0; i < R; ++i) {
      const T* y = ybuf + i * d + c0;
      const T* hp = h_in + i * d + c0;
      const T* bo = a.b_out + c0;
      T* h = h_t + i * d + c0;
      for_lanes<L>(width, [&](int64_t j, int c) {
        L::store(h + j, L::tanh(L::load(y + j, c) + L::load(bo + j, c) + L::load(hp + j, c)), c);
      });
    }

    // Padded steps (t >= len[b]): keep the state, undecayed (selected, so nothing computed leaks),
    // and save zero gates.
    if (a.len != nullptr) {
      for (int64_t i = 0; i < R; ++i) {
        if (t < a.len[r0 + i]) continue;
        std::memcpy(h_t + i * d + c0, h_prev + i * d + c0, sizeof(T) * width);
        if (save) {
          for (int64_t g = 0; g < 4; ++g) std::fill(sv_t + i * d4 + g * d + c0, sv_t + i * d4 + g * d + c0 + width, T(0));
          if (c0 == 0) std::fill(sv_t + i * d4 + 4 * d, sv_t + (i + 1) * d4, T(0));  // alpha
        }
      }
    }
    sync();
  }
}

struct NoSync {
  DIRU_INLINE void operator()() const {}
};

// A barrier for the threads of one column-split call (all running at once: one OpenMP team).
// Sense-reversing: the last thread to arrive resets the count and flips the phase the others spin
// on. A few hundred nanoseconds on this project's machines, three times per step.
class SpinBarrier {
 public:
  explicit SpinBarrier(int threads) : threads_(threads) {}
  void wait() {
    const int phase = phase_.load(std::memory_order_relaxed);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads_) {
      arrived_.store(0, std::memory_order_relaxed);
      phase_.store(phase + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
      if (spins > 4000) std::this_thread::yield();  // a descheduled peer: stop burning its core
#if defined(__x86_64__) || defined(__i386__)
      else __builtin_ia32_pause();
#endif
    }
  }

 private:
  const int threads_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> phase_{0};
};

// Forward over rows [r0, r1) of every step, all units (batch slices).
template <typename T, typename L, typename P>
DIRU_INLINE void scan_fwd_rows(const ScanArgs<T>& a, const P& prod, int64_t r0, int64_t r1, T* scratch) {
  scan_fwd_part<T, L>(a, prod, r0, r1, UnitRange{0, a.d}, scratch, NoSync{});
}

// ------------------------------------------------------------------------------------------
// Backward over rows [r0, r1), reverse time. scratch: (r1 - r0) * 3d elements (kBwdScratch).
// (d3, d4 below are d_p's and saved's row strides: 3d + k, 4d + k.)
// ------------------------------------------------------------------------------------------
template <typename T, typename L, typename P>
DIRU_INLINE void scan_bwd_rows(const ScanArgs<T>& a, const P& prod, int64_t r0, int64_t r1, T* scratch) {
  using V = typename L::value;
  const int64_t d = a.d, B = a.B, R = r1 - r0, k = a.k;
  const int64_t d3 = 3 * d + k, d4 = 4 * d + k;  // the row strides of d_p and saved
  const bool relu = a.relu, scaled = k > 0 || a.mask != nullptr || a.hash_mask;
  std::vector<T> opt_buf(scaled ? d + k : 0);  // one row's dL/d(u s) = do * mask * k alpha_c, and dL/dalpha
  T* dmrow = opt_buf.data();
  T* darow = dmrow + d;
  const std::vector<int64_t> runs = scaled ? compartment_runs(a.comp, d, k) : std::vector<int64_t>();
  // attention: each run's lane-wide sum of do u s, reduced four runs at a time (L::sum4) after the runs
  const size_t n_runs = runs.size() / 3;
  // (stored as lanes of T and read back with L::load: a std::vector<V> here crashed intermittently;
  // its out-of-line members are not compiled for this ISA)
  std::vector<T> run_acc(k > 0 ? (n_runs + 3) / 4 * 4 * L::kWidth : 0, T(0));
  T* dh = scratch;             // [R, d]  dL/dh_t (running)
  T* dh_next = dh + R * d;     // [R, d]  dL/dh_{t-1} being formed
  T* dq = dh_next + R * d;     // [R, d]  dL/d(z * r), then dL/do, then dP W_hh
  std::fill(dh, dh + R * d, T(0));
  if (a.d_rate_rows != nullptr) std::fill(a.d_rate_rows + r0 * d, a.d_rate_rows + r1 * d, T(0));

  for (int64_t t = a.T_steps - 1; t >= 0; --t) {
    const T* g_t = a.grad_hs + (t * B + r0) * d;   // [R, d]
    const T* h_t = a.hs + (t * B + r0) * d;        // [R, d]
    const T* sv_t = a.saved + (t * B + r0) * d4;   // [R, 4d]
    T* dp_t = a.d_p + (t * B + r0) * d3;           // [R, 3d+k]
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
    prod(kBwdOut, R, dyp_t, d, dq, d);
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

    // do = dzp W_int; (options: do <- do * mask_t, dL/d(u s) = do * k alpha_c, dL/dalpha_c = k * the
    // sum of do u s over compartment c's units, de = the softmax backward of it)
    // da = dL/d(u s) s act'(a); ds_pre = dL/d(u s) u s (1 - s)
    prod(kBwdInt, R, dzp_t, d, dq, d);
    for (int64_t i = 0; i < R; ++i) {
      const T* dov = dq + i * d;
      const T* sv = sv_t + i * d4;
      T* dpa = dp_t + i * d3;
      if (scaled) {
        const T* mask_i = a.mask != nullptr ? a.mask + (t * B + r0 + i) * d : nullptr;
        const uint32_t key = a.hash_mask ? mask_row_key(a.mask_seed, t * B + r0 + i) : 0;
        const T* alpha = sv + 4 * d;
        T* o_row = a.o_out != nullptr ? a.o_out + (t * B + r0 + i) * d : nullptr;
        std::fill(darow, darow + k, T(0));
        for (size_t q = 0; q < runs.size(); q += 3) {  // per run: dm = do * mask; dm k alpha_c; sum of dm u s
          const int64_t j0 = runs[q], c_run = runs[q + 2];
          const T *dv = dov + j0, *uv = sv + j0, *svv = sv + d + j0;
          T* out = dmrow + j0;
          const V ka = k > 0 ? L::splat(T(k)) * L::splat(alpha[c_run]) : L::splat(T(1));  // k alpha_c
          V acc = L::splat(T(0));
          for_lanes<L>(runs[q + 1] - j0, [&](int64_t j, int c) {
            const V mv = masked<L>(a, mask_i, key, j0 + j, c, L::splat(T(1)));
            const V dm = L::load(dv + j, c) * mv;
            const V us = L::load(uv + j, c) * L::load(svv + j, c);
            acc += dm * us;
            L::store(out + j, dm * ka, c);
            if (o_row != nullptr) L::store(o_row + j0 + j, us * ka * mv, c);
          });
          if (k > 0) L::store(run_acc.data() + q / 3 * L::kWidth, acc, L::kWidth);
        }
        if (k > 0) {
          for (size_t q = 0; q < n_runs; q += 4) {
            T sums[4];
            const T* ra = run_acc.data() + q * L::kWidth;
            L::sum4(L::load(ra, L::kWidth), L::load(ra + L::kWidth, L::kWidth), L::load(ra + 2 * L::kWidth, L::kWidth),
                    L::load(ra + 3 * L::kWidth, L::kWidth), sums);
            for (size_t m = q; m < std::min(n_runs, q + 4); ++m) darow[runs[3 * m + 2]] += sums[m - q];
          }
          T dot_alpha = T(0);
          for (int64_t c = 0; c < k; ++c) {
            darow[c] *= T(k);
            dot_alpha += alpha[c] * darow[c];
          }
          for (int64_t c = 0; c < k; ++c) dpa[3 * d + c] = alpha[c] * (darow[c] - dot_alpha);
        }
        dov = dmrow;
      }
      for_lanes<L>(d, [&](int64_t j, int c) {
        V g = L::load(dov + j, c);  // dL/d(u s)
        V u = L::load(sv + j, c);
        V s = L::load(sv + d + j, c);
        L::store(dpa + j, relu ? g * s * L::positive(u) : g * s * (L::splat(T(1)) - u * u), c);
        L::store(dpa + d + j, g * u * s * (L::splat(T(1)) - s), c);
      });
    }

    // dh_{t-1} = dyp + dP W_hh. The product goes to scratch and is added after: a BLAS call with
    // beta = 1 accumulates into the O(1) state gradient term by term, which for few rows (MKL's
    // small-matrix path) loses several bits against rounding the product once.
    // With attention the product runs over all 3d + k columns of dP (the logits' de W_hh[3d:] too).
    // Time decay: that sum is dL/dhd, and dh_{t-1} = decay_t * dL/dhd (applied below).
    prod(kBwdHH, R, dp_t, d3, dq, d);
    for (int64_t i = 0; i < R; ++i) {
      const T* y = dyp_t + i * d;
      const T* pw = dq + i * d;
      T* n = dh_next + i * d;
      for_lanes<L>(d, [&](int64_t j, int c) { L::store(n + j, L::load(y + j, c) + L::load(pw + j, c), c); });
      if (a.rate != nullptr) {  // n = dL/dhd: the decay's gradient terms, then n <- decay_t * n
        const int64_t b = r0 + i;
        const bool live = a.len == nullptr || t < a.len[b];
        const T* hp = (t == 0 ? a.h0 + b * d : a.hs + ((t - 1) * B + b) * d);
        T* hd_row = a.hd_out + (t * B + b) * d;
        T* dr = a.d_rate_rows + b * d;
        const V dt = L::splat(a.dt[t * B + b]), neg_dt = -dt;
        V acc = L::splat(T(0));
        for_lanes<L>(d, [&](int64_t j, int c) {
          const V rate = L::load(a.rate + j, c);
          const V dec = L::exp(-rate * dt);
          const V hd = dec * L::load(hp + j, c);
          const V dhd = L::load(n + j, c);
          L::store(hd_row + j, hd, c);
          if (live) {
            const V g = dhd * hd;  // dL/ddecay * decay: d decay / d(-rate dt) = decay
            L::store(dr + j, L::load(dr + j, c) + g * neg_dt, c);
            acc += g * rate;
          }
          L::store(n + j, dhd * dec, c);
        });
        a.d_dt[t * B + b] = live ? -lane_sum<L>(acc) : T(0);
      } else if (a.decay != nullptr) {
        const T* dec = a.decay + (t * B + r0 + i) * d;
        for_lanes<L>(d, [&](int64_t j, int c) { L::store(n + j, L::load(n + j, c) * L::load(dec + j, c), c); });
      }
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

// Non-inline entry points (defined in diru_cpu_kernels.cpp). float32 runs on one of three
// instruction sets, picked once at load time (best_isa) or forced (DIRU_FAST_CPU_ISA / set_isa):
// the packed micro-kernel products on AVX-512 or AVX2, or BLAS calls. float64 always uses BLAS.
enum class Isa : int { kBlas = 0, kAvx2 = 1, kAvx512 = 2 };

// The packed weights of one call, for the packed ISAs: product p's panels and shape.
struct PackedWeights {
  const float* panels[kProducts];
  int64_t k[kProducts], nb[kProducts], blocks[kProducts];
};

struct F32Kernels {
  Isa isa;
  const char* name;
  int64_t panel_width;  // NR: column-split threads own multiples of it (0: this ISA does not pack)
  int64_t (*packed_size)(int p, int64_t k, int64_t n, int64_t blocks);  // product p's
  void (*pack)(int p, const float* w, int64_t k, int64_t n, bool transposed, int64_t blocks, float* out);
  // batch slices [r0, r1), packed products
  void (*fwd)(const ScanArgs<float>& a, const PackedWeights& w, int64_t r0, int64_t r1, float* scratch);
  void (*bwd)(const ScanArgs<float>& a, const PackedWeights& w, int64_t r0, int64_t r1, float* scratch);
  // batch slices [r0, r1), BLAS products with this ISA's elementwise code (calls too small to pack for)
  void (*fwd_unpacked)(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch);
  void (*bwd_unpacked)(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch);
  // column split: called by each thread of one team (all running at once) for its units [c0, c1);
  // scratch is shared (B * kFwdScratch * d), the barrier is the team's
  void (*fwd_cols)(const ScanArgs<float>& a, const PackedWeights& w, int64_t c0, int64_t c1, float* scratch,
                   SpinBarrier& barrier);
};

Isa best_isa();                       // the widest this CPU (and this build) runs
bool isa_supported(Isa isa);
const F32Kernels& f32_kernels(Isa isa);
Isa& active_isa();                     // what the launcher uses (best_isa() unless overridden)

void scan_fwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch);
void scan_bwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch);

constexpr int64_t kFwdScratch = 10;  // scratch per row, in units of d: p (3), o, q, r, y, x W_ih^T (3)
constexpr int64_t kBwdScratch = 3;  // dh, dh_next, dq

}  // namespace diru_cpu
