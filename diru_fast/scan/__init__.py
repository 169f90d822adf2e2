"""One layer, one direction: the DIRU recurrence over a whole sequence, on every backend.

- ``contract``: the kernel contract (scan_fwd / scan_bwd) in plain PyTorch: the statement every
  compiled kernel (C++, CUDA, Triton) must match output for output; differentiated by autograd,
  its forward is backend "torch".
- ``ops``: the one autograd formula of the compiled backends and the ``torch.library`` custom ops
  through which they are traced.
- ``dropout``: compartment dropout's mask as one seed and a counter-based hash (evaluated in the CPU
  kernel's step, materialized for every other path).
- ``reference_scan``: the prototype's own cell stepped in time (backend "reference").
"""
