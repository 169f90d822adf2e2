"""The package's layout: no import circles, and a library core that needs only PyTorch.

- Every module of ``diru_fast`` (the top-level ``kernels/`` and ``csrc/`` folders included, installed
  as ``diru_fast.kernels`` and ``diru_fast.csrc``) is parsed with ``ast``; each import statement,
  at module level or inside a function, and each ``importlib.import_module("diru_fast....")`` is an
  edge to the module it loads. That graph of
  ``diru_fast.*`` modules must have no cycle: no module imports one that imports it back.
- ``import diru_fast`` and the models' forward and backward run with the study's and the analyses'
  dependencies blocked, load neither triton nor ``torch._dynamo``, and take little time over
  ``import torch``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import diru_fast

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "diru_fast"


def _module_files() -> Dict[str, Path]:
    """name -> source file of every module of the package (packages as their ``__init__.py``)."""
    files: Dict[str, Path] = {PACKAGE: Path(diru_fast.__file__)}
    for info in pkgutil.walk_packages(diru_fast.__path__, PACKAGE + ".", onerror=lambda name: None):
        spec = info.module_finder.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files[info.name] = Path(spec.origin)
    # The top-level folders, installed as subpackages: listed without importing them (the
    # kernels need triton).
    for sub in ("kernels", "csrc"):
        spec = importlib.util.find_spec(f"{PACKAGE}.{sub}")
        assert spec is not None and spec.origin, f"{PACKAGE}.{sub} is not importable"
        files[f"{PACKAGE}.{sub}"] = Path(spec.origin)
        for info in pkgutil.iter_modules(spec.submodule_search_locations, f"{PACKAGE}.{sub}."):
            if not info.ispkg:
                files[info.name] = Path(info.module_finder.path) / (info.name.rpartition(".")[2] + ".py")
    return files


def _imports(name: str, path: Path, modules: Set[str]) -> Set[str]:
    """The package modules that module ``name`` (source ``path``) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: Set[str] = set()

    def add(target: str) -> None:
        # the deepest package module that ``target`` names (``a.b.attr`` -> ``a.b``)
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target.startswith(PACKAGE) and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and not node.args[0].value.startswith(".")):
            add(node.args[0].value)  # importlib.import_module("diru_fast.x")
    return found


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _path_within(graph: Dict[str, Set[str]], component: List[str]) -> List[str]:
    """A concrete circle through the first module of ``component``, for the failure message."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component


def test_every_module_is_found():
    files = _module_files()
    for name in ("diru_fast.cli", "diru_fast.modules", "diru_fast.scan.contract", "diru_fast.providers.cpu",
                 "diru_fast.experiments.study", "diru_fast.analyses.cli", "diru_fast.kernels.launch",
                 "diru_fast.kernels.config"):
        assert name in files, f"{name} was not found by the walk"
    assert all(path.is_file() for path in files.values())


def test_import_graph_has_no_cycle():
    files = _module_files()
    modules = set(files)
    graph = {name: _imports(name, path, modules) for name, path in files.items()}
    assert graph["diru_fast.cli"], "the walk found no imports of diru_fast.cli"
    circles = [" -> ".join(_path_within(graph, c)) for c in _cycles(graph)]
    assert not circles, "import circles between diru_fast modules:\n" + "\n".join(circles)


def test_cycle_finder_sees_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _path_within(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# ------------------------------------------------------------------ the core without the extras

OPTIONAL = ("tqdm", "matplotlib", "scipy", "pandas", "sklearn", "statsmodels")
NOT_AT_IMPORT = ("triton", "torch._dynamo", "torch.onnx", "onnx", "onnxruntime", "onnxscript", "matplotlib", "scipy",
                 "pandas", "sklearn", "statsmodels", "aeon", "numba")

_CORE_SCRIPT = """
import json, sys
for name in {optional!r}:
    sys.modules[name] = None  # 'import name' raises ImportError from here on
import torch
import diru_fast
loaded = [m for m in {not_at_import!r} if sys.modules.get(m) is not None]
from diru_fast import functional, backends
torch.manual_seed(0)
model = diru_fast.DIRU(1, 8, 1)
model(torch.randn(2, 3, 1)).sum().backward()
assert all(p.grad is not None for p in model.parameters())
layer = diru_fast.DIRULayer(3, 8, num_layers=2, num_compartments=2)
out, h_n = layer(torch.randn(5, 2, 3, requires_grad=True))
(out.sum() + h_n.sum()).backward()
cell = diru_fast.DIRUCell(3, 8)
cell(torch.randn(2, 3), torch.randn(2, 8)).sum().backward()
x = torch.randn(4, 2, 3)
hs = functional.diru_scan(x, cell.cell_weights(), num_compartments=4)
assert hs.shape == (4, 2, 8)
imported = [m for m in {optional!r} if sys.modules.get(m) is not None]
print(json.dumps({{"loaded_at_import": loaded, "optional_imported": imported,
                  "backend": backends.resolve_backend("auto", torch.device("cpu"), torch.float32)}}))
"""


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # as a user runs it: nothing set
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=300)


def test_core_runs_without_the_study_dependencies():
    proc = _python(_CORE_SCRIPT.format(optional=OPTIONAL, not_at_import=NOT_AT_IMPORT))
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded_at_import"] == [], f"import diru_fast loaded {report['loaded_at_import']}"
    assert report["optional_imported"] == []


def test_core_imports_load_nothing_heavy():
    """Unblocked, as in a full environment: ``import diru_fast`` (and its functional and backends
    modules) load neither triton, ``torch._dynamo`` nor any of the study's packages."""
    code = ("import json, sys, torch\nbefore = set(m for m in sys.modules if sys.modules[m] is not None)\n"
            "import diru_fast, diru_fast.functional, diru_fast.backends\n"
            f"print(json.dumps([m for m in {NOT_AT_IMPORT + OPTIONAL!r} "
            "if sys.modules.get(m) is not None and m not in before]))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_import_adds_little_over_torch():
    code = ("import time\nt0 = time.perf_counter()\nimport torch\nt1 = time.perf_counter()\nimport diru_fast\n"
            "t2 = time.perf_counter()\nprint(t2 - t1)")
    times = []
    for _ in range(3):
        proc = _python(code)
        assert proc.returncode == 0, proc.stderr[-4000:]
        times.append(float(proc.stdout.strip().splitlines()[-1]))
    assert min(times) < 0.5, f"import diru_fast takes {min(times):.3f} s over import torch"
