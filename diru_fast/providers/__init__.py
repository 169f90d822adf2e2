"""Kernel providers: one module per compiled backend, each implementing the kernel contract
of ``diru_fast.scan.contract`` (see ``diru_fast.backends`` for the interface)."""
