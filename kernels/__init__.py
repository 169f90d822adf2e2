"""Triton kernels for the DIRU recurrence (installed as ``diru_fast.kernels``).

(Design notes: see the end of this docstring once written.)
"""

from .config import KernelConfig, all_configs, choose, pad_hidden
from .launch import INTERPRETED, SUPPORTED_DTYPES, scan_bwd, scan_fwd

__all__ = ["KernelConfig", "all_configs", "choose", "pad_hidden", "INTERPRETED", "SUPPORTED_DTYPES",
           "scan_fwd", "scan_bwd"]
