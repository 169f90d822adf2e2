// bfloat16 and float16 on the DIRU CPU kernel (the kernel contract's 16-bit rule,
// diru_fast/scan/contract.py: 16-bit inputs, weights and outputs; float32 arithmetic and state).
//
// A 16-bit call runs the float32 time loop (diru_cpu_kernels.h) on float32 copies of its operands
// (the weights once per call, the per-step inputs once per call) and rounds its 16-bit outputs at
// the end (hs, d_h0; saved and the per-step gradients are float32 by the contract). Its per-step
// products are, by the instruction sets this CPU runs (Bf16Isa; the default: amx where the CPU has
// it, else upcast; DIRU_FAST_CPU_BF16_ISA=amx|avx512bf16|upcast or set_bf16_isa() choose another):
//
//   amx        bfloat16 only: AMX tiles (TDPBF16PS), weights packed once per call as bfloat16 pairs,
//              the product's left operand (h, o, q or a gradient, float32) rounded to bfloat16 per
//              product, float32 accumulation;
//   avx512bf16 bfloat16 only: the same packing and rounding, VDPBF16PS register-blocked micro-kernel
//              (opt-in: slower than float32 products where measured, see active_bf16_isa);
//   upcast     float32 products (the float32 kernels of the active instruction set): float16 always
//              (rounding to bfloat16 would lose 3 of its bits), bfloat16 where the CPU has neither.
//
// The bfloat16 products round exactly what PyTorch's own bfloat16 path rounds (a product's operands)
// and keep the state and every elementwise step in float32, so their error against float64 stays
// within PyTorch's bfloat16 error (tests/providers/test_cpu_bf16.py).
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <tuple>

#include "diru_cpu_kernels.h"

namespace diru_cpu {

enum class Bf16Isa : int { kUpcast = 0, kAvx512Bf16 = 1, kAmx = 2 };

bool bf16_isa_supported(Bf16Isa isa);
Bf16Isa& active_bf16_isa();  // best supported unless DIRU_FAST_CPU_BF16_ISA or set_bf16_isa says otherwise
const char* bf16_isa_name(Bf16Isa isa);

// The float32 kernels a call's time loop runs: the bfloat16-product kernels inside a bfloat16 call
// (when the active float32 ISA is AVX-512 and a bfloat16 ISA is active), else the float32 kernels of
// the active ISA. The launcher (diru_cpu.cpp) asks here for every float32 call.
const F32Kernels& call_kernels();

bool is_16bit(at::ScalarType t);

// A float32 tensor of `shape` for the float32 call a 16-bit entry point makes (its hs, saved, per-step
// gradients and scratch), or an undefined tensor outside one (and for small sizes): the caller then
// allocates as usual. The memory comes from this thread's pool of buffers kept between calls, each handed
// out only while nothing else references it (its storage's only owner is the pool): a fresh allocation of
// these sizes costs its page faults on every call (a quarter of a bfloat16 training step at B=32 T=100
// d=256), a kept one none. At most kPoolBuffers buffers per thread; the contents are not cleared.
at::Tensor pooled_float_buffer(at::IntArrayRef shape);

// The float32 entry points (diru_cpu.cpp), which the 16-bit ones below call on converted operands.
std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w_hh,
                                            const at::Tensor& w_int, const at::Tensor& b_int,
                                            const at::Tensor& w_out, const at::Tensor& b_out,
                                            const c10::optional<at::Tensor>& lengths, bool need_saved,
                                            int64_t activation, const c10::optional<at::Tensor>& compartment_of,
                                            const c10::optional<at::Tensor>& mask,
                                            const c10::optional<at::Tensor>& decay,
                                            const c10::optional<at::Tensor>& rate,
                                            const c10::optional<at::Tensor>& dt,
                                            const c10::optional<int64_t>& mask_seed, int64_t mask_threshold,
                                            double mask_scale);
at::Tensor scan_fwd_x(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                      const c10::optional<at::Tensor>& b_ih, const at::Tensor& w_hh, const at::Tensor& w_int,
                      const at::Tensor& b_int, const at::Tensor& w_out, const at::Tensor& b_out,
                      const c10::optional<at::Tensor>& lengths, int64_t activation,
                      const c10::optional<at::Tensor>& compartment_of, const c10::optional<at::Tensor>& decay,
                      const c10::optional<at::Tensor>& rate, const c10::optional<at::Tensor>& dt);
using ScanBwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                 at::Tensor>;
ScanBwdResult scan_bwd(
    const at::Tensor& grad_hs, const at::Tensor& h0, const at::Tensor& hs, const at::Tensor& saved,
    const at::Tensor& w_hh, const at::Tensor& w_int, const at::Tensor& w_out, const c10::optional<at::Tensor>& lengths,
    int64_t activation, const c10::optional<at::Tensor>& compartment_of, const c10::optional<at::Tensor>& mask,
    const c10::optional<at::Tensor>& decay, const c10::optional<at::Tensor>& rate,
    const c10::optional<at::Tensor>& dt, const c10::optional<int64_t>& mask_seed, int64_t mask_threshold,
    double mask_scale, bool want_o);
at::Tensor cell_step(const at::Tensor& x, const c10::optional<at::Tensor>& h, const at::Tensor& w_ih,
                     const c10::optional<at::Tensor>& b_ih, const at::Tensor& w_hh, const at::Tensor& w_int,
                     const c10::optional<at::Tensor>& b_int, const at::Tensor& w_out,
                     const c10::optional<at::Tensor>& b_out, int64_t activation,
                     const c10::optional<at::Tensor>& compartment_of);

// The same four for bfloat16 / float16 operands (every floating input of the call's dtype, except
// mask, decay and saved: float32; time decay's rate and dt of either), by the rule above. Outputs: hs, d_h0,
// d_rate, d_dt and a step's h' in the call's dtype; saved, d_p, d_zp, d_yp, hd and o float32.
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
                                                  double mask_scale);
at::Tensor scan_fwd_x_16bit(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                            const c10::optional<at::Tensor>& b_ih, const at::Tensor& w_hh, const at::Tensor& w_int,
                            const at::Tensor& b_int, const at::Tensor& w_out, const at::Tensor& b_out,
                            const c10::optional<at::Tensor>& lengths, int64_t activation,
                            const c10::optional<at::Tensor>& compartment_of, const c10::optional<at::Tensor>& decay,
                      const c10::optional<at::Tensor>& rate, const c10::optional<at::Tensor>& dt);
ScanBwdResult scan_bwd_16bit(
    const at::Tensor& grad_hs, const at::Tensor& h0, const at::Tensor& hs, const at::Tensor& saved,
    const at::Tensor& w_hh, const at::Tensor& w_int, const at::Tensor& w_out, const c10::optional<at::Tensor>& lengths,
    int64_t activation, const c10::optional<at::Tensor>& compartment_of, const c10::optional<at::Tensor>& mask,
    const c10::optional<at::Tensor>& decay, const c10::optional<at::Tensor>& rate,
    const c10::optional<at::Tensor>& dt, const c10::optional<int64_t>& mask_seed, int64_t mask_threshold,
    double mask_scale, bool want_o);
at::Tensor cell_step_16bit(const at::Tensor& x, const c10::optional<at::Tensor>& h, const at::Tensor& w_ih,
                           const c10::optional<at::Tensor>& b_ih, const at::Tensor& w_hh, const at::Tensor& w_int,
                           const c10::optional<at::Tensor>& b_int, const at::Tensor& w_out,
                           const c10::optional<at::Tensor>& b_out, int64_t activation,
                           const c10::optional<at::Tensor>& compartment_of);

// The weight gradients' rows of a bfloat16 backward in one pass: o = u s and q = z r of every row of a
// float32 call's saved gates [T, B, 4d+k], rounded to bfloat16 (round to nearest even) as
// [T*B, 2, d] (o, q); nullopt where the call is not bfloat16 or this CPU or build has no AVX-512 (the
// caller then forms them with PyTorch's operations: the same values).
c10::optional<at::Tensor> gate_products(const at::Tensor& saved, int64_t d, at::ScalarType dtype);

// The module's bfloat16 functions: bf16_isa(), supported_bf16_isas(), set_bf16_isa(name).
void add_bf16_bindings(pybind11::module& m);

}  // namespace diru_cpu
