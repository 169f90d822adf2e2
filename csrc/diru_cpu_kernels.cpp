// Instantiations of the time loops (diru_cpu_kernels.h), and the choice of instruction set.
//
// float32 is compiled three times from the same templates: for AVX-512 (x86-64-v4) and AVX2+FMA
// (x86-64-v3) with the packed micro-kernel products (and, for calls too small to pack for, BLAS
// products with that ISA's elementwise code), each entry point with its own `target` attribute
// (everything it calls is inlined into it, so the vector code is generated for that ISA), and once
// for the build's baseline ISA with BLAS products. best_isa() picks the widest the CPU
// runs, once; DIRU_FAST_CPU_ISA=avx512|avx2|blas (or set_isa() from Python) asks for a narrower one,
// so an AVX-512 machine also tests and times the AVX2 path. float64 always uses BLAS products (its
// results must match the float64 contract to 1e-12; the products are not the hot path there).
#include "diru_cpu_kernels.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && DIRU_CPU_HAVE_VECTOR_EXT && \
    !defined(DIRU_CPU_NO_ISA_VARIANTS)
#define DIRU_CPU_ISA_VARIANTS 1
#if defined(__clang__)
#define DIRU_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2,f16c")))
#define DIRU_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2,f16c")))
#else
#define DIRU_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#define DIRU_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#endif
#else
#define DIRU_CPU_ISA_VARIANTS 0
#endif

namespace diru_cpu {
namespace {

struct BarrierSync {
  SpinBarrier& barrier;
  DIRU_INLINE void operator()() const { barrier.wait(); }
};

DIRU_INLINE BlasProducts<float> blas_products(const ScanArgs<float>& a) {
  return BlasProducts<float>{{a.d, a.w_hh, a.w_int, a.w_out, a.w_ih, a.n, a.k}};
}

template <typename G>
DIRU_INLINE PackedProducts<G> products(const PackedWeights& w) {
  PackedProducts<G> p;
  for (int i = 0; i < kProducts; ++i) {
    p.packed[i] = w.panels[i];
    p.k[i] = w.k[i];
    p.nb[i] = w.nb[i];
    p.blocks[i] = w.blocks[i];
  }
  return p;
}

// The kernels of one ISA: G the packed GEMM (void: BLAS only). Every member function is a
// separate entry point compiled for the ISA by the DIRU_KERNELS_FOR macro below.
#define DIRU_KERNELS_FOR(TARGET, SUFFIX, G)                                                                   \
  TARGET int64_t packed_size_##SUFFIX(int p, int64_t k, int64_t n, int64_t blocks) {                          \
    return G::narrow(p) ? G::Narrow::packed_size(k, n, blocks) : G::packed_size(k, n, blocks);                \
  }                                                                                                           \
  TARGET void pack_##SUFFIX(int p, const float* w, int64_t k, int64_t n, bool transposed, int64_t blocks,     \
                            float* out) {                                                                     \
    if (G::narrow(p)) return G::Narrow::pack(w, k, n, transposed, blocks, out);                               \
    G::pack(w, k, n, transposed, blocks, out);                                                                \
  }                                                                                                           \
  TARGET void fwd_##SUFFIX(const ScanArgs<float>& a, const PackedWeights& w, int64_t r0, int64_t r1,          \
                           float* scratch) {                                                                  \
    scan_fwd_rows<float, LaneF>(a, products<G>(w), r0, r1, scratch);                                         \
  }                                                                                                           \
  TARGET void bwd_##SUFFIX(const ScanArgs<float>& a, const PackedWeights& w, int64_t r0, int64_t r1,          \
                           float* scratch) {                                                                  \
    scan_bwd_rows<float, LaneF>(a, products<G>(w), r0, r1, scratch);                                         \
  }                                                                                                           \
  TARGET void fwd_unpacked_##SUFFIX(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch) {       \
    scan_fwd_rows<float, LaneF>(a, blas_products(a), r0, r1, scratch);                                       \
  }                                                                                                           \
  TARGET void bwd_unpacked_##SUFFIX(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch) {       \
    scan_bwd_rows<float, LaneF>(a, blas_products(a), r0, r1, scratch);                                       \
  }                                                                                                           \
  TARGET void fwd_cols_##SUFFIX(const ScanArgs<float>& a, const PackedWeights& w, int64_t c0, int64_t c1,     \
                                float* scratch, SpinBarrier& barrier) {                                       \
    scan_fwd_part<float, LaneF>(a, products<G>(w), 0, a.B, UnitRange{c0, c1}, scratch, BarrierSync{barrier}); \
  }

void fwd_blas(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch) {
  scan_fwd_rows<float, LaneF>(a, blas_products(a), r0, r1, scratch);
}
void bwd_blas(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch) {
  scan_bwd_rows<float, LaneF>(a, blas_products(a), r0, r1, scratch);
}
const F32Kernels kBlasKernels{Isa::kBlas, "blas", 0, nullptr, nullptr, nullptr, nullptr, fwd_blas, bwd_blas, nullptr};

#if DIRU_CPU_ISA_VARIANTS
DIRU_KERNELS_FOR(DIRU_TARGET_AVX512, avx512, GemmAvx512)
DIRU_KERNELS_FOR(DIRU_TARGET_AVX2, avx2, GemmAvx2)
const F32Kernels kAvx512Kernels{Isa::kAvx512, "avx512", GemmAvx512::NR, packed_size_avx512, pack_avx512, fwd_avx512,
                                bwd_avx512, fwd_unpacked_avx512, bwd_unpacked_avx512, fwd_cols_avx512};
const F32Kernels kAvx2Kernels{Isa::kAvx2, "avx2", GemmAvx2::NR, packed_size_avx2, pack_avx2, fwd_avx2, bwd_avx2,
                              fwd_unpacked_avx2, bwd_unpacked_avx2, fwd_cols_avx2};
#endif

Isa isa_from_env(Isa best) {
  const char* v = std::getenv("DIRU_FAST_CPU_ISA");
  if (v == nullptr || *v == '\0') return best;
  Isa asked = std::strcmp(v, "avx512") == 0 ? Isa::kAvx512 : std::strcmp(v, "avx2") == 0 ? Isa::kAvx2 : Isa::kBlas;
  return isa_supported(asked) ? asked : best;
}

}  // namespace

bool isa_supported(Isa isa) {
  if (isa == Isa::kBlas) return true;
#if DIRU_CPU_ISA_VARIANTS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
  if (isa == Isa::kAvx2) return avx2;
  return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

Isa best_isa() {
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kBlas;
}

Isa& active_isa() {
  static Isa isa = isa_from_env(best_isa());
  return isa;
}

const F32Kernels& f32_kernels(Isa isa) {
#if DIRU_CPU_ISA_VARIANTS
  if (isa == Isa::kAvx512) return kAvx512Kernels;
  if (isa == Isa::kAvx2) return kAvx2Kernels;
#endif
  (void)isa;
  return kBlasKernels;
}

void scan_fwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch) {
  scan_fwd_rows<double, LaneD>(a, BlasProducts<double>{{a.d, a.w_hh, a.w_int, a.w_out, a.w_ih, a.n, a.k}}, r0, r1, scratch);
}

void scan_bwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch) {
  scan_bwd_rows<double, LaneD>(a, BlasProducts<double>{{a.d, a.w_hh, a.w_int, a.w_out, a.w_ih, a.n, a.k}}, r0, r1, scratch);
}

}  // namespace diru_cpu
