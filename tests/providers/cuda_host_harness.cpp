// Runs the CUDA kernels of csrc/cuda/diru_scan_kernels.cuh on the CPU, for tests without a GPU
// (tests/providers/test_cuda.py): one host thread per CUDA thread, __syncthreads as a barrier,
// blocks one after the other, shared memory NaN-filled before each block (a read of a word the
// block did not write shows up as NaN). The kernel source is compiled as is by g++ against the
// CUDA headers (which turn __global__ / __device__ / __shared__ into nothing on the host); this
// file only supplies the CUDA built-ins. float64 instantiations only (the contract check is
// float64); the launch configuration follows diru_scan.cu's launchers, the thread count may be
// overridden to exercise the loops where a thread owns several units.
//
//   cuda_host_harness fwd|bwd OPT DIR THREADS
//     OPT: 0 = the plain instantiation (kOpt = false), 1 = the options one
//     DIR: folder with meta.txt ("T B d k relu has_lengths has_mask has_decay need_saved has_rate
//          hash_mask seed_lo seed_hi threshold scale want_o") and the inputs as raw native-endian files
//          (float64; lengths int64; compartment_of int32; mask, decay [T,B,d] float64 where on; with
//          has_rate: rate [d] and dt [T,B] float64, time decay formed in the step; with hash_mask: the
//          dropout mask from the seed's halves, threshold and scale), outputs written there
//     THREADS: threads per block, 0 = the launchers' threads_for(d)
//   fwd reads xp [T,B,3d+k], h0 [B,d], w_hh_t [d,3d+k], w_int_t [d,d], b_int [d], w_out_t [d,d], b_out [d]
//       (the transposes the bindings pass), writes hs [T,B,d] and saved [T,B,4d+k] (if need_saved)
//   bwd reads grad_hs, hs [T,B,d], saved [T,B,4d+k], w_hh [3d+k,d], w_int, w_out [d,d] (and h0 with
//       has_rate), writes d_p [T,B,3d+k], d_zp, d_yp [T,B,d], d_h0 [B,d]; with has_rate also hd [T,B,d],
//       d_rate [blocks,d] (each block's part) and d_dt [T,B]; with want_o also o [T,B,d]
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

// The CUDA built-ins the kernels use, declared before the kernel source so its names find them.
#define __launch_bounds__(...)  // host compilers get no definition from the CUDA headers
thread_local uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
std::unique_ptr<std::barrier<>> block_barrier;
void __syncthreads() { block_barrier->arrive_and_wait(); }

namespace diru_fast {
namespace cuda {
namespace {
constexpr size_t kSharedBytes = size_t(1) << 22;
alignas(16) unsigned char smem_raw[kSharedBytes];  // the kernels' `extern __shared__ unsigned char smem_raw[]`
}  // namespace
}  // namespace cuda
}  // namespace diru_fast

#include "diru_scan_kernels.cuh"

namespace {

using diru_fast::cuda::kRows;

template <typename T> std::vector<T> load(const std::string& dir, const char* name, size_t n) {
  std::vector<T> v(n);
  std::ifstream f(dir + "/" + name, std::ios::binary);
  if (!f) { std::fprintf(stderr, "missing %s\n", name); std::exit(2); }
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
  if (f.gcount() != static_cast<std::streamsize>(n * sizeof(T))) {
    std::fprintf(stderr, "short %s\n", name);
    std::exit(2);
  }
  return v;
}

template <typename T> void store(const std::string& dir, const char* name, const std::vector<T>& v) {
  std::ofstream f(dir + "/" + name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}

std::vector<double> poisoned(size_t n) { return std::vector<double>(n, std::numeric_limits<double>::quiet_NaN()); }

// Runs body() as grid blocks of `threads` threads, one block after the other.
template <typename F> void launch(int64_t batch, unsigned threads, F body) {
  const unsigned grid = static_cast<unsigned>((batch + kRows - 1) / kRows);
  blockDim = dim3(threads, 1, 1);
  for (unsigned blk = 0; blk < grid; ++blk) {
    blockIdx = make_uint3(blk, 0, 0);
    double* smem = reinterpret_cast<double*>(diru_fast::cuda::smem_raw);
    for (size_t i = 0; i < diru_fast::cuda::kSharedBytes / sizeof(double); ++i) {
      smem[i] = std::numeric_limits<double>::quiet_NaN();
    }
    block_barrier = std::make_unique<std::barrier<>>(threads);
    std::vector<std::thread> pool;
    for (unsigned tid = 0; tid < threads; ++tid) {
      pool.emplace_back([&body, tid] {
        threadIdx = make_uint3(tid, 0, 0);
        body();
      });
    }
    for (auto& th : pool) th.join();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) { std::fprintf(stderr, "usage: %s fwd|bwd OPT DIR THREADS\n", argv[0]); return 2; }
  const std::string mode = argv[1], dir = argv[3];
  const bool opt = std::string(argv[2]) == "1";
  int64_t T, B, d, k, relu, has_lengths, has_mask, has_decay, need_saved, has_rate, hash_mask, want_o;
  uint32_t seed_lo, seed_hi, threshold;
  double scale;
  {
    std::ifstream meta(dir + "/meta.txt");
    if (!(meta >> T >> B >> d >> k >> relu >> has_lengths >> has_mask >> has_decay >> need_saved >> has_rate >>
          hash_mask >> seed_lo >> seed_hi >> threshold >> scale >> want_o)) {
      return 2;
    }
  }
  if (!opt && (k > 0 || relu || has_mask || has_decay || has_rate || hash_mask || want_o)) {
    std::fprintf(stderr, "the plain instantiation (OPT 0) takes no option\n");
    return 2;
  }
  const unsigned threads = std::atoi(argv[4]) > 0 ? static_cast<unsigned>(std::atoi(argv[4]))
                                                   : diru_fast::cuda::threads_for(d);
  const int64_t pw = 3 * d + k, sw = 4 * d + k;
  std::vector<int64_t> lengths = has_lengths ? load<int64_t>(dir, "lengths", B) : std::vector<int64_t>();
  std::vector<int32_t> comp = k > 0 ? load<int32_t>(dir, "compartment_of", d) : std::vector<int32_t>();
  std::vector<double> mask = has_mask ? load<double>(dir, "mask", T * B * d) : std::vector<double>();
  std::vector<double> decay = has_decay ? load<double>(dir, "decay", T * B * d) : std::vector<double>();
  const int64_t* lens = has_lengths ? lengths.data() : nullptr;
  const int32_t* cp = k > 0 ? comp.data() : nullptr;
  const double* mk = has_mask ? mask.data() : nullptr;
  const double* dk = has_decay ? decay.data() : nullptr;
  std::vector<double> rate = has_rate ? load<double>(dir, "rate", d) : std::vector<double>();
  std::vector<double> dt = has_rate ? load<double>(dir, "dt", T * B) : std::vector<double>();
  diru_fast::cuda::InStep<double> in;
  in.rate = has_rate ? rate.data() : nullptr;
  in.dt = has_rate ? dt.data() : nullptr;
  in.hash_mask = hash_mask != 0;
  in.seed_lo = seed_lo;
  in.seed_hi = seed_hi;
  in.threshold = threshold;
  in.scale = scale;
  if (mode == "fwd") {
    auto xp = load<double>(dir, "xp", T * B * pw), h0 = load<double>(dir, "h0", B * d);
    auto w_hh_t = load<double>(dir, "w_hh_t", d * pw), w_int_t = load<double>(dir, "w_int_t", d * d);
    auto b_int = load<double>(dir, "b_int", d), w_out_t = load<double>(dir, "w_out_t", d * d);
    auto b_out = load<double>(dir, "b_out", d);
    auto hs = poisoned(T * B * d), saved = poisoned(need_saved ? T * B * sw : 0);
    double* sv = need_saved ? saved.data() : nullptr;
    launch(B, threads, [&] {
      if (opt) {
        diru_fast::cuda::diru_fwd_kernel<double, true>(xp.data(), h0.data(), w_hh_t.data(), w_int_t.data(),
                                                       b_int.data(), w_out_t.data(), b_out.data(), lens, hs.data(), sv,
                                                       T, B, d, relu != 0, k, cp, mk, dk, in);
      } else {
        diru_fast::cuda::diru_fwd_kernel<double, false>(xp.data(), h0.data(), w_hh_t.data(), w_int_t.data(),
                                                        b_int.data(), w_out_t.data(), b_out.data(), lens, hs.data(),
                                                        sv, T, B, d, false, 0, nullptr, nullptr, nullptr,
                                                        diru_fast::cuda::InStep<double>());
      }
    });
    store(dir, "hs", hs);
    if (need_saved) store(dir, "saved", saved);
  } else {
    auto grad_hs = load<double>(dir, "grad_hs", T * B * d), hs = load<double>(dir, "hs", T * B * d);
    auto saved = load<double>(dir, "saved", T * B * sw), w_hh = load<double>(dir, "w_hh", pw * d);
    auto w_int = load<double>(dir, "w_int", d * d), w_out = load<double>(dir, "w_out", d * d);
    auto d_p = poisoned(T * B * pw), d_zp = poisoned(T * B * d), d_yp = poisoned(T * B * d), d_h0 = poisoned(B * d);
    const int64_t blocks = (B + kRows - 1) / kRows;
    auto h0 = has_rate ? load<double>(dir, "h0", B * d) : std::vector<double>();
    auto hd = poisoned(has_rate ? T * B * d : 0), d_rate = poisoned(has_rate ? blocks * d : 0);
    auto d_dt = poisoned(has_rate ? T * B : 0), o = poisoned(want_o ? T * B * d : 0);
    in.hd = has_rate ? hd.data() : nullptr;
    in.d_rate = has_rate ? d_rate.data() : nullptr;
    in.d_dt = has_rate ? d_dt.data() : nullptr;
    in.o = want_o ? o.data() : nullptr;
    launch(B, threads, [&] {
      if (opt) {
        diru_fast::cuda::diru_bwd_kernel<double, true>(grad_hs.data(), hs.data(), saved.data(), w_hh.data(),
                                                       w_int.data(), w_out.data(), lens, d_p.data(), d_zp.data(),
                                                       d_yp.data(), d_h0.data(), T, B, d, relu != 0, k, cp, mk, dk, in,
                                                       has_rate ? h0.data() : nullptr);
      } else {
        diru_fast::cuda::diru_bwd_kernel<double, false>(grad_hs.data(), hs.data(), saved.data(), w_hh.data(),
                                                        w_int.data(), w_out.data(), lens, d_p.data(), d_zp.data(),
                                                        d_yp.data(), d_h0.data(), T, B, d, false, 0, nullptr, nullptr,
                                                        nullptr, diru_fast::cuda::InStep<double>(), nullptr);
      }
    });
    store(dir, "d_p", d_p);
    store(dir, "d_zp", d_zp);
    store(dir, "d_yp", d_yp);
    store(dir, "d_h0", d_h0);
    if (has_rate) {
      store(dir, "hd", hd);
      store(dir, "d_rate", d_rate);
      store(dir, "d_dt", d_dt);
    }
    if (want_o) store(dir, "o", o);
  }
  return 0;
}
