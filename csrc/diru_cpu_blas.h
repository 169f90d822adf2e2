// Row-major GEMM for the DIRU CPU kernel: C = alpha * op(A) op(B) + beta * C.
//
// The per-step products are small ([rows, d] x [d, 3d] with rows = a slice of the batch), so
// the per-call overhead matters: we call the Fortran BLAS that libtorch_cpu itself links
// (MKL or OpenBLAS export sgemm_ / dgemm_) directly, with no tensor or dispatcher in between.
// The symbols are declared weak: where the torch build exports no BLAS (e.g. Apple's
// Accelerate builds), the pointers are null and every call goes through at::mm_out on tensor
// views instead — the same numbers, slower. set_use_blas(false) forces that path (tests).
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>

extern "C" {
// Fortran BLAS, LP64 interface (32-bit ints), as linked into libtorch_cpu.
#if defined(__GNUC__) || defined(__clang__)
#define DIRU_WEAK __attribute__((weak))
#else
#define DIRU_WEAK
#endif
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) DIRU_WEAK;
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) DIRU_WEAK;
// MKL only: the calling thread's BLAS thread count (0 = the global setting); returns the previous.
int MKL_Set_Num_Threads_Local(int nthreads) DIRU_WEAK;
}

namespace diru_cpu {

// true: call sgemm_/dgemm_ when linked; false: always at::mm_out (tests exercise both).
inline std::atomic<bool>& use_blas_flag() {
  static std::atomic<bool> flag{true};
  return flag;
}

inline bool blas_linked() {
#if defined(__GNUC__) || defined(__clang__)
  return sgemm_ != nullptr && dgemm_ != nullptr;
#else
  return false;
#endif
}

inline bool blas_active() { return use_blas_flag().load(std::memory_order_relaxed) && blas_linked(); }

// Keeps the BLAS on the calling thread single-threaded while it lives. Each of our threads runs
// its own slice of the batch, and the per-step products are far too small to split further:
// left alone, MKL (which torch configures with dynamic threading off) opens a nested parallel
// region on every call — measured 25% slower at the prototype shape on 2 threads, 15% on 1.
class SequentialBlas {
 public:
  SequentialBlas() {
#if defined(__GNUC__) || defined(__clang__)
    if (MKL_Set_Num_Threads_Local != nullptr) {
      previous_ = MKL_Set_Num_Threads_Local(1);
      active_ = true;
    }
#endif
  }
  ~SequentialBlas() {
#if defined(__GNUC__) || defined(__clang__)
    if (active_) MKL_Set_Num_Threads_Local(previous_);
#endif
  }
  SequentialBlas(const SequentialBlas&) = delete;
  SequentialBlas& operator=(const SequentialBlas&) = delete;

 private:
  int previous_ = 0;
  bool active_ = false;
};

template <typename T>
inline void fortran_gemm(char ta, char tb, int m, int n, int k, T alpha, const T* a, int lda,
                         const T* b, int ldb, T beta, T* c, int ldc);

template <>
inline void fortran_gemm<float>(char ta, char tb, int m, int n, int k, float alpha, const float* a,
                                int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

template <>
inline void fortran_gemm<double>(char ta, char tb, int m, int n, int k, double alpha,
                                 const double* a, int lda, const double* b, int ldb, double beta,
                                 double* c, int ldc) {
  dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// A view of row-major storage as a [rows, cols] tensor with leading dimension ld (transposed:
// the storage holds [cols, rows] and we view its transpose).
template <typename T>
inline at::Tensor view_rm(const T* p, int64_t rows, int64_t cols, int64_t ld, bool transposed) {
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  if (transposed) {
    return at::from_blob(const_cast<T*>(p), {rows, cols}, {1, ld}, opts);
  }
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, opts);
}

// Row-major C[M, N] = alpha * op(A)[M, K] op(B)[K, N] + beta * C.
//   trans_a: A is stored [K, M] (lda >= M), else [M, K] (lda >= K); likewise trans_b for B.
//   beta == 0 never reads C (it may hold NaN poison).
template <typename T>
inline void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                    int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (blas_active()) {
    // Column-major BLAS sees the row-major C as C^T [N, M] = op(B)^T op(A)^T.
    fortran_gemm<T>(trans_b ? 'T' : 'N', trans_a ? 'T' : 'N', static_cast<int>(N), static_cast<int>(M),
                    static_cast<int>(K), alpha, B, static_cast<int>(ldb), A, static_cast<int>(lda), beta, C,
                    static_cast<int>(ldc));
    return;
  }
  at::Tensor a = view_rm(A, M, K, lda, trans_a);
  at::Tensor b = view_rm(B, K, N, ldb, trans_b);
  at::Tensor c = view_rm(static_cast<const T*>(C), M, N, ldc, false);
  if (beta == T(0)) {
    at::mm_out(c, a, b);
    if (alpha != T(1)) c.mul_(alpha);
  } else {
    c.addmm_(a, b, beta, alpha);
  }
}

}  // namespace diru_cpu
