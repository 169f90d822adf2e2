"""Triton kernels for the DIRU recurrence (installed as ``diru_fast.kernels``)."""
