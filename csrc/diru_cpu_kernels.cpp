// Instantiations of the per-slice time loops (diru_cpu_kernels.h), one per dtype.
//
// float32: the same source compiled for AVX-512, AVX2+FMA and the baseline ISA of the
// build (target_clones; the dynamic loader picks the best one the CPU has), so an
// ahead-of-time build runs on any x86-64 machine and still uses wide vectors. Elsewhere
// (ARM, MSVC) the build's own ISA is used.
#include "diru_cpu_kernels.h"

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(DIRU_CPU_NO_CLONES)
#if defined(__clang__)
#define DIRU_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DIRU_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#else
#define DIRU_CPU_CLONES
#endif

namespace diru_cpu {

DIRU_CPU_CLONES void scan_fwd_rows_f32(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch) {
  scan_fwd_rows<float, LaneF>(a, r0, r1, scratch);
}

DIRU_CPU_CLONES void scan_bwd_rows_f32(const ScanArgs<float>& a, int64_t r0, int64_t r1, float* scratch) {
  scan_bwd_rows<float, LaneF>(a, r0, r1, scratch);
}

void scan_fwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch) {
  scan_fwd_rows<double, LaneD>(a, r0, r1, scratch);
}

void scan_bwd_rows_f64(const ScanArgs<double>& a, int64_t r0, int64_t r1, double* scratch) {
  scan_bwd_rows<double, LaneD>(a, r0, r1, scratch);
}

}  // namespace diru_cpu
