// The fused DIRU CPU kernel: launcher and Python bindings (module diru_fast._C when built by
// setup.py, a cached JIT module otherwise; loaded by diru_fast/providers/cpu.py).
//
// Implements the two functions of the kernel contract (diru_fast/scan/contract.py) for CPU
// tensors of float32 / float64:
//
//   scan_fwd(xp [T,B,3d], h0 [B,d], w_hh [3d,d], w_int [d,d], b_int [d], w_out [d,d], b_out [d],
//            lengths [B] int64 | None, need_saved) -> (hs [T,B,d], saved [T,B,4d] | [0])
//   scan_bwd(grad_hs [T,B,d], h0 [B,d], hs [T,B,d], saved [T,B,4d], w_hh, w_int, w_out,
//            lengths | None) -> (d_p [T,B,3d], d_zp [T,B,d], d_yp [T,B,d], d_h0 [B,d])
//
// Threads: the batch is split into min(at::get_num_threads(), B) slices of consecutive rows,
// one per thread (at::parallel_for); each runs the whole time loop on its rows, calling a
// single-threaded BLAS per step (SequentialBlas). The split depends only on B and the thread
// count, so results are deterministic for a given thread count.
// Poisoning: with env DIRU_FAST_POISON=1 every tensor allocated here is NaN-filled first, so
// an element the kernel forgets to write shows up in the tests.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>

#include "diru_cpu_kernels.h"

namespace diru_cpu {
namespace {

bool poison_enabled() {
  const char* v = std::getenv("DIRU_FAST_POISON");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

at::Tensor alloc(at::IntArrayRef shape, const at::TensorOptions& opts) {
  at::Tensor t = at::empty(shape, opts);
  if (poison_enabled()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  TORCH_CHECK(t.defined(), "diru_fast cpu kernel: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "diru_fast cpu kernel: ", name, " must be a CPU tensor, got ", t.device(),
              "; use backend='cuda'/'triton' for GPU tensors");
  TORCH_CHECK(t.scalar_type() == dtype, "diru_fast cpu kernel: ", name, " has dtype ", t.scalar_type(),
              ", expected ", dtype, " (all inputs share one dtype)");
  TORCH_CHECK(t.sizes() == shape, "diru_fast cpu kernel: ", name, " has shape ", t.sizes(), ", expected ", shape);
}

void check_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), "diru_fast cpu kernel: ", name, " is undefined");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "diru_fast cpu kernel: supports float32 and float64, got ", name, " of dtype ", t.scalar_type(),
              "; use backend='torch' for other dtypes");
}

// lengths: [B] int64 on CPU, or None (every step live). Returns a contiguous tensor or undefined.
at::Tensor check_lengths(const c10::optional<at::Tensor>& lengths, int64_t B) {
  if (!lengths.has_value() || !lengths->defined()) return at::Tensor();
  check_tensor(*lengths, "lengths", at::kLong, {B});
  return lengths->contiguous();
}

// Run body(r0, r1) on every slice of the batch, one slice per thread, each with a
// single-threaded BLAS.
template <typename F>
void for_batch_slices(int64_t B, const F& body) {
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B));
  at::parallel_for(0, slices, 1, [&](int64_t begin, int64_t end) {
    SequentialBlas sequential;
    for (int64_t s = begin; s < end; ++s) body(s * B / slices, (s + 1) * B / slices);
  });
}

template <typename T>
void run_fwd(ScanArgs<T>& a, T* scratch);
template <>
void run_fwd<float>(ScanArgs<float>& a, float* scratch) {
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) {
    scan_fwd_rows_f32(a, r0, r1, scratch + r0 * kFwdScratch * a.d);
  });
}
template <>
void run_fwd<double>(ScanArgs<double>& a, double* scratch) {
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) {
    scan_fwd_rows_f64(a, r0, r1, scratch + r0 * kFwdScratch * a.d);
  });
}

template <typename T>
void run_bwd(ScanArgs<T>& a, T* scratch);
template <>
void run_bwd<float>(ScanArgs<float>& a, float* scratch) {
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) {
    scan_bwd_rows_f32(a, r0, r1, scratch + r0 * kBwdScratch * a.d);
  });
}
template <>
void run_bwd<double>(ScanArgs<double>& a, double* scratch) {
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) {
    scan_bwd_rows_f64(a, r0, r1, scratch + r0 * kBwdScratch * a.d);
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& xp_in, const at::Tensor& h0_in,
                                            const at::Tensor& w_hh_in, const at::Tensor& w_int_in,
                                            const at::Tensor& b_int_in, const at::Tensor& w_out_in,
                                            const at::Tensor& b_out_in, const c10::optional<at::Tensor>& lengths_in,
                                            bool need_saved) {
  check_dtype(xp_in, "xp");
  TORCH_CHECK(xp_in.dim() == 3, "diru_fast cpu kernel: xp must be [T, B, 3d], got shape ", xp_in.sizes());
  TORCH_CHECK(h0_in.dim() == 2, "diru_fast cpu kernel: h0 must be [B, d], got shape ", h0_in.sizes());
  const int64_t T = xp_in.size(0), B = xp_in.size(1), d = h0_in.size(1);
  const auto dtype = xp_in.scalar_type();
  check_tensor(xp_in, "xp", dtype, {T, B, 3 * d});
  check_tensor(h0_in, "h0", dtype, {B, d});
  check_tensor(w_hh_in, "w_hh", dtype, {3 * d, d});
  check_tensor(w_int_in, "w_int", dtype, {d, d});
  check_tensor(b_int_in, "b_int", dtype, {d});
  check_tensor(w_out_in, "w_out", dtype, {d, d});
  check_tensor(b_out_in, "b_out", dtype, {d});
  at::Tensor lengths = check_lengths(lengths_in, B);

  at::Tensor xp = xp_in.contiguous(), h0 = h0_in.contiguous(), w_hh = w_hh_in.contiguous();
  at::Tensor w_int = w_int_in.contiguous(), b_int = b_int_in.contiguous();
  at::Tensor w_out = w_out_in.contiguous(), b_out = b_out_in.contiguous();
  const auto opts = xp.options();
  at::Tensor hs = alloc({T, B, d}, opts);
  at::Tensor saved = need_saved ? alloc({T, B, 4 * d}, opts) : at::empty({0}, opts);
  if (T == 0 || B == 0 || d == 0) return {hs, saved};
  at::Tensor scratch = alloc({B * kFwdScratch * d}, opts);

  AT_DISPATCH_FLOATING_TYPES(dtype, "diru_cpu_scan_fwd", [&] {
    ScanArgs<scalar_t> a{};
    a.T_steps = T;
    a.B = B;
    a.d = d;
    a.xp = xp.data_ptr<scalar_t>();
    a.h0 = h0.data_ptr<scalar_t>();
    a.w_hh = w_hh.data_ptr<scalar_t>();
    a.w_int = w_int.data_ptr<scalar_t>();
    a.b_int = b_int.data_ptr<scalar_t>();
    a.w_out = w_out.data_ptr<scalar_t>();
    a.b_out = b_out.data_ptr<scalar_t>();
    a.len = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
    a.hs = hs.data_ptr<scalar_t>();
    a.saved = need_saved ? saved.data_ptr<scalar_t>() : nullptr;
    run_fwd<scalar_t>(a, scratch.data_ptr<scalar_t>());
  });
  return {hs, saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> scan_bwd(
    const at::Tensor& grad_hs_in, const at::Tensor& h0_in, const at::Tensor& hs_in, const at::Tensor& saved_in,
    const at::Tensor& w_hh_in, const at::Tensor& w_int_in, const at::Tensor& w_out_in,
    const c10::optional<at::Tensor>& lengths_in) {
  check_dtype(hs_in, "hs");
  TORCH_CHECK(hs_in.dim() == 3, "diru_fast cpu kernel: hs must be [T, B, d], got shape ", hs_in.sizes());
  const int64_t T = hs_in.size(0), B = hs_in.size(1), d = hs_in.size(2);
  const auto dtype = hs_in.scalar_type();
  check_tensor(grad_hs_in, "grad_hs", dtype, {T, B, d});
  check_tensor(h0_in, "h0", dtype, {B, d});
  TORCH_CHECK(saved_in.dim() == 3 && saved_in.size(0) == T,
              "diru_fast cpu kernel: saved must be the [T, B, 4d] gates of a forward run with need_saved=True, "
              "got shape ", saved_in.sizes());
  check_tensor(saved_in, "saved", dtype, {T, B, 4 * d});
  check_tensor(w_hh_in, "w_hh", dtype, {3 * d, d});
  check_tensor(w_int_in, "w_int", dtype, {d, d});
  check_tensor(w_out_in, "w_out", dtype, {d, d});
  at::Tensor lengths = check_lengths(lengths_in, B);

  at::Tensor grad_hs = grad_hs_in.contiguous(), hs = hs_in.contiguous(), saved = saved_in.contiguous();
  at::Tensor w_hh = w_hh_in.contiguous(), w_int = w_int_in.contiguous(), w_out = w_out_in.contiguous();
  const auto opts = hs.options();
  at::Tensor d_p = alloc({T, B, 3 * d}, opts);
  at::Tensor d_zp = alloc({T, B, d}, opts);
  at::Tensor d_yp = alloc({T, B, d}, opts);
  at::Tensor d_h0 = alloc({B, d}, opts);
  if (B == 0 || d == 0) return {d_p, d_zp, d_yp, d_h0};
  if (T == 0) {
    d_h0.zero_();
    return {d_p, d_zp, d_yp, d_h0};
  }
  at::Tensor scratch = alloc({B * kBwdScratch * d}, opts);

  AT_DISPATCH_FLOATING_TYPES(dtype, "diru_cpu_scan_bwd", [&] {
    ScanArgs<scalar_t> a{};
    a.T_steps = T;
    a.B = B;
    a.d = d;
    a.w_hh = w_hh.data_ptr<scalar_t>();
    a.w_int = w_int.data_ptr<scalar_t>();
    a.w_out = w_out.data_ptr<scalar_t>();
    a.len = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
    a.hs = hs.data_ptr<scalar_t>();
    a.saved = saved.data_ptr<scalar_t>();
    a.grad_hs = grad_hs.data_ptr<scalar_t>();
    a.d_p = d_p.data_ptr<scalar_t>();
    a.d_zp = d_zp.data_ptr<scalar_t>();
    a.d_yp = d_yp.data_ptr<scalar_t>();
    a.d_h0 = d_h0.data_ptr<scalar_t>();
    run_bwd<scalar_t>(a, scratch.data_ptr<scalar_t>());
  });
  return {d_p, d_zp, d_yp, d_h0};
}

}  // namespace diru_cpu

// DIRU_CSRC_HASH: the hash of the C++ sources this module was built from (setup.py and the JIT
// loader pass -DDIRU_CSRC_HASH=<hex>); the loader rebuilds when the sources have changed since.
#define DIRU_STRINGIFY_(x) #x
#define DIRU_STRINGIFY(x) DIRU_STRINGIFY_(x)
#ifdef DIRU_CSRC_HASH
#define DIRU_CSRC_HASH_STR DIRU_STRINGIFY(DIRU_CSRC_HASH)
#else
#define DIRU_CSRC_HASH_STR ""
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "diru_fast: the fused DIRU CPU kernel (see csrc/diru_cpu.cpp)";
  m.def("scan_fwd", &diru_cpu::scan_fwd, "DIRU forward scan over one layer and direction",
        py::arg("xp"), py::arg("h0"), py::arg("w_hh"), py::arg("w_int"), py::arg("b_int"), py::arg("w_out"),
        py::arg("b_out"), py::arg("lengths"), py::arg("need_saved"), py::call_guard<py::gil_scoped_release>());
  m.def("scan_bwd", &diru_cpu::scan_bwd, "DIRU backward scan over one layer and direction",
        py::arg("grad_hs"), py::arg("h0"), py::arg("hs"), py::arg("saved"), py::arg("w_hh"), py::arg("w_int"),
        py::arg("w_out"), py::arg("lengths"), py::call_guard<py::gil_scoped_release>());
  m.def("blas_linked", &diru_cpu::blas_linked, "whether torch's BLAS (sgemm_/dgemm_) is callable directly");
  m.def(
      "set_use_blas",
      [](bool enabled) { return diru_cpu::use_blas_flag().exchange(enabled); },
      "use BLAS directly (True) or at::mm_out (False) for the per-step products; returns the previous setting");
  m.attr("source_hash") = DIRU_CSRC_HASH_STR;
}
