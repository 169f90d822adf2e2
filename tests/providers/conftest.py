"""Markers of the GPU suite (tests/providers/test_cuda_gpu.py): bench/gpu_check.sh runs each GPU
backend's tests in its own step by marker, ``-m gpu_triton`` and ``-m gpu_cuda``."""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu_triton: a GPU test of the triton backend (gpu_check.sh's Triton step)")
    config.addinivalue_line("markers", "gpu_cuda: a GPU test of the cuda backend (gpu_check.sh's CUDA step)")
