// diru_fast CUDA kernels: the launchers bindings.cpp calls (no torch headers here, so the
// kernel source compiles with nvcc alone).
//
// The semantics are the kernel contract of diru_fast/scan/contract.py, for one layer and one
// direction (T steps, B rows, hidden size d; acc = float for 16-bit and float inputs, double
// for double):
//
//   P_t = xp_t + h_{t-1} W_hh^T = [a | s_pre | r_pre]
//   u = tanh(a), s = sigmoid(s_pre), r = sigmoid(r_pre), z = tanh((u*s) W_int^T + b_int)
//   h_t = tanh((z*r) W_out^T + b_out + h_{t-1});  steps t >= lengths[b] keep h (selected).
//
// With the contract's options (struct Options below; k = 0 without attention):
//   P_t = [a | s_pre | r_pre | e] (k attention logits e), alpha = softmax(e) [B, k], u = relu(a) or tanh(a),
//   o = u * s (* k alpha[compartment_of[j]]) (* mask_t), z = tanh(o W_int^T + b_int);
//   time decay: the step reads hd_t = decay_t * h_{t-1} in place of h_{t-1} (in P_t and in the
//   residual of h_t); steps t >= lengths[b] keep the undecayed h_{t-1} (docs/THEORY.md §1.6).
//   Either option may be formed in the step instead of read from a [T, B, d] tensor: the decay from
//   its rates and gaps (decay_t = exp(-rate * dt_t)), the dropout mask from its seed (the hash of
//   diru_fast/scan/dropout.py, the same mask as every other backend).
//
// All pointers are device pointers to contiguous row-major tensors on `stream`'s device.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace diru_fast {
namespace cuda {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

// The contract's options; all off (the default) is the plain cell, run by its own instantiation.
struct Options {
  bool relu = false;                       // u = relu(a) instead of tanh(a)
  int64_t k = 0;                           // attention over k compartments (0: off)
  const int32_t* compartment_of = nullptr; // [d] int32, values in [0, k), when k > 0
  const void* mask = nullptr;              // [T, B, d] acc, the dropout mask, or nullptr
  const void* decay = nullptr;             // [T, B, d] acc, the time decay factors, or nullptr
  const void* rate = nullptr;              // [d] acc, time decay's rates softplus(lambda) (with dt), or nullptr
  const void* dt = nullptr;                // [T, B] acc, its gaps: decay_t = exp(-rate * dt_t) formed in the step
  bool hash_mask = false;                  // the dropout mask from its seed (mask must be nullptr):
  uint64_t mask_seed = 0;                  //   unit j of row r = t*B + b kept iff the hash >= mask_threshold,
  uint32_t mask_threshold = 0;             //   kept units get mask_scale = 1/(1-p)
  double mask_scale = 1.0;
  // Backward outputs (acc), nullptr where not wanted:
  void* hd = nullptr;        // with rate: [T, B, d] the decayed states hd_t = decay_t * h_{t-1}
  void* d_rate = nullptr;    // with rate: [ceil(B / kRows), d] each block's dL/drate (the caller sums them)
  void* d_dt = nullptr;      // with rate: [T, B] dL/ddt (0 on padded steps)
  void* o = nullptr;         // [T, B, d] the integration inputs u s (* k alpha_c) (* mask_t)
  bool any() const {
    return relu || k > 0 || mask != nullptr || decay != nullptr || rate != nullptr || hash_mask || o != nullptr;
  }
};

// Batch rows per block (the d_rate output has one row per block).
constexpr int64_t kBlockRows = 4;

// Forward, one launch for the whole sequence (persistent: each block owns kRows batch rows
// and loops over time with its state in shared memory).
//   xp      [T, B, 3d+k] dtype   input projections of all steps
//   h0      [B, d]     dtype
//   w_hh_t  [d, 3d+k]  dtype     W_hh transposed (coalesced reads along the output unit)
//   w_int_t [d, d]     dtype     W_int transposed
//   b_int   [d]        dtype
//   w_out_t [d, d]     dtype     W_out transposed
//   b_out   [d]        dtype
//   lengths [B] int64 or nullptr (all steps valid)
//   hs      [T, B, d]  dtype     out
//   saved   [T, B, 4d+k] acc     out, u | s | z | r | alpha (zeros on masked steps); nullptr: inference
cudaError_t scan_fwd(DType dtype, const void* xp, const void* h0, const void* w_hh_t, const void* w_int_t,
                     const void* b_int, const void* w_out_t, const void* b_out, const int64_t* lengths,
                     void* hs, void* saved, int64_t steps, int64_t batch, int64_t d, const Options& opts,
                     cudaStream_t stream);

// Backward, one launch, reverse time (same row ownership as the forward).
//   grad_hs [T, B, d]  dtype     dL/dh_t from outside the recurrence
//   hs      [T, B, d]  dtype
//   saved   [T, B, 4d+k] acc
//   w_hh    [3d+k, d], w_int [d, d], w_out [d, d]   dtype, as stored (not transposed)
//   d_p     [T, B, 3d+k] acc     out: dL/dP_t (the last k columns: dL/de)
//   d_zp    [T, B, d]  acc       out: dL/d(integration pre-activation)
//   d_yp    [T, B, d]  acc       out: dL/d(output pre-activation)
//   d_h0    [B, d]     dtype     out
//   h0      [B, d]     dtype     (read with opts.rate)
// With time decay (opts.decay) the state gradient carried from step t to t-1 on live rows is
// decay_t * (d_yp_t + d_p_t W_hh); the gradient of decay itself is left to the caller (docs/THEORY.md §2.3).
// With opts.rate the backward writes what those gradients need instead (opts.hd, d_rate, d_dt).
cudaError_t scan_bwd(DType dtype, const void* grad_hs, const void* h0, const void* hs, const void* saved,
                     const void* w_hh,
                     const void* w_int, const void* w_out, const int64_t* lengths, void* d_p, void* d_zp,
                     void* d_yp, void* d_h0, int64_t steps, int64_t batch, int64_t d, const Options& opts,
                     cudaStream_t stream);

// Dynamic shared memory (bytes) the forward / backward need for hidden size d, k attention
// compartments (0: off), `dtype` and (backward) time decay from rates; the bindings refuse sizes
// beyond the device's per-block limit with a clear error.
int64_t fwd_shared_bytes(DType dtype, int64_t d, int64_t k);
int64_t bwd_shared_bytes(DType dtype, int64_t d, int64_t k, bool rates = false);

}  // namespace cuda
}  // namespace diru_fast
