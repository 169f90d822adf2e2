// The diru_fast CUDA kernels themselves (diru_scan.cu launches them): kept in a header of their
// own so that a CPU harness can run this very code, one host thread per CUDA thread, against the
// kernel contract (tests/providers/test_cuda.py). Included in one translation unit only.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace diru_fast {
namespace cuda {
namespace {


constexpr int kRows = 4;  // batch rows per block
constexpr int kThreads = 256;  // most threads per block; fewer for small d (one thread per hidden unit)

unsigned threads_for(int64_t d) {
  const int64_t warps = (d + 31) / 32;
  return static_cast<unsigned>(warps * 32 < kThreads ? warps * 32 : kThreads);
}

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

// Explicit conversions: torch builds CUDA code with __CUDA_NO_HALF_CONVERSIONS__ and friends.
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_acc(float x);
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <typename T> __device__ __forceinline__ T from_acc(double x);
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }

__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }
__device__ __forceinline__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }

// The compartment nonlinearity u = act(a) and its slope act'(a) from u (relu: [u > 0], 0 at a = 0;
// a NaN passes through relu as in torch).
template <typename acc_t> __device__ __forceinline__ acc_t activate_(bool relu, acc_t a) {
  return relu ? (a < acc_t(0) ? acc_t(0) : a) : tanh_(a);
}
template <typename acc_t> __device__ __forceinline__ acc_t slope_(bool relu, acc_t u) {
  return relu ? (u > acc_t(0) ? acc_t(1) : acc_t(0)) : acc_t(1) - u * u;
}

// The options formed in the step (the options instantiation only; all off by default): time decay from
// its rates and gaps, decay_t = exp(-rate * dt_t) per element, and compartment dropout's mask from its
// seed, the counter-based hash of diru_fast/scan/dropout.py (unit j of row r = t*B + b is kept iff
// mix32(row_key(seed, r) ^ j * 0x9E3779B9) >= threshold; kept units get `scale`). The backward then also
// writes what the gradients of the rates, the gaps and W_hh need (hd, d_rate, d_dt) and, where asked,
// the integration inputs o = u s (* k alpha_c) (* mask), the rows of W_int's gradient.
template <typename acc_t>
struct InStep {
  const acc_t* rate = nullptr;  // [d] the rates softplus(lambda) (with dt; decay must be nullptr)
  const acc_t* dt = nullptr;    // [T, B] the gaps
  bool hash_mask = false;       // the dropout mask from its seed (mask must be nullptr)
  uint32_t seed_lo = 0, seed_hi = 0, threshold = 0;
  acc_t scale = acc_t(1);       // the kept units' value, 1/(1-p)
  acc_t* hd = nullptr;          // backward with rate: [T, B, d] out, hd_t = decay_t * h_{t-1}
  acc_t* d_rate = nullptr;      // backward with rate: [blocks, d] out, each block's dL/drate
  acc_t* d_dt = nullptr;        // backward with rate: [T, B] out, dL/ddt (0 on padded steps)
  acc_t* o = nullptr;           // backward: [T, B, d] out, the integration inputs (nullptr: not written)
};

__host__ __device__ __forceinline__ uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// Row r's key of the dropout hash (r = t*B + b).
__host__ __device__ __forceinline__ uint32_t mask_row_key(uint32_t seed_lo, uint32_t seed_hi, uint64_t r) {
  return mix32(mix32(seed_lo ^ static_cast<uint32_t>(r)) ^ seed_hi ^ static_cast<uint32_t>(r >> 32));
}

// The dropout mask's value at unit c of row r: mask[r * d + c], or from the hash.
template <typename acc_t>
__device__ __forceinline__ acc_t mask_at(const acc_t* mask, const InStep<acc_t>& in, int64_t r, int64_t c, int64_t d) {
  if (in.hash_mask) {
    const uint32_t u = mix32(mask_row_key(in.seed_lo, in.seed_hi, static_cast<uint64_t>(r)) ^
                             (static_cast<uint32_t>(c) * 0x9E3779B9U));
    return u >= in.threshold ? in.scale : acc_t(0);
  }
  return mask[r * d + c];
}

// Time decay's factor at unit c of row r = t*B + b: decay[r * d + c], or exp(-rate[c] * dt[r]).
template <typename acc_t>
__device__ __forceinline__ acc_t decay_at(const acc_t* decay, const InStep<acc_t>& in, int64_t r, int64_t c,
                                          int64_t d) {
  return in.rate ? exp_(-in.rate[c] * in.dt[r]) : decay[r * d + c];
}

// Row b's length in the block starting at batch row row0 (0 for rows past the batch).
__device__ __forceinline__ int64_t row_length(const int64_t* lengths, int64_t row0, int b, int nrows, int64_t steps) {
  return b < nrows ? (lengths ? lengths[row0 + b] : steps) : 0;
}

// One output column of a matrix product for the block's kRows rows: acc[b] += sum_{i < n} in_s[b * in_ld + i] *
// w[i * ld + col] (in_s in shared memory; w row-major in global memory, one load per i for all rows).
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void add_column(acc_t (&acc)[kRows], const acc_t* in_s, int64_t in_ld, const scalar_t* w,
                                           int64_t ld, int64_t col, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const acc_t wi = to_acc(w[i * ld + col]);
#pragma unroll
    for (int b = 0; b < kRows; ++b) acc[b] += in_s[b * in_ld + i] * wi;
  }
}

// Forward. Shared memory (acc): h_s, o_s, q_s, r_s, each [kRows][d]; with kOpt also alpha_s
// [kRows][k]. kOpt = false is the plain cell (relu, k, comp, mask, decay unused; pw = 3d, sw = 4d).
// With decay, h_s holds the decayed state hd_t = decay_t * h_{t-1} during step t on rows live at
// t (padded rows keep h_{t-1}, whose step is discarded): the step's last loop writes h_t to hs and
// then decays it by decay_{t+1} in place, so no extra __syncthreads is needed (docs/THEORY.md §1.6).
template <typename scalar_t, bool kOpt>
__global__ void __launch_bounds__(kThreads, 1) diru_fwd_kernel(
    const scalar_t* __restrict__ xp,       // [T, B, 3d+k]
    const scalar_t* __restrict__ h0,       // [B, d]
    const scalar_t* __restrict__ w_hh_t,   // [d, 3d+k]
    const scalar_t* __restrict__ w_int_t,  // [d, d]
    const scalar_t* __restrict__ b_int,    // [d]
    const scalar_t* __restrict__ w_out_t,  // [d, d]
    const scalar_t* __restrict__ b_out,    // [d]
    const int64_t* __restrict__ lengths,   // [B] or nullptr
    scalar_t* __restrict__ hs,             // [T, B, d]
    typename Acc<scalar_t>::type* __restrict__ saved,  // [T, B, 4d+k] or nullptr
    int64_t steps, int64_t batch, int64_t d,
    bool relu,                             // kOpt: u = relu(a) instead of tanh(a)
    int64_t k,                             // kOpt: attention over k compartments (0: off)
    const int32_t* __restrict__ comp,      // kOpt, k > 0: [d] compartment of each unit
    const typename Acc<scalar_t>::type* __restrict__ mask,    // kOpt: [T, B, d] dropout mask or nullptr
    const typename Acc<scalar_t>::type* __restrict__ decay,   // kOpt: [T, B, d] time decay or nullptr
    const InStep<typename Acc<scalar_t>::type> in) {           // kOpt: the options formed in the step
  using acc_t = typename Acc<scalar_t>::type;
  const bool masked = kOpt && (mask || in.hash_mask);   // compartment dropout
  const bool decaying = kOpt && (decay || in.rate);     // time decay
  extern __shared__ unsigned char smem_raw[];
  acc_t* h_s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* o_s = h_s + kRows * d;
  acc_t* q_s = o_s + kRows * d;
  acc_t* r_s = q_s + kRows * d;
  acc_t* alpha_s = r_s + kRows * d;  // kOpt: [kRows][k]
  const int64_t kx = kOpt ? k : 0;  // the attention logits' extra columns in xp, w_hh_t and saved
  const int64_t pw = 3 * d + kx;    // row width of xp and w_hh_t
  const int64_t sw = 4 * d + kx;    // row width of saved

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int nrows = static_cast<int>(batch - row0 < kRows ? batch - row0 : kRows);
  int64_t len[kRows];
#pragma unroll
  for (int b = 0; b < kRows; ++b) {
    len[b] = (b < nrows) ? (lengths ? lengths[row0 + b] : steps) : 0;
  }
  for (int64_t i = threadIdx.x; i < kRows * d; i += blockDim.x) {
    const int b = static_cast<int>(i / d);
    acc_t h = (b < nrows) ? to_acc(h0[(row0 + b) * d + i % d]) : acc_t(0);
    if (decaying && steps > 0 && row_length(lengths, row0, b, nrows, steps) > 0) {
      h = h * decay_at(decay, in, row0 + b, i % d, d);  // hd_0 = decay_0 * h0 ([0, row0 + b, i % d])
    }
    h_s[i] = h;
  }
  __syncthreads();

  for (int64_t t = 0; t < steps; ++t) {
    const scalar_t* xp_t = xp + (t * batch + row0) * pw;
    acc_t* sv_t = saved ? saved + (t * batch + row0) * sw : nullptr;
    if (kOpt && k > 0) {
      // attention logits e = xp_t[:, 3d:] + h W_hh[3d:]^T [kRows][k], then alpha = softmax(e) per row
      for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
        acc_t e[kRows];
#pragma unroll
        for (int b = 0; b < kRows; ++b) e[b] = (b < nrows) ? to_acc(xp_t[b * pw + 3 * d + j]) : acc_t(0);
        add_column(e, h_s, d, w_hh_t, pw, 3 * d + j, d);
#pragma unroll
        for (int b = 0; b < kRows; ++b) alpha_s[b * k + j] = e[b];
      }
      __syncthreads();
      for (int b = threadIdx.x; b < kRows; b += blockDim.x) {
        acc_t* al = alpha_s + b * k;
        acc_t mx = al[0];
        for (int64_t j = 1; j < k; ++j) mx = al[j] > mx ? al[j] : mx;
        acc_t sum = acc_t(0);
        for (int64_t j = 0; j < k; ++j) {
          al[j] = exp_(al[j] - mx);
          sum += al[j];
        }
        const bool live = t < row_length(lengths, row0, b, nrows, steps);  // (len[b]: b is not unrolled here)
        for (int64_t j = 0; j < k; ++j) {
          al[j] = al[j] / sum;
          if (sv_t && b < nrows) sv_t[b * sw + 4 * d + j] = live ? al[j] : acc_t(0);
        }
      }
      __syncthreads();
    }
    // P = xp_t + h W_hh^T -> u, s, r; o = u*s (* k alpha_c) (* mask)
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t a[kRows], sp[kRows], rp[kRows];
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        const bool ok = b < nrows;
        a[b] = ok ? to_acc(xp_t[b * pw + c]) : acc_t(0);
        sp[b] = ok ? to_acc(xp_t[b * pw + d + c]) : acc_t(0);
        rp[b] = ok ? to_acc(xp_t[b * pw + 2 * d + c]) : acc_t(0);
      }
      for (int64_t i = 0; i < d; ++i) {
        // row i of w_hh_t starts at i * pw = i * 3d + i * kx (written so for the plain cell's code)
        const acc_t wa = to_acc(w_hh_t[i * 3 * d + i * kx + c]);
        const acc_t ws = to_acc(w_hh_t[i * 3 * d + i * kx + d + c]);
        const acc_t wr = to_acc(w_hh_t[i * 3 * d + i * kx + 2 * d + c]);
#pragma unroll
        for (int b = 0; b < kRows; ++b) {
          const acc_t hk = h_s[b * d + i];
          a[b] += hk * wa;
          sp[b] += hk * ws;
          rp[b] += hk * wr;
        }
      }
      const int32_t cc = (kOpt && k > 0) ? comp[c] : 0;
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        const bool live = t < len[b];
        const acc_t u = kOpt ? activate_(relu, a[b]) : tanh_(a[b]), s = sigmoid_(sp[b]), r = sigmoid_(rp[b]);
        acc_t o = u * s;
        if (kOpt && k > 0) o = o * (acc_t(k) * alpha_s[b * k + cc]);
        if (masked && b < nrows) o = o * mask_at(mask, in, t * batch + row0 + b, c, d);
        o_s[b * d + c] = o;
        r_s[b * d + c] = r;
        if (sv_t && b < nrows) {
          sv_t[b * sw + c] = live ? u : acc_t(0);
          sv_t[b * sw + d + c] = live ? s : acc_t(0);
          sv_t[b * sw + 3 * d + c] = live ? r : acc_t(0);
        }
      }
    }
    __syncthreads();
    // z = tanh(o W_int^T + b_int); q = z*r
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t zp[kRows];
      const acc_t bias = to_acc(b_int[c]);
#pragma unroll
      for (int b = 0; b < kRows; ++b) zp[b] = bias;
      add_column(zp, o_s, d, w_int_t, d, c, d);
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        const acc_t z = tanh_(zp[b]);
        q_s[b * d + c] = z * r_s[b * d + c];
        if (sv_t && b < nrows) sv_t[b * sw + 2 * d + c] = (t < len[b]) ? z : acc_t(0);
      }
    }
    __syncthreads();
    // h' = tanh(q W_out^T + b_out + h), selected on live rows (each thread its own columns of h_s);
    // with decay, then h_s = decay_{t+1} * h' on rows live at t+1 (the next step's hd)
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t y[kRows];
      const acc_t bias = to_acc(b_out[c]);
#pragma unroll
      for (int b = 0; b < kRows; ++b) y[b] = bias + h_s[b * d + c];
      add_column(y, q_s, d, w_out_t, d, c, d);
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        if (t < len[b]) h_s[b * d + c] = tanh_(y[b]);
        if (b < nrows) hs[(t * batch + row0 + b) * d + c] = from_acc<scalar_t>(h_s[b * d + c]);
        if (decaying && t + 1 < len[b]) h_s[b * d + c] *= decay_at(decay, in, (t + 1) * batch + row0 + b, c, d);
      }
    }
    __syncthreads();
  }
}

// Backward. Shared memory (acc): dh_s, dyp_s, dzp_s [kRows][d] and dp_s [kRows][3d+k]; with kOpt
// and k > 0 also v_s [kRows][d] (do*u*s per unit) and dalpha_s [kRows][k]; with time decay from rates
// also drate_s [d] (this block's dL/drate, each thread its own units) and red_s [kRows][blockDim.x]
// (each thread's part of dL/ddt_t per row, summed by one thread per row after the step's last
// __syncthreads: no extra barrier). kOpt = false is the
// plain cell (relu, k, comp, mask, decay unused; pw = 3d, sw = 4d). With decay the state gradient
// carried to step t-1 on live rows is decay_t * dL/dhd_t (hd_t = decay_t * h_{t-1}, the state the
// step read); padded rows pass it through unchanged (docs/THEORY.md §2.3).
template <typename scalar_t, bool kOpt>
__global__ void __launch_bounds__(kThreads, 1) diru_bwd_kernel(
    const scalar_t* __restrict__ grad_hs,  // [T, B, d]
    const scalar_t* __restrict__ hs,       // [T, B, d]
    const typename Acc<scalar_t>::type* __restrict__ saved,  // [T, B, 4d+k]
    const scalar_t* __restrict__ w_hh,     // [3d+k, d]
    const scalar_t* __restrict__ w_int,    // [d, d]
    const scalar_t* __restrict__ w_out,    // [d, d]
    const int64_t* __restrict__ lengths,   // [B] or nullptr
    typename Acc<scalar_t>::type* __restrict__ d_p,   // [T, B, 3d+k]
    typename Acc<scalar_t>::type* __restrict__ d_zp,  // [T, B, d]
    typename Acc<scalar_t>::type* __restrict__ d_yp,  // [T, B, d]
    scalar_t* __restrict__ d_h0,           // [B, d]
    int64_t steps, int64_t batch, int64_t d,
    bool relu,                             // kOpt: u = relu(a) instead of tanh(a)
    int64_t k,                             // kOpt: attention over k compartments (0: off)
    const int32_t* __restrict__ comp,      // kOpt, k > 0: [d] compartment of each unit
    const typename Acc<scalar_t>::type* __restrict__ mask,    // kOpt: [T, B, d] dropout mask or nullptr
    const typename Acc<scalar_t>::type* __restrict__ decay,   // kOpt: [T, B, d] time decay or nullptr
    const InStep<typename Acc<scalar_t>::type> in,             // kOpt: the options formed in the step
    const scalar_t* __restrict__ h0) {     // [B, d] (read with in.rate: the decayed state of step 0)
  using acc_t = typename Acc<scalar_t>::type;
  const bool masked = kOpt && (mask || in.hash_mask);   // compartment dropout
  const bool rates = kOpt && in.rate != nullptr;        // time decay from rates and gaps
  const int64_t kx = kOpt ? k : 0;  // the attention logits' extra columns in d_p, w_hh (rows) and saved
  const int64_t pw = 3 * d + kx;    // row width of d_p (and rows of w_hh)
  const int64_t sw = 4 * d + kx;    // row width of saved
  extern __shared__ unsigned char smem_raw[];
  acc_t* dh_s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* dyp_s = dh_s + kRows * d;
  acc_t* dzp_s = dyp_s + kRows * d;
  acc_t* dp_s = dzp_s + kRows * d;  // [kRows][3d+k]
  acc_t* v_s = dp_s + kRows * pw;   // kOpt, k > 0: [kRows][d]
  acc_t* dalpha_s = v_s + kRows * d;  // kOpt, k > 0: [kRows][k]
  acc_t* drate_s = kx > 0 ? dalpha_s + kRows * kx : v_s;  // rates: [d]
  acc_t* red_s = drate_s + d;                             // rates: [kRows][blockDim.x]

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int nrows = static_cast<int>(batch - row0 < kRows ? batch - row0 : kRows);
  int64_t len[kRows];
#pragma unroll
  for (int b = 0; b < kRows; ++b) {
    len[b] = (b < nrows) ? (lengths ? lengths[row0 + b] : steps) : 0;
  }
  for (int64_t i = threadIdx.x; i < kRows * d; i += blockDim.x) dh_s[i] = acc_t(0);
  if (rates) {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) drate_s[i] = acc_t(0);
  }
  __syncthreads();

  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t base = t * batch + row0;  // first row of this block at step t
    const acc_t* sv_t = saved + base * sw;
    // dh += grad_hs[t]; dyp = dh (1 - h'^2)
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        acc_t dyp = acc_t(0);
        if (b < nrows) {
          const acc_t dh = dh_s[b * d + c] + to_acc(grad_hs[(base + b) * d + c]);
          const acc_t h = to_acc(hs[(base + b) * d + c]);
          dh_s[b * d + c] = dh;
          if (t < len[b]) dyp = dh * (acc_t(1) - h * h);
          d_yp[(base + b) * d + c] = dyp;
        }
        dyp_s[b * d + c] = dyp;
      }
    }
    __syncthreads();
    // dq = dyp @ W_out -> dzp, dr
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t dq[kRows];
#pragma unroll
      for (int b = 0; b < kRows; ++b) dq[b] = acc_t(0);
      add_column(dq, dyp_s, d, w_out, d, c, d);
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        acc_t dzp = acc_t(0), dr = acc_t(0);
        if (b < nrows && t < len[b]) {
          const acc_t z = sv_t[b * sw + 2 * d + c], r = sv_t[b * sw + 3 * d + c];
          dzp = dq[b] * r * (acc_t(1) - z * z);
          dr = dq[b] * z * r * (acc_t(1) - r);
        }
        dzp_s[b * d + c] = dzp;
        dp_s[b * pw + 2 * d + c] = dr;
        if (b < nrows) {
          d_zp[(base + b) * d + c] = dzp;
          d_p[(base + b) * pw + 2 * d + c] = dr;
        }
      }
    }
    __syncthreads();
    // do = dzp @ W_int (* mask) -> dus = do (* k alpha_c) -> da, ds; v = do*u*s for dL/dalpha
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t dout[kRows];
#pragma unroll
      for (int b = 0; b < kRows; ++b) dout[b] = acc_t(0);
      add_column(dout, dzp_s, d, w_int, d, c, d);
      const int32_t cc = (kOpt && k > 0) ? comp[c] : 0;
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        acc_t da = acc_t(0), ds = acc_t(0), v = acc_t(0), o = acc_t(0);
        if (b < nrows && t < len[b]) {
          const acc_t u = sv_t[b * sw + c], s = sv_t[b * sw + d + c];
          acc_t dus = dout[b];
          const acc_t m = masked ? mask_at(mask, in, base + b, c, d) : acc_t(1);
          if (masked) dus = dus * m;
          o = u * s;  // the integration input, in the contract's order: u s, then k alpha_c, then the mask
          if (kOpt && k > 0) {
            v = dus * u * s;
            const acc_t ka = acc_t(k) * sv_t[b * sw + 4 * d + cc];
            dus = dus * ka;
            o = o * ka;
          }
          if (masked) o = o * m;
          da = dus * s * (kOpt ? slope_(relu, u) : acc_t(1) - u * u);
          ds = dus * u * s * (acc_t(1) - s);
        }
        if (kOpt && in.o && b < nrows) in.o[(base + b) * d + c] = o;
        dp_s[b * pw + c] = da;
        dp_s[b * pw + d + c] = ds;
        if (kOpt && k > 0) v_s[b * d + c] = v;
        if (b < nrows) {
          d_p[(base + b) * pw + c] = da;
          d_p[(base + b) * pw + d + c] = ds;
        }
      }
    }
    __syncthreads();
    if (kOpt && k > 0) {
      // dL/dalpha = k * per-compartment sums of v; de = alpha (dalpha - <alpha, dalpha>) (softmax
      // backward), one thread per row, summing its units in order (deterministic)
      for (int b = threadIdx.x; b < kRows; b += blockDim.x) {
        acc_t* dal = dalpha_s + b * k;
        const acc_t* al = sv_t + b * sw + 4 * d;
        const bool live = t < row_length(lengths, row0, b, nrows, steps);  // (len[b]: b is not unrolled here)
        for (int64_t j = 0; j < k; ++j) dal[j] = acc_t(0);
        for (int64_t i = 0; i < d; ++i) dal[comp[i]] += v_s[b * d + i];
        acc_t dot = acc_t(0);
        if (live) {
          for (int64_t j = 0; j < k; ++j) dot += al[j] * (acc_t(k) * dal[j]);
        }
        for (int64_t j = 0; j < k; ++j) {
          const acc_t de = live ? al[j] * (acc_t(k) * dal[j] - dot) : acc_t(0);
          dp_s[b * pw + 3 * d + j] = de;
          if (b < nrows) d_p[(base + b) * pw + 3 * d + j] = de;
        }
      }
      __syncthreads();
    }
    // dh_{t-1} = where(live, dyp + dP @ W_hh (* decay_t), dh) (each thread its own columns of dh_s).
    // With rates, acc is dL/dhd_t: hd_t = decay_t h_{t-1} goes out, g = dL/dhd_t * hd_t (live rows) adds
    // -g dt_t to dL/drate and g rate to this thread's part of -dL/ddt_t.
    acc_t part[kRows];
#pragma unroll
    for (int b = 0; b < kRows; ++b) part[b] = acc_t(0);
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t acc[kRows];
#pragma unroll
      for (int b = 0; b < kRows; ++b) acc[b] = dyp_s[b * d + c];
      add_column(acc, dp_s, pw, w_hh, d, c, pw);
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        if (rates && b < nrows) {
          const int64_t r = base + b;
          const acc_t rate = in.rate[c], gap = in.dt[r];
          const acc_t dec = exp_(-rate * gap);
          const acc_t hp = to_acc(t > 0 ? hs[(r - batch) * d + c] : h0[(row0 + b) * d + c]);
          const acc_t hd = dec * hp;
          in.hd[r * d + c] = hd;
          if (t < len[b]) {
            const acc_t g = acc[b] * hd;
            drate_s[c] += g * -gap;
            part[b] += g * rate;
            dh_s[b * d + c] = acc[b] * dec;
          }
        } else if (t < len[b]) {
          dh_s[b * d + c] = (kOpt && decay) ? acc[b] * decay[(base + b) * d + c] : acc[b];
        }
      }
    }
    if (rates) {
#pragma unroll
      for (int b = 0; b < kRows; ++b) red_s[b * blockDim.x + threadIdx.x] = part[b];
    }
    __syncthreads();
    if (rates) {  // dL/ddt_t = -(the sum of the threads' parts), in thread order (deterministic)
      for (int b = threadIdx.x; b < nrows; b += blockDim.x) {
        acc_t sum = acc_t(0);
        for (unsigned j = 0; j < blockDim.x; ++j) sum += red_s[b * blockDim.x + j];
        const bool live = t < row_length(lengths, row0, b, nrows, steps);  // (len[b]: b is not unrolled here)
        in.d_dt[(base + b)] = live ? -sum : acc_t(0);
      }
    }
  }
  if (rates) {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) in.d_rate[blockIdx.x * d + c] = drate_s[c];
  }
  for (int64_t i = threadIdx.x; i < static_cast<int64_t>(nrows) * d; i += blockDim.x) {
    d_h0[row0 * d + i] = from_acc<scalar_t>(dh_s[i]);
  }
}

}  // namespace
}  // namespace cuda
}  // namespace diru_fast
