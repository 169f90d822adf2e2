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
//
// The contract's options (Options in diru_scan.cuh) run a second instantiation of each kernel
// (kOpt = true); the plain cell keeps the first, its code as it was. With attention the forward
// computes the k logits first (threads over compartments), then one thread per row takes their
// softmax (two more __syncthreads); the backward sums dL/dalpha per compartment and runs the
// softmax backward one thread per row (one more __syncthreads) before dh_{t-1}. Time decay costs
// no __syncthreads: the forward decays each state where it is written (for the next step), the
// backward scales the carried state gradient where it is written. Formed in the step (no [T, B, d]
// tensor read): the decay factors from rates and gaps (one exp per element) and the dropout mask from
// its seed (the hash of diru_fast/scan/dropout.py); the backward then writes the decayed states and the
// gradients of the rates and gaps (one more pass over a [kRows][blockDim] buffer per step, no extra
// __syncthreads). The kernels themselves are in diru_scan_kernels.cuh.
#include "diru_scan.cuh"

#include <type_traits>

#include "diru_scan_kernels.cuh"

namespace diru_fast {
namespace cuda {
namespace {

static_assert(kRows == kBlockRows, "the d_rate output has one row per block of kRows rows");

// The kernels' InStep from the host Options.
template <typename acc_t>
InStep<acc_t> in_step(const Options& opts) {
  InStep<acc_t> in;
  in.rate = static_cast<const acc_t*>(opts.rate);
  in.dt = static_cast<const acc_t*>(opts.dt);
  in.hash_mask = opts.hash_mask;
  in.seed_lo = static_cast<uint32_t>(opts.mask_seed);
  in.seed_hi = static_cast<uint32_t>(opts.mask_seed >> 32);
  in.threshold = opts.mask_threshold;
  in.scale = static_cast<acc_t>(opts.mask_scale);
  in.hd = static_cast<acc_t*>(opts.hd);
  in.d_rate = static_cast<acc_t*>(opts.d_rate);
  in.d_dt = static_cast<acc_t*>(opts.d_dt);
  in.o = static_cast<acc_t*>(opts.o);
  return in;
}

template <typename scalar_t, bool kOpt>
cudaError_t launch_fwd(const void* xp, const void* h0, const void* w_hh_t, const void* w_int_t, const void* b_int,
                       const void* w_out_t, const void* b_out, const int64_t* lengths, void* hs, void* saved,
                       int64_t steps, int64_t batch, int64_t d, const Options& opts, cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  const size_t smem = static_cast<size_t>(fwd_shared_bytes(std::is_same<acc_t, double>::value ? DType::kFloat64
                                                                                                : DType::kFloat32,
                                                           d, opts.k));
  cudaError_t err = cudaFuncSetAttribute(diru_fwd_kernel<scalar_t, kOpt>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((batch + kRows - 1) / kRows));
  diru_fwd_kernel<scalar_t, kOpt><<<grid, threads_for(d), smem, stream>>>(
      static_cast<const scalar_t*>(xp), static_cast<const scalar_t*>(h0), static_cast<const scalar_t*>(w_hh_t),
      static_cast<const scalar_t*>(w_int_t), static_cast<const scalar_t*>(b_int),
      static_cast<const scalar_t*>(w_out_t), static_cast<const scalar_t*>(b_out), lengths,
      static_cast<scalar_t*>(hs), static_cast<acc_t*>(saved), steps, batch, d, opts.relu, opts.k,
      opts.compartment_of, static_cast<const acc_t*>(opts.mask), static_cast<const acc_t*>(opts.decay),
      in_step<acc_t>(opts));
  return cudaGetLastError();
}

template <typename scalar_t, bool kOpt>
cudaError_t launch_bwd(const void* grad_hs, const void* h0, const void* hs, const void* saved, const void* w_hh, const void* w_int,
                       const void* w_out, const int64_t* lengths, void* d_p, void* d_zp, void* d_yp, void* d_h0,
                       int64_t steps, int64_t batch, int64_t d, const Options& opts, cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  const size_t smem = static_cast<size_t>(bwd_shared_bytes(std::is_same<acc_t, double>::value ? DType::kFloat64
                                                                                                : DType::kFloat32,
                                                           d, opts.k, opts.rate != nullptr));
  cudaError_t err = cudaFuncSetAttribute(diru_bwd_kernel<scalar_t, kOpt>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((batch + kRows - 1) / kRows));
  diru_bwd_kernel<scalar_t, kOpt><<<grid, threads_for(d), smem, stream>>>(
      static_cast<const scalar_t*>(grad_hs), static_cast<const scalar_t*>(hs), static_cast<const acc_t*>(saved),
      static_cast<const scalar_t*>(w_hh), static_cast<const scalar_t*>(w_int), static_cast<const scalar_t*>(w_out),
      lengths, static_cast<acc_t*>(d_p), static_cast<acc_t*>(d_zp), static_cast<acc_t*>(d_yp),
      static_cast<scalar_t*>(d_h0), steps, batch, d, opts.relu, opts.k, opts.compartment_of,
      static_cast<const acc_t*>(opts.mask), static_cast<const acc_t*>(opts.decay), in_step<acc_t>(opts),
      static_cast<const scalar_t*>(h0));
  return cudaGetLastError();
}

// The plain instantiation where no option is on, else the one with the options.
template <typename scalar_t>
cudaError_t dispatch_fwd(const void* xp, const void* h0, const void* w_hh_t, const void* w_int_t, const void* b_int,
                         const void* w_out_t, const void* b_out, const int64_t* lengths, void* hs, void* saved,
                         int64_t steps, int64_t batch, int64_t d, const Options& opts, cudaStream_t stream) {
  return opts.any() ? launch_fwd<scalar_t, true>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved,
                                                 steps, batch, d, opts, stream)
                    : launch_fwd<scalar_t, false>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved,
                                                  steps, batch, d, opts, stream);
}

template <typename scalar_t>
cudaError_t dispatch_bwd(const void* grad_hs, const void* h0, const void* hs, const void* saved, const void* w_hh,
                         const void* w_int, const void* w_out, const int64_t* lengths, void* d_p, void* d_zp,
                         void* d_yp, void* d_h0, int64_t steps, int64_t batch, int64_t d, const Options& opts,
                         cudaStream_t stream) {
  return opts.any() ? launch_bwd<scalar_t, true>(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp,
                                                 d_yp, d_h0, steps, batch, d, opts, stream)
                    : launch_bwd<scalar_t, false>(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp,
                                                  d_yp, d_h0, steps, batch, d, opts, stream);
}

}  // namespace

int64_t fwd_shared_bytes(DType dtype, int64_t d, int64_t k) {
  return (4 * kRows * d + kRows * k) * (dtype == DType::kFloat64 ? 8 : 4);
}

int64_t bwd_shared_bytes(DType dtype, int64_t d, int64_t k, bool rates) {
  int64_t words = k > 0 ? 7 * kRows * d + 2 * kRows * k : 6 * kRows * d;
  if (rates) words += d + kRows * kThreads;  // drate_s, red_s
  return words * (dtype == DType::kFloat64 ? 8 : 4);
}

cudaError_t scan_fwd(DType dtype, const void* xp, const void* h0, const void* w_hh_t, const void* w_int_t,
                     const void* b_int, const void* w_out_t, const void* b_out, const int64_t* lengths, void* hs,
                     void* saved, int64_t steps, int64_t batch, int64_t d, const Options& opts, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return dispatch_fwd<float>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps, batch, d,
                                 opts, stream);
    case DType::kFloat64:
      return dispatch_fwd<double>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps, batch, d,
                                  opts, stream);
    case DType::kFloat16:
      return dispatch_fwd<__half>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps, batch, d,
                                  opts, stream);
    case DType::kBFloat16:
      return dispatch_fwd<__nv_bfloat16>(xp, h0, w_hh_t, w_int_t, b_int, w_out_t, b_out, lengths, hs, saved, steps,
                                         batch, d, opts, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t scan_bwd(DType dtype, const void* grad_hs, const void* h0, const void* hs, const void* saved,
                     const void* w_hh, const void* w_int, const void* w_out, const int64_t* lengths, void* d_p,
                     void* d_zp, void* d_yp, void* d_h0, int64_t steps, int64_t batch, int64_t d, const Options& opts,
                     cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return dispatch_bwd<float>(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0, steps, batch,
                                 d, opts, stream);
    case DType::kFloat64:
      return dispatch_bwd<double>(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0, steps,
                                  batch, d, opts, stream);
    case DType::kFloat16:
      return dispatch_bwd<__half>(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0, steps,
                                  batch, d, opts, stream);
    case DType::kBFloat16:
      return dispatch_bwd<__nv_bfloat16>(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, d_p, d_zp, d_yp, d_h0,
                                         steps, batch, d, opts, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace diru_fast
