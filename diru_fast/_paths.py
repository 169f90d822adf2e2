"""Where the top-level kernels/ and csrc/ folders are, installed or in a source checkout.

An install (``pip install .``) places them at ``diru_fast/kernels`` and ``diru_fast/csrc``;
in a source checkout (or an editable install) they sit beside the package. Loading them
by path from here always takes the tree this very package came from.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent


def source_dir(name: str) -> Path:
    """The directory of the top-level folder ``name`` ("kernels" or "csrc")."""
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if (candidate / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError(f"diru_fast: the {name}/ folder is missing beside {PACKAGE_DIR}; reinstall the package")


def import_kernels() -> ModuleType:
    """Import the Triton kernels package as ``diru_fast.kernels`` (raises ImportError if triton is missing)."""
    module = sys.modules.get("diru_fast.kernels")
    if module is not None:
        return module
    directory = source_dir("kernels")
    spec = importlib.util.spec_from_file_location(
        "diru_fast.kernels", directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["diru_fast.kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["diru_fast.kernels"]
        raise
    return module
