"""One layer, one direction: the DIRU recurrence over a whole sequence, in every backend.

- ``reference_scan``: the seed's per-step, per-compartment loop (backend "reference").
- ``torch_scan``: vectorized pure PyTorch, differentiated by autograd (backend "torch").
- ``contract``: the kernel contract (scan_fwd / scan_bwd) written in plain PyTorch: the
  statement every compiled kernel (C++, CUDA, Triton) must match output for output.
- ``ops``: the ``torch.library`` custom ops through which the compiled kernels run.
"""
