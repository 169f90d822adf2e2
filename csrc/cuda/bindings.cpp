// Python bindings of the diru_fast CUDA kernels (module diru_fast._cuda): check every input,
// allocate the outputs, launch on the current stream. Semantics: diru_fast/scan/contract.py.
#include <cstdlib>
#include <optional>
#include <limits>
#include <string>
#include <tuple>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "diru_scan.cuh"

namespace {

using diru_fast::cuda::DType;

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      TORCH_CHECK(false, "diru_fast cuda kernels take float32, float64, float16 or bfloat16; got ", t.scalar_type());
  }
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check(const at::Tensor& t, const char* name, const at::Tensor& like, at::IntArrayRef shape, bool same_dtype) {
  TORCH_CHECK(t.is_cuda(), "diru_fast cuda: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == like.device(), "diru_fast cuda: ", name, " is on ", t.device(), ", xp on ", like.device());
  TORCH_CHECK(t.is_contiguous(), "diru_fast cuda: ", name, " must be contiguous (call .contiguous())");
  TORCH_CHECK(t.sizes() == shape, "diru_fast cuda: ", name, " must have shape ", shape, ", got ", t.sizes());
  if (same_dtype) {
    TORCH_CHECK(t.scalar_type() == like.scalar_type(), "diru_fast cuda: ", name, " has dtype ", t.scalar_type(),
                ", expected ", like.scalar_type());
  }
}

const int64_t* lengths_ptr(const std::optional<at::Tensor>& lengths, const at::Tensor& xp, int64_t batch) {
  if (!lengths.has_value()) return nullptr;
  const at::Tensor& l = *lengths;
  check(l, "lengths", xp, {batch}, false);
  TORCH_CHECK(l.scalar_type() == at::kLong, "diru_fast cuda: lengths must be int64, got ", l.scalar_type());
  return l.data_ptr<int64_t>();
}

// Outputs are NaN-filled under DIRU_FAST_POISON=1 so an element a kernel forgets fails the tests.
at::Tensor alloc(at::IntArrayRef shape, const at::TensorOptions& options) {
  at::Tensor t = at::empty(shape, options);
  const char* poison = std::getenv("DIRU_FAST_POISON");
  if (poison != nullptr && std::string(poison) == "1") t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

void check_shared(int64_t bytes, const at::Tensor& like, int64_t d) {
  const int device = like.device().index();
  int limit = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK(bytes <= limit, "diru_fast cuda: hidden size ", d, " needs ", bytes,
              " bytes of shared memory per block, the GPU allows ", limit,
              "; use backend='triton' or 'torch' for this size");
}

// The contract's options (diru_fast/scan/contract.py) for T steps, B rows, hidden size d, k compartments:
// activation "tanh" | "relu"; compartment_of [d] int32 with values in [0, k) (None: no attention, k = 0);
// mask [T, B, d] in the accumulation dtype (None: no dropout); decay [T, B, d] in the accumulation dtype,
// the factors decay_t = exp(-softplus(lambda) dt_t) (None: no time decay). Formed in the step instead:
// rate [d] and dt [T, B] (accumulation dtype): decay_t = exp(-rate dt_t), rate = softplus(lambda);
// mask_seed (int) with mask_threshold and mask_scale: the mask of diru_fast/scan/dropout.py's hash.
struct InStepArgs {
  std::optional<at::Tensor> rate, dt;
  std::optional<int64_t> mask_seed;
  int64_t mask_threshold = 0;
  double mask_scale = 1.0;
};

diru_fast::cuda::Options options(const std::string& activation, const std::optional<at::Tensor>& compartment_of,
                                 const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& decay,
                                 const at::Tensor& like, int64_t steps, int64_t batch, int64_t d, int64_t k,
                                 const InStepArgs& in = InStepArgs()) {
  diru_fast::cuda::Options opts;
  TORCH_CHECK(activation == "tanh" || activation == "relu",
              "diru_fast cuda: activation must be 'tanh' or 'relu', got '", activation, "'");
  opts.relu = activation == "relu";
  if (compartment_of.has_value()) {
    const at::Tensor& comp = *compartment_of;
    check(comp, "compartment_of", like, {d}, false);
    TORCH_CHECK(comp.scalar_type() == at::kInt, "diru_fast cuda: compartment_of must be int32, got ",
                comp.scalar_type());
    TORCH_CHECK(k >= 1, "diru_fast cuda: attention needs at least one compartment (k = ", k, ")");
    // Its values must lie in [0, k): the kernels index shared memory with them. Not checked here (that
    // would synchronize with the GPU on every call); the modules build it from the compartment sizes.
    opts.k = k;
    opts.compartment_of = comp.data_ptr<int32_t>();
  } else {
    TORCH_CHECK(k == 0, "diru_fast cuda: ", k, " extra columns (attention logits) but no compartment_of");
  }
  if (mask.has_value()) {
    check(*mask, "mask", like, {steps, batch, d}, false);
    TORCH_CHECK(mask->scalar_type() == acc_type(like.scalar_type()), "diru_fast cuda: mask must be ",
                acc_type(like.scalar_type()), ", got ", mask->scalar_type());
    opts.mask = mask->data_ptr();
  }
  if (decay.has_value()) {
    check(*decay, "decay", like, {steps, batch, d}, false);
    TORCH_CHECK(decay->scalar_type() == acc_type(like.scalar_type()), "diru_fast cuda: decay must be ",
                acc_type(like.scalar_type()), ", got ", decay->scalar_type());
    opts.decay = decay->data_ptr();
  }
  const at::ScalarType acc = acc_type(like.scalar_type());
  TORCH_CHECK(in.rate.has_value() == in.dt.has_value(), "diru_fast cuda: time decay's rate and dt go together");
  if (in.rate.has_value()) {
    TORCH_CHECK(!decay.has_value(), "diru_fast cuda: give time decay as decay or as rate and dt, not both");
    check(*in.rate, "rate", like, {d}, false);
    check(*in.dt, "dt", like, {steps, batch}, false);
    TORCH_CHECK(in.rate->scalar_type() == acc && in.dt->scalar_type() == acc, "diru_fast cuda: rate and dt must be ",
                acc);
    opts.rate = in.rate->data_ptr();
    opts.dt = in.dt->data_ptr();
  }
  if (in.mask_seed.has_value()) {
    TORCH_CHECK(!mask.has_value(), "diru_fast cuda: give the dropout mask as a tensor or as a seed, not both");
    TORCH_CHECK(*in.mask_seed >= 0 && in.mask_threshold >= 0 && in.mask_threshold <= 0xFFFFFFFFLL,
                "diru_fast cuda: mask_seed must be >= 0 and mask_threshold in [0, 2^32)");
    opts.hash_mask = true;
    opts.mask_seed = static_cast<uint64_t>(*in.mask_seed);
    opts.mask_threshold = static_cast<uint32_t>(in.mask_threshold);
    opts.mask_scale = in.mask_scale;
  }
  return opts;
}

// xp [T, B, 3d+k], h0 [B, d], w_hh [3d+k, d], w_int [d, d], b_int [d], w_out [d, d], b_out [d], lengths [B] int64,
// options (above) -> hs [T, B, d] (dtype of xp), saved [T, B, 4d+k] (acc; [0] when need_saved is false)
std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w_hh,
                                            const at::Tensor& w_int, const at::Tensor& b_int, const at::Tensor& w_out,
                                            const at::Tensor& b_out, const std::optional<at::Tensor>& lengths,
                                            bool need_saved, const std::string& activation,
                                            const std::optional<at::Tensor>& compartment_of,
                                            const std::optional<at::Tensor>& mask,
                                            const std::optional<at::Tensor>& decay,
                                            const std::optional<at::Tensor>& rate,
                                            const std::optional<at::Tensor>& dt,
                                            const std::optional<int64_t>& mask_seed, int64_t mask_threshold,
                                            double mask_scale) {
  TORCH_CHECK(xp.dim() == 3 && h0.dim() == 2, "diru_fast cuda: xp must be [T, B, 3d+k] and h0 [B, d]");
  const int64_t steps = xp.size(0), batch = xp.size(1), d = h0.size(1);
  const int64_t k = xp.size(2) - 3 * d;
  TORCH_CHECK(k >= 0, "diru_fast cuda: xp must be [T, B, 3d+k] with d = ", d, ", got ", xp.sizes());
  check(xp, "xp", xp, {steps, batch, 3 * d + k}, true);
  check(h0, "h0", xp, {batch, d}, true);
  check(w_hh, "w_hh", xp, {3 * d + k, d}, true);
  check(w_int, "w_int", xp, {d, d}, true);
  check(b_int, "b_int", xp, {d}, true);
  check(w_out, "w_out", xp, {d, d}, true);
  check(b_out, "b_out", xp, {d}, true);
  const DType dtype = dtype_of(xp);
  const c10::cuda::CUDAGuard guard(xp.device());
  const int64_t* lens = lengths_ptr(lengths, xp, batch);
  const diru_fast::cuda::Options opts = options(activation, compartment_of, mask, decay, xp, steps, batch, d, k,
                                                InStepArgs{rate, dt, mask_seed, mask_threshold, mask_scale});
  at::Tensor hs = alloc({steps, batch, d}, xp.options());
  at::Tensor saved = need_saved ? alloc({steps, batch, 4 * d + k}, xp.options().dtype(acc_type(xp.scalar_type())))
                                : alloc({0}, xp.options().dtype(acc_type(xp.scalar_type())));
  if (steps == 0 || batch == 0) return {hs, saved};
  check_shared(diru_fast::cuda::fwd_shared_bytes(dtype, d, k), xp, d);
  // The forward reads W^T (coalesced along the output unit): d x (3d+k) / d x d copies, tiny next to the scan.
  const at::Tensor w_hh_t = w_hh.t().contiguous(), w_int_t = w_int.t().contiguous(), w_out_t = w_out.t().contiguous();
  C10_CUDA_CHECK(diru_fast::cuda::scan_fwd(dtype, xp.data_ptr(), h0.data_ptr(), w_hh_t.data_ptr(), w_int_t.data_ptr(),
                                           b_int.data_ptr(), w_out_t.data_ptr(), b_out.data_ptr(), lens, hs.data_ptr(),
                                           need_saved ? saved.data_ptr() : nullptr, steps, batch, d, opts,
                                           c10::cuda::getCurrentCUDAStream()));
  return {hs, saved};
}

// grad_hs [T, B, d], h0 [B, d], hs [T, B, d], saved [T, B, 4d+k] acc, w_hh [3d+k, d], w_int [d, d], w_out [d, d],
// lengths [B] int64, options (above) -> d_p [T, B, 3d+k], d_zp [T, B, d], d_yp [T, B, d] (acc), d_h0 [B, d]
// (dtype of h0). With decay the state gradient carried to step t-1 is decay_t * (d_yp_t + d_p_t W_hh) on live
// rows; the gradients of decay and of w_hh over the decayed states are formed by the caller from these outputs.
// Four more outputs, None where off: with rate and dt, hd [T, B, d] (the decayed states, the rows of w_hh's
// gradient), d_rate [d] (dL/drate) and d_dt [T, B]; with want_o, o [T, B, d] (the integration inputs
// u s (* k alpha_c) (* mask), the rows of w_int's gradient); all in the accumulation dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scan_bwd(
    const at::Tensor& grad_hs, const at::Tensor& h0, const at::Tensor& hs, const at::Tensor& saved,
    const at::Tensor& w_hh, const at::Tensor& w_int, const at::Tensor& w_out,
    const std::optional<at::Tensor>& lengths, const std::string& activation,
    const std::optional<at::Tensor>& compartment_of, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& decay, const std::optional<at::Tensor>& rate,
    const std::optional<at::Tensor>& dt, const std::optional<int64_t>& mask_seed, int64_t mask_threshold,
    double mask_scale, bool want_o) {
  TORCH_CHECK(hs.dim() == 3 && saved.dim() == 3, "diru_fast cuda: hs must be [T, B, d] and saved [T, B, 4d+k]");
  const int64_t steps = hs.size(0), batch = hs.size(1), d = hs.size(2);
  const int64_t k = saved.size(2) - 4 * d;
  TORCH_CHECK(k >= 0, "diru_fast cuda: saved must be [T, B, 4d+k] with d = ", d, ", got ", saved.sizes());
  check(hs, "hs", hs, {steps, batch, d}, true);
  check(grad_hs, "grad_hs", hs, {steps, batch, d}, true);
  check(h0, "h0", hs, {batch, d}, true);
  check(saved, "saved", hs, {steps, batch, 4 * d + k}, false);
  TORCH_CHECK(saved.scalar_type() == acc_type(hs.scalar_type()), "diru_fast cuda: saved must be ",
              acc_type(hs.scalar_type()), ", got ", saved.scalar_type());
  check(w_hh, "w_hh", hs, {3 * d + k, d}, true);
  check(w_int, "w_int", hs, {d, d}, true);
  check(w_out, "w_out", hs, {d, d}, true);
  const DType dtype = dtype_of(hs);
  const c10::cuda::CUDAGuard guard(hs.device());
  const int64_t* lens = lengths_ptr(lengths, hs, batch);
  diru_fast::cuda::Options opts = options(activation, compartment_of, mask, decay, hs, steps, batch, d, k,
                                          InStepArgs{rate, dt, mask_seed, mask_threshold, mask_scale});
  const auto acc = hs.options().dtype(acc_type(hs.scalar_type()));
  at::Tensor d_p = alloc({steps, batch, 3 * d + k}, acc);
  at::Tensor d_zp = alloc({steps, batch, d}, acc);
  at::Tensor d_yp = alloc({steps, batch, d}, acc);
  at::Tensor d_h0 = alloc({batch, d}, h0.options());
  const bool rates = rate.has_value();
  const int64_t blocks = (batch + diru_fast::cuda::kBlockRows - 1) / diru_fast::cuda::kBlockRows;
  at::Tensor hd = rates ? alloc({steps, batch, d}, acc) : at::Tensor();
  at::Tensor d_rate_parts = rates ? alloc({blocks, d}, acc) : at::Tensor();
  at::Tensor d_dt = rates ? alloc({steps, batch}, acc) : at::Tensor();
  at::Tensor o = want_o && (k > 0 || mask.has_value() || mask_seed.has_value()) ? alloc({steps, batch, d}, acc)
                                                                               : at::Tensor();
  if (steps == 0 || batch == 0) {
    d_h0.zero_();
    return {d_p, d_zp, d_yp, d_h0, hd, rates ? at::zeros({d}, acc) : at::Tensor(), d_dt, o};
  }
  opts.hd = rates ? hd.data_ptr() : nullptr;
  opts.d_rate = rates ? d_rate_parts.data_ptr() : nullptr;
  opts.d_dt = rates ? d_dt.data_ptr() : nullptr;
  opts.o = o.defined() ? o.data_ptr() : nullptr;
  check_shared(diru_fast::cuda::bwd_shared_bytes(dtype, d, k, rates), hs, d);
  C10_CUDA_CHECK(diru_fast::cuda::scan_bwd(dtype, grad_hs.data_ptr(), h0.data_ptr(), hs.data_ptr(), saved.data_ptr(),
                                           w_hh.data_ptr(), w_int.data_ptr(), w_out.data_ptr(), lens, d_p.data_ptr(),
                                           d_zp.data_ptr(), d_yp.data_ptr(), d_h0.data_ptr(), steps, batch, d, opts,
                                           c10::cuda::getCurrentCUDAStream()));
  // each block's dL/drate summed in a fixed order (deterministic)
  return {d_p, d_zp, d_yp, d_h0, hd, rates ? d_rate_parts.sum(0) : at::Tensor(), d_dt, o};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "diru_fast CUDA kernels: persistent DIRU scan forward/backward (see diru_fast/scan/contract.py)";
  m.def("scan_fwd", &scan_fwd, "forward scan of one layer/direction", py::arg("xp"), py::arg("h0"), py::arg("w_hh"),
        py::arg("w_int"), py::arg("b_int"), py::arg("w_out"), py::arg("b_out"), py::arg("lengths"),
        py::arg("need_saved"), py::arg("activation") = "tanh", py::arg("compartment_of") = py::none(),
        py::arg("mask") = py::none(), py::arg("decay") = py::none(), py::arg("rate") = py::none(),
        py::arg("dt") = py::none(), py::arg("mask_seed") = py::none(), py::arg("mask_threshold") = 0,
        py::arg("mask_scale") = 1.0);
  m.def("scan_bwd", &scan_bwd, "reverse-time backward of one layer/direction", py::arg("grad_hs"), py::arg("h0"),
        py::arg("hs"), py::arg("saved"), py::arg("w_hh"), py::arg("w_int"), py::arg("w_out"), py::arg("lengths"),
        py::arg("activation") = "tanh", py::arg("compartment_of") = py::none(), py::arg("mask") = py::none(),
        py::arg("decay") = py::none(), py::arg("rate") = py::none(), py::arg("dt") = py::none(),
        py::arg("mask_seed") = py::none(), py::arg("mask_threshold") = 0, py::arg("mask_scale") = 1.0,
        py::arg("want_o") = false);
}
