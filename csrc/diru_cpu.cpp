// The fused DIRU CPU kernel: launcher and Python bindings (module diru_fast._C when built by
// setup.py, a cached JIT module otherwise; loaded by diru_fast/providers/cpu.py).
//
// Implements the two functions of the kernel contract (diru_fast/scan/contract.py) for CPU
// tensors of float32 / float64 (bfloat16 / float16: diru_cpu_bf16.h, on the float32 time loop):
//
//   scan_fwd(xp [T,B,3d+k], h0 [B,d], w_hh [3d+k,d], w_int [d,d], b_int [d], w_out [d,d], b_out [d],
//            lengths [B] int64 | None, need_saved, activation, compartment_of, mask, decay, rate, dt,
//            mask_seed, mask_threshold, mask_scale)
//       -> (hs [T,B,d], saved [T,B,4d+k] | [0])
//   scan_bwd(grad_hs [T,B,d], h0 [B,d], hs [T,B,d], saved [T,B,4d+k], w_hh, w_int, w_out,
//            lengths | None, activation, compartment_of, mask, decay, rate, dt, mask_seed, mask_threshold,
//            mask_scale, want_o)
//       -> (d_p [T,B,3d+k], d_zp [T,B,d], d_yp [T,B,d], d_h0 [B,d], hd, d_rate, d_dt, o)
//          (hd, d_rate, d_dt with rate and dt only, else None: hd [T,B,d] the decayed states,
//          d_rate [d], d_dt [T,B] the gradients of time decay's rates and gaps; o [T,B,d] the
//          integration input u s (k alpha_c) (mask) with want_o and attention or dropout, else None)
//
// and, for inference, one step of a cell with its input projection in the same call:
//
//   cell_step(x [B,n], h [B,d] | None, w_ih [3d+k,n], b_ih [3d+k] | None, w_hh, w_int, b_int | None,
//             w_out, b_out | None, activation, compartment_of) -> h' [B,d]
//   scan_fwd_x(x [T,B,n], h0, w_ih, b_ih | None, w_hh, w_int, b_int, w_out, b_out, lengths | None,
//              activation, compartment_of, decay, rate, dt)
//       -> hs [T,B,d]: an inference forward that projects each step's input inside the time loop,
//          so the [T, B, 3d] projections are never written to memory
//
// Backward: docs/THEORY.md §2.2. The options (docs/THEORY.md §1.2–1.6; all off by default): activation 0 = tanh, 1 = relu;
// compartment_of [d] int64 | None turns attention on, with k = w_hh.size(0) - 3d logits (values in
// [0, k)); mask [T,B,d] | None (the input dtype) is the compartment dropout mask; decay [T,B,d] | None
// (the input dtype) the time-decay factors of each step's state; or rate [d] with dt [T,B] (the
// input dtype): time decay with its factors exp(-rate * dt_t) formed inside the step. mask_seed
// (int | None) with mask_threshold and mask_scale: compartment dropout with the counter-based mask of
// that seed (diru_fast/scan/dropout.py) evaluated in the step, instead of mask.
//
// Threads: the batch is split into min(at::get_num_threads(), B) slices of consecutive rows,
// one per thread (at::parallel_for); each runs the whole time loop on its rows. float32 runs
// the packed micro-kernel products (diru_cpu_gemm.h) on AVX-512/AVX2 machines, BLAS calls
// elsewhere and for calls of fewer than 8 rows x steps; a batch smaller than the thread count
// (d >= 96) is split by output units instead, with a barrier at each of a step's three
// dependent products. The split depends only on B, d and the thread count, so results are
// deterministic for a given thread count.
// Poisoning: with env DIRU_FAST_POISON=1 every tensor allocated here is NaN-filled first, so
// an element the kernel forgets to write shows up in the tests.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "diru_cpu_bf16.h"
#include "diru_cpu_kernels.h"

namespace diru_cpu {
namespace {

bool poison_enabled() {
  const char* v = std::getenv("DIRU_FAST_POISON");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

at::Tensor alloc(at::IntArrayRef shape, const at::TensorOptions& opts) {
  at::Tensor t = opts.dtype() == at::kFloat ? pooled_float_buffer(shape) : at::Tensor();  // 16-bit calls only
  if (!t.defined()) t = at::empty(shape, opts);
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
              "diru_fast cpu kernel: supports float32, float64, bfloat16 and float16, got ", name, " of dtype ",
              t.scalar_type(),
              "; use backend='torch' for other dtypes");
}

// lengths: [B] int64 on CPU, or None (every step live). Returns a contiguous tensor or undefined.
at::Tensor check_lengths(const c10::optional<at::Tensor>& lengths, int64_t B) {
  if (!lengths.has_value() || !lengths->defined()) return at::Tensor();
  check_tensor(*lengths, "lengths", at::kLong, {B});
  return lengths->contiguous();
}

bool defined(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// The options of a call, checked: relu, the attention logits k (0: none) with compartment_of, the mask.
struct Options {
  bool relu = false;
  int64_t k = 0;
  at::Tensor comp, mask, decay, rate, dt;  // undefined where off
  bool hash_mask = false;
  uint64_t mask_seed = 0;
  uint32_t mask_threshold = 0;
  double mask_scale = 1.0;
};

void set_hash_mask(Options& o, const c10::optional<int64_t>& seed, int64_t threshold, double scale) {
  if (!seed.has_value()) return;
  TORCH_CHECK(!o.mask.defined(), "diru_fast cpu kernel: give the dropout mask as a tensor or as a seed, not both");
  TORCH_CHECK(threshold >= 0 && threshold <= 0xFFFFFFFFLL, "diru_fast cpu kernel: mask_threshold must be in "
              "[0, 2^32), got ", threshold);
  o.hash_mask = true;
  o.mask_seed = static_cast<uint64_t>(*seed);
  o.mask_threshold = static_cast<uint32_t>(threshold);
  o.mask_scale = scale;
}

// The per-step option tensors mask and decay: [T, B, d] of the call's dtype, made contiguous.
void check_step_options(Options& o, const c10::optional<at::Tensor>& decay, at::ScalarType dtype, int64_t T,
                        int64_t B, int64_t d, const c10::optional<at::Tensor>& rate = c10::nullopt,
                        const c10::optional<at::Tensor>& dt = c10::nullopt) {
  TORCH_CHECK(defined(rate) == defined(dt), "diru_fast cpu kernel: time decay's rate and dt go together");
  TORCH_CHECK(!(defined(rate) && defined(decay)), "diru_fast cpu kernel: give time decay as decay or as rate "
              "and dt, not both");
  if (defined(rate)) {
    check_tensor(*rate, "rate", dtype, {d});
    check_tensor(*dt, "dt", dtype, {T, B});
    o.rate = rate->contiguous();
    o.dt = dt->contiguous();
  }
  if (o.mask.defined()) {
    check_tensor(o.mask, "mask", dtype, {T, B, d});
    o.mask = o.mask.contiguous();
  }
  if (defined(decay)) {
    check_tensor(*decay, "decay", dtype, {T, B, d});
    o.decay = decay->contiguous();
  }
}

// k: w_hh's rows beyond 3d when compartment_of is given (it must then be at least 1), else 0.
Options check_options(int64_t activation, const c10::optional<at::Tensor>& compartment_of,
                      const c10::optional<at::Tensor>& mask, const at::Tensor& w_hh, int64_t d) {
  TORCH_CHECK(activation == 0 || activation == 1,
              "diru_fast cpu kernel: activation must be 0 (tanh) or 1 (relu), got ", activation);
  Options o;
  o.relu = activation == 1;
  if (defined(compartment_of)) {
    TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) > 3 * d,
                "diru_fast cpu kernel: with compartment_of, w_hh must be [3d+k, d] with k >= 1, got shape ",
                w_hh.sizes());
    o.k = w_hh.size(0) - 3 * d;
    check_tensor(*compartment_of, "compartment_of", at::kLong, {d});
    o.comp = compartment_of->contiguous();
    const int64_t* c = o.comp.data_ptr<int64_t>();
    for (int64_t j = 0; j < d; ++j)
      TORCH_CHECK(c[j] >= 0 && c[j] < o.k, "diru_fast cpu kernel: compartment_of[", j, "] = ", c[j],
                  " is not in [0, ", o.k, ")");
  }
  if (defined(mask)) o.mask = *mask;  // its shape and dtype are checked by the caller
  return o;
}

template <typename T>
void set_options(ScanArgs<T>& a, const Options& o) {
  a.relu = o.relu;
  a.k = o.k;
  a.comp = o.k > 0 ? o.comp.data_ptr<int64_t>() : nullptr;
  a.mask = o.mask.defined() ? o.mask.data_ptr<T>() : nullptr;
  a.decay = o.decay.defined() ? o.decay.data_ptr<T>() : nullptr;
  a.rate = o.rate.defined() ? o.rate.data_ptr<T>() : nullptr;
  a.dt = o.dt.defined() ? o.dt.data_ptr<T>() : nullptr;
  a.hash_mask = o.hash_mask;
  a.mask_seed = o.mask_seed;
  a.mask_threshold = o.mask_threshold;
  a.mask_scale = static_cast<T>(o.mask_scale);
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

// The packed weights of one float32 call on a packing ISA (diru_cpu_gemm.h): the products this
// direction needs, packed once, shared read-only by every thread.
struct PackedCall {
  at::Tensor storage;
  PackedWeights w{};
};

PackedCall pack_weights(const F32Kernels& k, const Weights<float>& weights, std::initializer_list<int> products) {
  PackedCall call;
  int64_t total = 0, offsets[kProducts] = {0};
  for (int p : products) {
    const ProductShape<float> s = product_shape(weights, p);
    offsets[p] = total;
    total += k.packed_size(p, s.k, s.n, s.blocks);
  }
  call.storage = at::empty({total}, at::TensorOptions().dtype(at::kFloat));
  float* base = call.storage.data_ptr<float>();
  for (int p : products) {
    const ProductShape<float> s = product_shape(weights, p);
    k.pack(p, s.w, s.k, s.n, s.transposed, s.blocks, base + offsets[p]);
    call.w.panels[p] = base + offsets[p];
    call.w.k[p] = s.k;
    call.w.nb[p] = s.n / s.blocks;
    call.w.blocks[p] = s.blocks;
  }
  return call;
}

// Packing costs about one row-step of the products: a call of fewer rows x steps keeps the
// weights as they are (BLAS products), e.g. one streaming step.
constexpr int64_t kMinRowStepsToPack = 8;
// Column split (threads share every step's products by output units) when the batch leaves
// threads idle and a step is long enough for three barriers: measured crossover on the
// project's 2-core VM between d = 64 (slower split) and d = 128 (faster).
constexpr int64_t kMinUnitsToSplit = 96;

bool use_column_split(const F32Kernels& k, const ScanArgs<float>& a, int threads) {
#if defined(_OPENMP)
  return threads > 1 && a.B < threads && a.d >= kMinUnitsToSplit && a.d >= 2 * k.panel_width;
#else
  (void)k, (void)a, (void)threads;
  return false;
#endif
}

void run_fwd_column_split(const F32Kernels& k, const ScanArgs<float>& a, const PackedWeights& w, float* scratch,
                          int threads) {
#if defined(_OPENMP)
  std::unique_ptr<SpinBarrier> barrier;
#pragma omp parallel num_threads(threads)
  {
    const int team = omp_get_num_threads(), tid = omp_get_thread_num();
#pragma omp single
    barrier.reset(new SpinBarrier(team));  // the end of `single` is a barrier: all see it
    const int64_t nr = k.panel_width, panels = (a.d + nr - 1) / nr;
    const int64_t p0 = panels * tid / team, p1 = panels * (tid + 1) / team;
    k.fwd_cols(a, w, std::min(a.d, p0 * nr), std::min(a.d, p1 * nr), scratch, *barrier);
  }
#else
  (void)k, (void)a, (void)w, (void)scratch, (void)threads;
#endif
}

template <typename T>
void run_fwd(ScanArgs<T>& a, T* scratch);
template <>
void run_fwd<float>(ScanArgs<float>& a, float* scratch) {
  const F32Kernels& k = call_kernels();
  if (k.pack == nullptr || a.T_steps * a.B < kMinRowStepsToPack) {
    for_batch_slices(a.B, [&](int64_t r0, int64_t r1) { k.fwd_unpacked(a, r0, r1, scratch + r0 * kFwdScratch * a.d); });
    return;
  }
  const PackedCall packed =
      a.x == nullptr ? pack_weights(k, {a.d, a.w_hh, a.w_int, a.w_out, nullptr, 0, a.k},
                                    a.k > 0 ? std::initializer_list<int>{kFwdHH, kFwdInt, kFwdOut, kFwdAtt}
                                            : std::initializer_list<int>{kFwdHH, kFwdInt, kFwdOut})
      : pack_weights(k, {a.d, a.w_hh, a.w_int, a.w_out, a.w_ih, a.n, a.k},
                     a.k > 0 ? std::initializer_list<int>{kFwdHH, kFwdInt, kFwdOut, kFwdIH, kFwdAtt, kFwdIHAtt}
                             : std::initializer_list<int>{kFwdHH, kFwdInt, kFwdOut, kFwdIH});
  const int threads = at::get_num_threads();
  if (use_column_split(k, a, threads)) {
    run_fwd_column_split(k, a, packed.w, scratch, threads);
    return;
  }
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) { k.fwd(a, packed.w, r0, r1, scratch + r0 * kFwdScratch * a.d); });
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
  const F32Kernels& k = call_kernels();
  if (k.pack == nullptr || a.T_steps * a.B < kMinRowStepsToPack) {
    for_batch_slices(a.B, [&](int64_t r0, int64_t r1) { k.bwd_unpacked(a, r0, r1, scratch + r0 * kBwdScratch * a.d); });
    return;
  }
  const PackedCall packed = pack_weights(k, {a.d, a.w_hh, a.w_int, a.w_out, nullptr, 0, a.k}, {kBwdOut, kBwdInt, kBwdHH});
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) { k.bwd(a, packed.w, r0, r1, scratch + r0 * kBwdScratch * a.d); });
}
template <>
void run_bwd<double>(ScanArgs<double>& a, double* scratch) {
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) {
    scan_bwd_rows_f64(a, r0, r1, scratch + r0 * kBwdScratch * a.d);
  });
}

// A per-thread buffer that grows as needed: one streaming step allocates only its output.
template <typename T>
T* thread_buffer(int64_t size, int which) {
  thread_local std::vector<T> buffers[2];
  std::vector<T>& b = buffers[which];
  if (static_cast<int64_t>(b.size()) < size) b.resize(size);
  if (poison_enabled()) std::fill(b.begin(), b.begin() + size, std::numeric_limits<T>::quiet_NaN());
  return b.data();
}

template <typename T>
const T* zeros(int64_t size) {
  thread_local std::vector<T> z;
  if (static_cast<int64_t>(z.size()) < size) z.assign(size, T(0));
  return z.data();
}

template <typename T>
void run_step(ScanArgs<T>& a, T* scratch);
template <>
void run_step<float>(ScanArgs<float>& a, float* scratch) {
  const F32Kernels& k = call_kernels();
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) { k.fwd_unpacked(a, r0, r1, scratch + r0 * kFwdScratch * a.d); });
}
template <>
void run_step<double>(ScanArgs<double>& a, double* scratch) {
  for_batch_slices(a.B, [&](int64_t r0, int64_t r1) { scan_fwd_rows_f64(a, r0, r1, scratch + r0 * kFwdScratch * a.d); });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& xp_in, const at::Tensor& h0_in,
                                            const at::Tensor& w_hh_in, const at::Tensor& w_int_in,
                                            const at::Tensor& b_int_in, const at::Tensor& w_out_in,
                                            const at::Tensor& b_out_in, const c10::optional<at::Tensor>& lengths_in,
                                            bool need_saved, int64_t activation,
                                            const c10::optional<at::Tensor>& compartment_of,
                                            const c10::optional<at::Tensor>& mask_in,
                                            const c10::optional<at::Tensor>& decay_in,
                                            const c10::optional<at::Tensor>& rate_in,
                                            const c10::optional<at::Tensor>& dt_in,
                                            const c10::optional<int64_t>& mask_seed, int64_t mask_threshold,
                                            double mask_scale) {
  if (is_16bit(xp_in.scalar_type()))
    return scan_fwd_16bit(xp_in, h0_in, w_hh_in, w_int_in, b_int_in, w_out_in, b_out_in, lengths_in, need_saved,
                          activation, compartment_of, mask_in, decay_in, rate_in, dt_in, mask_seed, mask_threshold,
                          mask_scale);
  check_dtype(xp_in, "xp");
  TORCH_CHECK(xp_in.dim() == 3, "diru_fast cpu kernel: xp must be [T, B, 3d+k], got shape ", xp_in.sizes());
  TORCH_CHECK(h0_in.dim() == 2, "diru_fast cpu kernel: h0 must be [B, d], got shape ", h0_in.sizes());
  const int64_t T = xp_in.size(0), B = xp_in.size(1), d = h0_in.size(1);
  const auto dtype = xp_in.scalar_type();
  Options options = check_options(activation, compartment_of, mask_in, w_hh_in, d);
  const int64_t k = options.k;
  check_tensor(xp_in, "xp", dtype, {T, B, 3 * d + k});
  check_tensor(h0_in, "h0", dtype, {B, d});
  check_tensor(w_hh_in, "w_hh", dtype, {3 * d + k, d});
  check_step_options(options, decay_in, dtype, T, B, d, rate_in, dt_in);
  set_hash_mask(options, mask_seed, mask_threshold, mask_scale);
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
  at::Tensor saved = need_saved ? alloc({T, B, 4 * d + k}, opts) : at::empty({0}, opts);
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
    set_options(a, options);
    run_fwd<scalar_t>(a, scratch.data_ptr<scalar_t>());
  });
  return {hs, saved};
}

at::Tensor scan_fwd_x(const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& w_ih_in,
                      const c10::optional<at::Tensor>& b_ih_in, const at::Tensor& w_hh_in, const at::Tensor& w_int_in,
                      const at::Tensor& b_int_in, const at::Tensor& w_out_in, const at::Tensor& b_out_in,
                      const c10::optional<at::Tensor>& lengths_in, int64_t activation,
                      const c10::optional<at::Tensor>& compartment_of, const c10::optional<at::Tensor>& decay_in,
                      const c10::optional<at::Tensor>& rate_in, const c10::optional<at::Tensor>& dt_in) {
  if (is_16bit(x_in.scalar_type()))
    return scan_fwd_x_16bit(x_in, h0_in, w_ih_in, b_ih_in, w_hh_in, w_int_in, b_int_in, w_out_in, b_out_in, lengths_in,
                            activation, compartment_of, decay_in, rate_in, dt_in);
  check_dtype(x_in, "x");
  TORCH_CHECK(x_in.dim() == 3, "diru_fast cpu kernel: x must be [T, B, n], got shape ", x_in.sizes());
  TORCH_CHECK(h0_in.dim() == 2, "diru_fast cpu kernel: h0 must be [B, d], got shape ", h0_in.sizes());
  const int64_t T = x_in.size(0), B = x_in.size(1), n = x_in.size(2), d = h0_in.size(1);
  const auto dtype = x_in.scalar_type();
  Options options = check_options(activation, compartment_of, c10::nullopt, w_hh_in, d);
  const int64_t k = options.k;
  check_step_options(options, decay_in, dtype, T, B, d, rate_in, dt_in);
  check_tensor(h0_in, "h0", dtype, {B, d});
  check_tensor(w_ih_in, "w_ih", dtype, {3 * d + k, n});
  check_tensor(w_hh_in, "w_hh", dtype, {3 * d + k, d});
  check_tensor(w_int_in, "w_int", dtype, {d, d});
  check_tensor(b_int_in, "b_int", dtype, {d});
  check_tensor(w_out_in, "w_out", dtype, {d, d});
  check_tensor(b_out_in, "b_out", dtype, {d});
  at::Tensor b_ih;
  if (b_ih_in.has_value() && b_ih_in->defined()) {
    check_tensor(*b_ih_in, "b_ih", dtype, {3 * d + k});
    b_ih = b_ih_in->contiguous();
  }
  at::Tensor lengths = check_lengths(lengths_in, B);
  at::Tensor x = x_in.contiguous(), h0 = h0_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  at::Tensor w_int = w_int_in.contiguous(), b_int = b_int_in.contiguous();
  at::Tensor w_out = w_out_in.contiguous(), b_out = b_out_in.contiguous();
  at::Tensor hs = alloc({T, B, d}, x.options());
  if (T == 0 || B == 0 || d == 0) return hs;
  at::Tensor scratch = alloc({B * kFwdScratch * d}, x.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "diru_cpu_scan_fwd_x", [&] {
    ScanArgs<scalar_t> a{};
    a.T_steps = T;
    a.B = B;
    a.d = d;
    a.xp = nullptr;
    a.x = x.data_ptr<scalar_t>();
    a.w_ih = w_ih.data_ptr<scalar_t>();
    a.b_ih = b_ih.defined() ? b_ih.data_ptr<scalar_t>() : zeros<scalar_t>(3 * d + k);
    a.n = n;
    a.h0 = h0.data_ptr<scalar_t>();
    a.w_hh = w_hh.data_ptr<scalar_t>();
    a.w_int = w_int.data_ptr<scalar_t>();
    a.b_int = b_int.data_ptr<scalar_t>();
    a.w_out = w_out.data_ptr<scalar_t>();
    a.b_out = b_out.data_ptr<scalar_t>();
    a.len = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
    a.hs = hs.data_ptr<scalar_t>();
    a.saved = nullptr;
    set_options(a, options);
    run_fwd<scalar_t>(a, scratch.data_ptr<scalar_t>());
  });
  return hs;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scan_bwd(
    const at::Tensor& grad_hs_in, const at::Tensor& h0_in, const at::Tensor& hs_in, const at::Tensor& saved_in,
    const at::Tensor& w_hh_in, const at::Tensor& w_int_in, const at::Tensor& w_out_in,
    const c10::optional<at::Tensor>& lengths_in, int64_t activation, const c10::optional<at::Tensor>& compartment_of,
    const c10::optional<at::Tensor>& mask_in, const c10::optional<at::Tensor>& decay_in,
    const c10::optional<at::Tensor>& rate_in, const c10::optional<at::Tensor>& dt_in,
    const c10::optional<int64_t>& mask_seed, int64_t mask_threshold, double mask_scale, bool want_o) {
  if (is_16bit(hs_in.scalar_type()))
    return scan_bwd_16bit(grad_hs_in, h0_in, hs_in, saved_in, w_hh_in, w_int_in, w_out_in, lengths_in, activation,
                          compartment_of, mask_in, decay_in, rate_in, dt_in, mask_seed, mask_threshold, mask_scale,
                          want_o);
  check_dtype(hs_in, "hs");
  TORCH_CHECK(hs_in.dim() == 3, "diru_fast cpu kernel: hs must be [T, B, d], got shape ", hs_in.sizes());
  const int64_t T = hs_in.size(0), B = hs_in.size(1), d = hs_in.size(2);
  const auto dtype = hs_in.scalar_type();
  check_tensor(grad_hs_in, "grad_hs", dtype, {T, B, d});
  check_tensor(h0_in, "h0", dtype, {B, d});
  TORCH_CHECK(saved_in.dim() == 3 && saved_in.size(0) == T,
              "diru_fast cpu kernel: saved must be the [T, B, 4d+k] gates of a forward run with need_saved=True, "
              "got shape ", saved_in.sizes());
  Options options = check_options(activation, compartment_of, mask_in, w_hh_in, d);
  const int64_t k = options.k;
  check_tensor(saved_in, "saved", dtype, {T, B, 4 * d + k});
  check_tensor(w_hh_in, "w_hh", dtype, {3 * d + k, d});
  check_step_options(options, decay_in, dtype, T, B, d, rate_in, dt_in);
  set_hash_mask(options, mask_seed, mask_threshold, mask_scale);
  check_tensor(w_int_in, "w_int", dtype, {d, d});
  check_tensor(w_out_in, "w_out", dtype, {d, d});
  at::Tensor lengths = check_lengths(lengths_in, B);

  at::Tensor grad_hs = grad_hs_in.contiguous(), hs = hs_in.contiguous(), saved = saved_in.contiguous();
  at::Tensor h0 = h0_in.contiguous();
  at::Tensor w_hh = w_hh_in.contiguous(), w_int = w_int_in.contiguous(), w_out = w_out_in.contiguous();
  const auto opts = hs.options();
  at::Tensor d_p = alloc({T, B, 3 * d + k}, opts);
  at::Tensor d_zp = alloc({T, B, d}, opts);
  at::Tensor d_yp = alloc({T, B, d}, opts);
  at::Tensor d_h0 = alloc({B, d}, opts);
  const bool rates = options.rate.defined();
  at::Tensor hd, d_rate_rows, d_dt;  // time decay from rates: what its gradients need
  if (rates) {
    hd = alloc({T, B, d}, opts);
    d_rate_rows = alloc({B, d}, opts);
    d_dt = alloc({T, B}, opts);
  }
  const bool with_o = want_o && (k > 0 || options.mask.defined() || options.hash_mask);
  at::Tensor o = with_o ? alloc({T, B, d}, opts) : at::Tensor();  // the integration inputs
  auto result = [&]() {
    return std::make_tuple(d_p, d_zp, d_yp, d_h0, hd, rates ? d_rate_rows.sum(0) : at::Tensor(), d_dt, o);
  };
  if (B == 0 || d == 0 || T == 0) {
    d_h0.zero_();
    if (rates) d_rate_rows.zero_();
    return result();
  }
  at::Tensor scratch = alloc({B * kBwdScratch * d}, opts);

  AT_DISPATCH_FLOATING_TYPES(dtype, "diru_cpu_scan_bwd", [&] {
    ScanArgs<scalar_t> a{};
    a.T_steps = T;
    a.B = B;
    a.d = d;
    a.h0 = h0.data_ptr<scalar_t>();
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
    set_options(a, options);
    if (rates) {
      a.hd_out = hd.data_ptr<scalar_t>();
      a.d_rate_rows = d_rate_rows.data_ptr<scalar_t>();
      a.d_dt = d_dt.data_ptr<scalar_t>();
    }
    if (with_o) a.o_out = o.data_ptr<scalar_t>();
    run_bwd<scalar_t>(a, scratch.data_ptr<scalar_t>());
  });
  return result();
}

at::Tensor cell_step(const at::Tensor& x_in, const c10::optional<at::Tensor>& h_in, const at::Tensor& w_ih_in,
                     const c10::optional<at::Tensor>& b_ih_in, const at::Tensor& w_hh_in, const at::Tensor& w_int_in,
                     const c10::optional<at::Tensor>& b_int_in, const at::Tensor& w_out_in,
                     const c10::optional<at::Tensor>& b_out_in, int64_t activation,
                     const c10::optional<at::Tensor>& compartment_of) {
  if (is_16bit(x_in.scalar_type()))
    return cell_step_16bit(x_in, h_in, w_ih_in, b_ih_in, w_hh_in, w_int_in, b_int_in, w_out_in, b_out_in, activation,
                           compartment_of);
  check_dtype(x_in, "x");
  TORCH_CHECK(x_in.dim() == 2, "diru_fast cpu kernel: x must be [B, n], got shape ", x_in.sizes());
  TORCH_CHECK(w_hh_in.dim() == 2, "diru_fast cpu kernel: w_hh must be [3d+k, d], got shape ", w_hh_in.sizes());
  const int64_t B = x_in.size(0), n = x_in.size(1), d = w_hh_in.size(1);
  const auto dtype = x_in.scalar_type();
  const Options options = check_options(activation, compartment_of, c10::nullopt, w_hh_in, d);
  const int64_t k = options.k, d3 = 3 * d + k;
  check_tensor(x_in, "x", dtype, {B, n});
  check_tensor(w_ih_in, "w_ih", dtype, {d3, n});
  check_tensor(w_hh_in, "w_hh", dtype, {d3, d});
  check_tensor(w_int_in, "w_int", dtype, {d, d});
  check_tensor(w_out_in, "w_out", dtype, {d, d});
  auto optional = [&](const c10::optional<at::Tensor>& t, const char* name, int64_t size) {
    if (!t.has_value() || !t->defined()) return at::Tensor();
    check_tensor(*t, name, dtype, {size});
    return t->contiguous();
  };
  at::Tensor h;  // None: the zero state
  if (h_in.has_value() && h_in->defined()) {
    check_tensor(*h_in, "h", dtype, {B, d});
    h = h_in->contiguous();
  }
  at::Tensor b_ih = optional(b_ih_in, "b_ih", d3), b_int = optional(b_int_in, "b_int", d);
  at::Tensor b_out = optional(b_out_in, "b_out", d);
  at::Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  at::Tensor w_int = w_int_in.contiguous(), w_out = w_out_in.contiguous();
  at::Tensor out = alloc({B, d}, x.options());
  if (B == 0 || d == 0) return out;

  AT_DISPATCH_FLOATING_TYPES(dtype, "diru_cpu_cell_step", [&] {
    // xp [B, 3d+k] = x w_ih^T + b_ih, into a per-thread buffer beside the step's own scratch
    scalar_t* xp = thread_buffer<scalar_t>(B * d3, 0);
    gemm_rm<scalar_t>(false, true, B, d3, n, scalar_t(1), x.data_ptr<scalar_t>(), n, w_ih.data_ptr<scalar_t>(), n,
                      scalar_t(0), xp, d3);
    if (b_ih.defined()) {
      const scalar_t* b = b_ih.data_ptr<scalar_t>();
      for (int64_t i = 0; i < B; ++i)
        for (int64_t j = 0; j < d3; ++j) xp[i * d3 + j] += b[j];
    }
    ScanArgs<scalar_t> a{};
    a.T_steps = 1;
    a.B = B;
    a.d = d;
    a.xp = xp;
    a.h0 = h.defined() ? h.data_ptr<scalar_t>() : zeros<scalar_t>(B * d);
    a.w_hh = w_hh.data_ptr<scalar_t>();
    a.w_int = w_int.data_ptr<scalar_t>();
    a.b_int = b_int.defined() ? b_int.data_ptr<scalar_t>() : zeros<scalar_t>(d);
    a.w_out = w_out.data_ptr<scalar_t>();
    a.b_out = b_out.defined() ? b_out.data_ptr<scalar_t>() : zeros<scalar_t>(d);
    a.len = nullptr;
    a.hs = out.data_ptr<scalar_t>();
    a.saved = nullptr;
    set_options(a, options);
    run_step<scalar_t>(a, thread_buffer<scalar_t>(B * kFwdScratch * d, 1));
  });
  return out;
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
        py::arg("b_out"), py::arg("lengths"), py::arg("need_saved"), py::arg("activation") = 0,
        py::arg("compartment_of") = py::none(), py::arg("mask") = py::none(), py::arg("decay") = py::none(),
        py::arg("rate") = py::none(), py::arg("dt") = py::none(), py::arg("mask_seed") = py::none(),
        py::arg("mask_threshold") = 0, py::arg("mask_scale") = 1.0, py::call_guard<py::gil_scoped_release>());
  m.def("scan_bwd", &diru_cpu::scan_bwd, "DIRU backward scan over one layer and direction",
        py::arg("grad_hs"), py::arg("h0"), py::arg("hs"), py::arg("saved"), py::arg("w_hh"), py::arg("w_int"),
        py::arg("w_out"), py::arg("lengths"), py::arg("activation") = 0, py::arg("compartment_of") = py::none(),
        py::arg("mask") = py::none(), py::arg("decay") = py::none(), py::arg("rate") = py::none(),
        py::arg("dt") = py::none(), py::arg("mask_seed") = py::none(), py::arg("mask_threshold") = 0,
        py::arg("mask_scale") = 1.0, py::arg("want_o") = false, py::call_guard<py::gil_scoped_release>());
  m.def("scan_fwd_x", &diru_cpu::scan_fwd_x,
        "inference forward over one layer and direction with the input projection inside the time loop",
        py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("b_ih"), py::arg("w_hh"), py::arg("w_int"),
        py::arg("b_int"), py::arg("w_out"), py::arg("b_out"), py::arg("lengths"), py::arg("activation") = 0,
        py::arg("compartment_of") = py::none(), py::arg("decay") = py::none(), py::arg("rate") = py::none(),
        py::arg("dt") = py::none(), py::call_guard<py::gil_scoped_release>());
  m.def("cell_step", &diru_cpu::cell_step, "one inference step of a cell, its input projection included",
        py::arg("x"), py::arg("h"), py::arg("w_ih"), py::arg("b_ih"), py::arg("w_hh"), py::arg("w_int"),
        py::arg("b_int"), py::arg("w_out"), py::arg("b_out"), py::arg("activation") = 0,
        py::arg("compartment_of") = py::none(), py::call_guard<py::gil_scoped_release>());
  m.def("blas_linked", &diru_cpu::blas_linked, "whether torch's BLAS (sgemm_/dgemm_) is callable directly");
  m.def("isa", [] { return std::string(diru_cpu::f32_kernels(diru_cpu::active_isa()).name); },
        "the instruction set of the float32 kernels: 'avx512', 'avx2' (packed micro-kernel products) or 'blas'");
  m.def("supported_isas", [] {
    std::vector<std::string> names;
    for (auto isa : {diru_cpu::Isa::kAvx512, diru_cpu::Isa::kAvx2, diru_cpu::Isa::kBlas})
      if (diru_cpu::isa_supported(isa)) names.push_back(diru_cpu::f32_kernels(isa).name);
    return names;
  }, "the float32 instruction sets this CPU and build run, widest first");
  m.def(
      "set_isa",
      [](const std::string& name) {
        diru_cpu::Isa isa = name == "avx512" ? diru_cpu::Isa::kAvx512 : name == "avx2" ? diru_cpu::Isa::kAvx2
                                                                                      : diru_cpu::Isa::kBlas;
        TORCH_CHECK(name == "avx512" || name == "avx2" || name == "blas",
                    "diru_fast cpu kernel: unknown instruction set '", name, "' (avx512, avx2, blas)");
        TORCH_CHECK(diru_cpu::isa_supported(isa), "diru_fast cpu kernel: this CPU or build does not run ", name);
        std::string previous = diru_cpu::f32_kernels(diru_cpu::active_isa()).name;
        diru_cpu::active_isa() = isa;
        return previous;
      },
      "use instruction set 'avx512', 'avx2' or 'blas' for float32 (tests, tuning); returns the previous one");
  m.def(
      "set_use_blas",
      [](bool enabled) { return diru_cpu::use_blas_flag().exchange(enabled); },
      "use BLAS directly (True) or at::mm_out (False) for the per-step products; returns the previous setting");
  diru_cpu::add_bf16_bindings(m);
  m.attr("source_hash") = DIRU_CSRC_HASH_STR;
}
