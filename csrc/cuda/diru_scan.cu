// diru_fast CUDA kernels: persistent forward and reverse-time backward of one DIRU layer and
// direction (the same algorithm as the Triton kernels in kernels/, for GPUs without Triton).
//
// Grid: ceil(B / kRows) blocks of min(256, d rounded up to a warp) threads. Block i owns batch rows
// [i*kRows, (i+1)*kRows) for all T steps; its state lives in shared memory in the accumulation
// type (float, or double for double inputs). Per step each thread owns output units
// c = tid, tid + blockDim.x, ... and computes them for all kRows rows, reading each weight element
// once per block and step (coalesced across threads, L2-resident) and the left operand (h, o,
// q, ...) from shared memory (a broadcast read). Three __syncthreads separate the three
// dependent products of a step. Products run on CUDA cores (FMA), not tensor cores: this is
// the fallback used where Triton is not installed.
#include "diru_scan.cuh"

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

// Forward. Shared memory (acc): h_s, o_s, q_s, r_s, each [kRows][d].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 1) diru_fwd_kernel(
    const scalar_t* __restrict__ xp,       // [T, B, 3d]
    const scalar_t* __restrict__ h0,       // [B, d]
    const scalar_t* __restrict__ w_hh_t,   // [d, 3d]
    const scalar_t* __restrict__ w_int_t,  // [d, d]
    const scalar_t* __restrict__ b_int,    // [d]
    const scalar_t* __restrict__ w_out_t,  // [d, d]
    const scalar_t* __restrict__ b_out,    // [d]
    const int64_t* __restrict__ lengths,   // [B] or nullptr
    scalar_t* __restrict__ hs,             // [T, B, d]
    typename Acc<scalar_t>::type* __restrict__ saved,  // [T, B, 4d] or nullptr
    int64_t steps, int64_t batch, int64_t d) {
  using acc_t = typename Acc<scalar_t>::type;
  extern __shared__ unsigned char smem_raw[];
  acc_t* h_s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* o_s = h_s + kRows * d;
  acc_t* q_s = o_s + kRows * d;
  acc_t* r_s = q_s + kRows * d;

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int nrows = static_cast<int>(batch - row0 < kRows ? batch - row0 : kRows);
  int64_t len[kRows];
#pragma unroll
  for (int b = 0; b < kRows; ++b) {
    len[b] = (b < nrows) ? (lengths ? lengths[row0 + b] : steps) : 0;
  }
  for (int64_t i = threadIdx.x; i < kRows * d; i += blockDim.x) {
    const int b = static_cast<int>(i / d);
    h_s[i] = (b < nrows) ? to_acc(h0[(row0 + b) * d + i % d]) : acc_t(0);
  }
  __syncthreads();

  for (int64_t t = 0; t < steps; ++t) {
    const scalar_t* xp_t = xp + (t * batch + row0) * 3 * d;
    acc_t* sv_t = saved ? saved + (t * batch + row0) * 4 * d : nullptr;
    // P = xp_t + h W_hh^T -> u, s, r; o = u*s
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t a[kRows], sp[kRows], rp[kRows];
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        const bool ok = b < nrows;
        a[b] = ok ? to_acc(xp_t[b * 3 * d + c]) : acc_t(0);
        sp[b] = ok ? to_acc(xp_t[b * 3 * d + d + c]) : acc_t(0);
        rp[b] = ok ? to_acc(xp_t[b * 3 * d + 2 * d + c]) : acc_t(0);
      }
      for (int64_t k = 0; k < d; ++k) {
        const acc_t wa = to_acc(w_hh_t[k * 3 * d + c]);
        const acc_t ws = to_acc(w_hh_t[k * 3 * d + d + c]);
        const acc_t wr = to_acc(w_hh_t[k * 3 * d + 2 * d + c]);
#pragma unroll
        for (int b = 0; b < kRows; ++b) {
          const acc_t hk = h_s[b * d + k];
          a[b] += hk * wa;
          sp[b] += hk * ws;
          rp[b] += hk * wr;
        }
      }
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        const bool live = t < len[b];
        const acc_t u = tanh_(a[b]), s = sigmoid_(sp[b]), r = sigmoid_(rp[b]);
        o_s[b * d + c] = u * s;
        r_s[b * d + c] = r;
        if (sv_t && b < nrows) {
          sv_t[b * 4 * d + c] = live ? u : acc_t(0);
          sv_t[b * 4 * d + d + c] = live ? s : acc_t(0);
          sv_t[b * 4 * d + 3 * d + c] = live ? r : acc_t(0);
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
      for (int64_t k = 0; k < d; ++k) {
        const acc_t w = to_acc(w_int_t[k * d + c]);
#pragma unroll
        for (int b = 0; b < kRows; ++b) zp[b] += o_s[b * d + k] * w;
      }
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        const acc_t z = tanh_(zp[b]);
        q_s[b * d + c] = z * r_s[b * d + c];
        if (sv_t && b < nrows) sv_t[b * 4 * d + 2 * d + c] = (t < len[b]) ? z : acc_t(0);
      }
    }
    __syncthreads();
    // h' = tanh(q W_out^T + b_out + h), selected on live rows (each thread its own columns of h_s)
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t y[kRows];
      const acc_t bias = to_acc(b_out[c]);
#pragma unroll
      for (int b = 0; b < kRows; ++b) y[b] = bias + h_s[b * d + c];
      for (int64_t k = 0; k < d; ++k) {
        const acc_t w = to_acc(w_out_t[k * d + c]);
#pragma unroll
        for (int b = 0; b < kRows; ++b) y[b] += q_s[b * d + k] * w;
      }
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        if (t < len[b]) h_s[b * d + c] = tanh_(y[b]);
        if (b < nrows) hs[(t * batch + row0 + b) * d + c] = from_acc<scalar_t>(h_s[b * d + c]);
      }
    }
    __syncthreads();
  }
}

// Backward. Shared memory (acc): dh_s, dyp_s, dzp_s [kRows][d] and dp_s [kRows][3d].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 1) diru_bwd_kernel(
    const scalar_t* __restrict__ grad_hs,  // [T, B, d]
    const scalar_t* __restrict__ hs,       // [T, B, d]
    const typename Acc<scalar_t>::type* __restrict__ saved,  // [T, B, 4d]
    const scalar_t* __restrict__ w_hh,     // [3d, d]
    const scalar_t* __restrict__ w_int,    // [d, d]
    const scalar_t* __restrict__ w_out,    // [d, d]
    const int64_t* __restrict__ lengths,   // [B] or nullptr
    typename Acc<scalar_t>::type* __restrict__ d_p,   // [T, B, 3d]
    typename Acc<scalar_t>::type* __restrict__ d_zp,  // [T, B, d]
    typename Acc<scalar_t>::type* __restrict__ d_yp,  // [T, B, d]
    scalar_t* __restrict__ d_h0,           // [B, d]
    int64_t steps, int64_t batch, int64_t d) {
  using acc_t = typename Acc<scalar_t>::type;
  extern __shared__ unsigned char smem_raw[];
  acc_t* dh_s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* dyp_s = dh_s + kRows * d;
  acc_t* dzp_s = dyp_s + kRows * d;
  acc_t* dp_s = dzp_s + kRows * d;  // [kRows][3d]

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int nrows = static_cast<int>(batch - row0 < kRows ? batch - row0 : kRows);
  int64_t len[kRows];
#pragma unroll
  for (int b = 0; b < kRows; ++b) {
    len[b] = (b < nrows) ? (lengths ? lengths[row0 + b] : steps) : 0;
  }
  for (int64_t i = threadIdx.x; i < kRows * d; i += blockDim.x) dh_s[i] = acc_t(0);
  __syncthreads();

  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t base = t * batch + row0;  // first row of this block at step t
    const acc_t* sv_t = saved + base * 4 * d;
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
      for (int64_t k = 0; k < d; ++k) {
        const acc_t w = to_acc(w_out[k * d + c]);
#pragma unroll
        for (int b = 0; b < kRows; ++b) dq[b] += dyp_s[b * d + k] * w;
      }
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        acc_t dzp = acc_t(0), dr = acc_t(0);
        if (b < nrows && t < len[b]) {
          const acc_t z = sv_t[b * 4 * d + 2 * d + c], r = sv_t[b * 4 * d + 3 * d + c];
          dzp = dq[b] * r * (acc_t(1) - z * z);
          dr = dq[b] * z * r * (acc_t(1) - r);
        }
        dzp_s[b * d + c] = dzp;
        dp_s[b * 3 * d + 2 * d + c] = dr;
        if (b < nrows) {
          d_zp[(base + b) * d + c] = dzp;
          d_p[(base + b) * 3 * d + 2 * d + c] = dr;
        }
      }
    }
    __syncthreads();
    // do = dzp @ W_int -> da, ds
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t dout[kRows];
#pragma unroll
      for (int b = 0; b < kRows; ++b) dout[b] = acc_t(0);
      for (int64_t k = 0; k < d; ++k) {
        const acc_t w = to_acc(w_int[k * d + c]);
#pragma unroll
        for (int b = 0; b < kRows; ++b) dout[b] += dzp_s[b * d + k] * w;
      }
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        acc_t da = acc_t(0), ds = acc_t(0);
        if (b < nrows && t < len[b]) {
          const acc_t u = sv_t[b * 4 * d + c], s = sv_t[b * 4 * d + d + c];
          da = dout[b] * s * (acc_t(1) - u * u);
          ds = dout[b] * u * s * (acc_t(1) - s);
        }
        dp_s[b * 3 * d + c] = da;
        dp_s[b * 3 * d + d + c] = ds;
        if (b < nrows) {
          d_p[(base + b) * 3 * d + c] = da;
          d_p[(base + b) * 3 * d + d + c] = ds;
        }
      }
    }
    __syncthreads();
    // dh_{t-1} = where(live, dyp + dP @ W_hh, dh) (each thread its own columns of dh_s)
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      acc_t acc[kRows];
#pragma unroll
      for (int b = 0; b < kRows; ++b) acc[b] = dyp_s[b * d + c];
      for (int64_t k = 0; k < 3 * d; ++k) {
        const acc_t w = to_acc(w_hh[k * d + c]);
#pragma unroll
        for (int b = 0; b < kRows; ++b) acc[b] += dp_s[b * 3 * d + k] * w;
      }
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        if (t < len[b]) dh_s[b * d + c] = acc[b];
      }
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < static_cast<int64_t>(nrows) * d; i += blockDim.x) {
    d_h0[row0 * d + i] = from_acc<scalar_t>(dh_s[i]);
  }
}

template <typename scalar_t>
size_t acc_bytes() { return sizeof(typename Acc<scalar_t>::type); }

template <typename scalar_t>
cudaError_t launch_fwd(const void* xp, const void* h0, const void* w_hh_t, const void* w_int_t, const void* b_int,
                       const void* w_out_t, const void* b_out, const int64_t* lengths, void* hs, void* saved,
                       int64_t steps, int64_t batch, int64_t d, cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  const size_t smem = 4 * kRows * d * sizeof(acc_t);
  cudaError_t err = cudaFuncSetAttribute(diru_fwd_kernel<scalar_t>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((batch + kRows - 1) / kRows));
  diru_fwd_kernel<scalar_t><<<grid, threads_for(d), smem, stream>>>(
      static_cast<const scalar_t*>(xp), static_cast<const scalar_t*>(h0), static_cast<const scalar_t*>(w_hh_t),
      static_cast<const scalar_t*>(w_int_t), static_cast<const scalar_t*>(b_int),
      static_cast<const scalar_t*>(w_out_t), static_cast<const scalar_t*>(b_out), lengths,
      static_cast<scalar_t*>(hs), static_cast<acc_t*>(saved), steps, batch, d);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_bwd(const void* grad_hs, const void* hs, const void* saved, const void* w_hh, const void* w_int,
                       const void* w_out, const int64_t* lengths, void* d_p, void* d_zp, void* d_yp, void* d_h0,
                       int64_t steps, int64_t batch, int64_t d, cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  const size_t smem = 6 * kRows * d * sizeof(acc_t);
  cudaError_t err = cudaFuncSetAttribute(diru_bwd_kernel<scalar_t>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((batch + kRows - 1) / kRows));
  diru_bwd_kernel<scalar_t><<<grid, threads_for(d), smem, stream>>>(
      static_cast<const scalar_t*>(grad_hs), static_cast<const scalar_t*>(hs), static_cast<const acc_t*>(saved),
      static_cast<const scalar_t*>(w_hh), static_cast<const scalar_t*>(w_int), static_cast<const scalar_t*>(w_out),
      lengths, static_cast<acc_t*>(d_p), static_cast<acc_t*>(d_zp), static_cast<acc_t*>(d_yp),
      static_cast<scalar_t*>(d_h0), steps, batch, d);
  return cudaGetLastError();
}

}  // namespace

int64_t fwd_shared_bytes(DType dtype, int64_t d) {
  return 4 * kRows * d * (dtype == DType::kFloat64 ? 8 : 4);
}

int64_t bwd_shared_bytes(DType dtype, int64_t d) {
  return 6 * kRows * d * (dtype == DType::kFloat64 ? 8 : 4);
}

cudaError_t scan_fwd(DType dtype, const void* xp, const void* h0, const void* w_hh_t, const void* w_int_t,
                     const void* b_int, const void* w_out_t, const void* b_out, const int64_t* lengths, void* hs,
                     void* saved, int64_t steps, int64_t batch, int64_t d, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch_fwd<float>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps, batch, d,
                               stream);
    case DType::kFloat64:
      return launch_fwd<double>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps, batch, d,
                                stream);
    case DType::kFloat16:
      return launch_fwd<__half>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps, batch, d,
                                stream);
    case DType::kBFloat16:
      return launch_fwd<__nv_bfloat16>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps,
                                       batch, d, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t scan_bwd(DType dtype, const void* grad_hs, const void* hs, const void* saved, const void* w_hh,
                     const void* w_int, const void* w_out, const int64_t* lengths, void* d_p, void* d_zp, void* d_yp,
                     void* d_h0, int64_t steps, int64_t batch, int64_t d, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch_bwd<float>(grad_hs, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0, steps, batch,
                               d, stream);
    case DType::kFloat64:
      return launch_bwd<double>(grad_hs, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0, steps, batch,
                                d, stream);
    case DType::kFloat16:
      return launch_bwd<__half>(grad_hs, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0, steps, batch,
                                d, stream);
    case DType::kBFloat16:
      return launch_bwd<__nv_bfloat16>(grad_hs, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0, steps,
                                       batch, d, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace diru_fast
