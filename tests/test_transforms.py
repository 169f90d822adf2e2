"""PyTorch's transforms on every backend, checked against backend "torch" in float64.

- ``torch.func``: vmap (over data, folded into the kernel's batch rows; over a model ensemble),
  grad, jacrev, jvp, jacfwd, hessian, per-sample gradients, ``torch.autograd.forward_ad`` and
  ``torch.autograd.functional.jacobian(vectorize=True)``; plus gradcheck of the batching and
  forward-mode rules of ``diru_fast.scan.ops.TransformableScan``.
- autocast (CPU bfloat16 and float16): DIRU is on autocast's float32 list.
- ``quantize_dynamic``, TorchScript (``jit.trace`` + save/load; ``jit.script`` refuses clearly),
  ``torch.compile`` with a varying sequence length (one graph), and module tools that must keep
  working (``clip_grad_norm_``, activation checkpointing).
"""

import warnings

import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, stack_module_state, vmap

import diru_fast
from diru_fast import DIRU, DIRULayer, UnsupportedExportError
from diru_fast.backends import KERNEL_BACKENDS
from diru_fast.scan import ops
from tests.helpers import contract_inputs, cpu_backends, randomize_

BACKENDS = cpu_backends()  # cpu, triton (interpreted), torch, reference, contract: whatever runs here
PROVIDERS = [b for b in BACKENDS if b in KERNEL_BACKENDS] + ["contract"]
TOL = dict(rtol=1e-10, atol=1e-12)


def _layer(backend, n=2, d=6, k=3, layers=2, bidirectional=True, seed=0, dtype=torch.float64):
    return randomize_(DIRULayer(n, d, layers, batch_first=True, bidirectional=bidirectional, num_compartments=k,
                                backend=backend, dtype=dtype), seed=seed)


def _as_backend(module, backend):
    """The same parameters on another backend (a second module sharing nothing but the numbers)."""
    other = type(module)(module.input_size, module.hidden_size, module.num_layers, batch_first=module.batch_first,
                         bidirectional=module.bidirectional, num_compartments=module.num_compartments,
                         backend=backend, dtype=module.weight_hh_l0.dtype)
    other.load_state_dict(module.state_dict())
    return other


# --------------------------------------------------------------------------------- torch.func


@pytest.mark.parametrize("backend", PROVIDERS)
def test_gradcheck_batching_and_forward_mode_rules(backend):
    """gradcheck in float64 of the autograd formula with forward-mode AD (the jvp rule), batched
    gradients (a vmapped backward) and batched forward gradients (the vmap rule over the jvp)."""
    a = contract_inputs(2, 2, 4, seed=5)
    leaves = [a[k].clone().requires_grad_() for k in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")]
    lengths = torch.tensor([2, 1])

    def run(*args):
        return ops.scan(*args, lengths, backend)

    assert torch.autograd.gradcheck(run, leaves, check_forward_ad=True, check_batched_grad=True,
                                    check_batched_forward_grad=True, fast_mode=backend == "triton")


SMALL = (1, 2, 1, 1, 4, 1, 1, False, False)  # (T, V, B, n, d, k, layers, bidirectional, lengths); V: vmapped
LARGE = (4, 2, 3, 3, 48, 3, 2, True, True)
# The large case on the batching rule of the kernel path ("cpu"; the tests' "contract" provider for the
# same rule without a compiler) and on "torch"; the Triton interpreter (~50 ms a launch) and the
# prototype's per-compartment stepping (plain PyTorch ops, which vmap batches itself) run the small one.
VMAP_CASES = [(b, SMALL) for b in BACKENDS] + [(b, LARGE) for b in BACKENDS if b in ("cpu", "contract", "torch")]


@pytest.mark.parametrize("backend, case", VMAP_CASES,
                         ids=lambda c: c if isinstance(c, str) else "T{}-V{}-B{}-n{}-d{}-k{}-L{}-bi{}-len{}".format(*c))
def test_vmap_over_data(backend, case):
    T, V, B, n, d, k, layers, bi, with_lengths = case
    layer = _layer(backend, n, d, k, layers, bi, seed=T + d)
    want_layer = _as_backend(layer, "torch")
    xs = torch.randn(V, B, T, n, dtype=torch.float64)
    h0s = torch.randn(V, layers * (2 if bi else 1), B, d, dtype=torch.float64)
    lengths = torch.tensor([T - (b % T) for b in range(B)]) if with_lengths else None
    out, h_n = vmap(lambda x, h: layer(x, h, lengths))(xs, h0s)  # [V, B, T, D*d], [V, L*D, B, d]
    for i in range(V):
        want_out, want_h = want_layer(xs[i], h0s[i], lengths)
        torch.testing.assert_close(out[i], want_out, **TOL)
        torch.testing.assert_close(h_n[i], want_h, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_model_ensemble_forward_and_grad(backend):
    """An ensemble of V models stacked with stack_module_state: one vmapped call, each member's
    output and gradients equal that model's own on backend "torch"."""
    V, B, T, n = 2, 2, 4, 2
    models = [randomize_(DIRU(n, 6, 1, num_compartments=3, num_layers=2, backend=backend).double(), seed=s)
              for s in range(V)]
    params, buffers = stack_module_state(models)
    shell = models[0]
    x = torch.randn(B, T, n, dtype=torch.float64)
    lengths = torch.tensor([4, 2])

    def member(p, b, x):
        return functional_call(shell, (p, b), (x, lengths))

    def loss(p, b, x):
        return member(p, b, x).sin().sum()

    out = vmap(member, in_dims=(0, 0, None))(params, buffers, x)  # [V, B, 1]
    grads = vmap(grad(loss), in_dims=(0, 0, None))(params, buffers, x)
    for i, model in enumerate(models):
        model.backend = "torch"
        want = model(x, lengths)
        torch.testing.assert_close(out[i], want, **TOL)
        names = [name for name, _ in model.named_parameters()]
        want_grads = torch.autograd.grad(want.sin().sum(), list(model.parameters()))
        for name, g in zip(names, want_grads):
            torch.testing.assert_close(grads[name][i], g, **TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_jacrev_jvp_jacfwd(backend):
    layer = _layer(backend, layers=1, bidirectional=False, seed=3)
    want_layer = _as_backend(layer, "torch")
    x = torch.randn(2, 3, 2, dtype=torch.float64)  # [B, T, n]
    lengths = torch.tensor([3, 2])
    params = {name: p.detach() for name, p in layer.named_parameters()}
    t_x = torch.randn_like(x)
    t_params = {name: torch.randn_like(p) for name, p in params.items()}

    def results(module):
        def f(p, x):
            return functional_call(module, p, (x, None, lengths))[0]  # [B, T, d]

        def loss(p, x):
            return f(p, x).tanh().sum()

        return [grad(loss)(params, x), jacrev(f, argnums=1)(params, x),
                jvp(f, (params, x), (t_params, t_x)), jacfwd(f, argnums=1)(params, x)]

    got, want = results(layer), results(want_layer)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients(backend):
    model = randomize_(DIRU(2, 6, 1, num_compartments=3, backend=backend).double(), seed=2)
    params = {name: p.detach() for name, p in model.named_parameters()}
    xs, ys = torch.randn(3, 5, 2, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)

    def loss(p, x, y):  # one sample: x [T, n], y [1]
        return (functional_call(model, p, (x.unsqueeze(0),))[0] - y).pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
    model.backend = "torch"
    for i in range(3):
        want = torch.autograd.grad((model(xs[i:i + 1])[0] - ys[i]).pow(2).sum(), list(model.parameters()))
        for (name, _), g in zip(model.named_parameters(), want):
            torch.testing.assert_close(per_sample[name][i], g, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_ad_and_vectorized_jacobian(backend):
    """torch.autograd.forward_ad dual tensors, torch.autograd.functional's vectorized jacobian (it
    batches with PyTorch's older vmap) and the hessian as jacfwd(jacrev) (forward over reverse)."""
    layer = _layer(backend, layers=1, seed=4)
    want_layer = _as_backend(layer, "torch")
    x, tangent = torch.randn(2, 3, 2, dtype=torch.float64), torch.randn(2, 3, 2, dtype=torch.float64)
    h0 = torch.randn(2, 1, 6, dtype=torch.float64)
    fwd = torch.autograd.forward_ad
    results = []
    for module in (layer, want_layer):
        with fwd.dual_level():
            out, h_n = module(fwd.make_dual(x, tangent))
            t_out, t_h = fwd.unpack_dual(out).tangent, fwd.unpack_dual(h_n).tangent
        jac = torch.autograd.functional.jacobian(lambda x: module(x)[0], x, vectorize=True)
        hess = torch.func.hessian(lambda h: module(x[:1, :2], h)[1].pow(2).sum())(h0)  # [2, 1, 6, 2, 1, 6]
        results.append((out.detach(), t_out, t_h, jac, hess))
    torch.testing.assert_close(results[0], results[1], **TOL)


# ----------------------------------------------------------------------------------- autocast


@pytest.mark.parametrize("backend, dtype", [(b, torch.bfloat16) for b in BACKENDS] + [
    (b, torch.float16) for b in BACKENDS if b in ("cpu", "torch")], ids=str)
def test_autocast_runs_diru_in_float32(backend, dtype):
    """Under CPU autocast a float32 DIRU layer computes exactly what it computes without autocast
    (float32 outputs and state, the same gradients); it takes a 16-bit input (as an autocast layer
    before it hands over); the model's linear head autocasts as usual."""
    torch.manual_seed(0)
    model = randomize_(DIRU(3, 12, 2, num_compartments=3, num_layers=2, backend=backend), seed=1)
    x = torch.randn(3, 4, 3)
    lengths = torch.tensor([4, 1, 3])
    want_out, want_h = model.rnn(x, lengths=lengths)
    want_grads = torch.autograd.grad(want_out.sum() + want_h.sum(), list(model.rnn.parameters()))
    with torch.autocast("cpu", dtype=dtype):
        out, h_n = model.rnn(x, lengths=lengths)
        out16, _ = model.rnn(x.to(dtype), lengths=lengths)
        y = model(x, lengths)
    assert out.dtype == h_n.dtype == torch.float32 and y.dtype == dtype
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    torch.testing.assert_close(h_n, want_h, rtol=0, atol=0)
    torch.testing.assert_close(out16, model.rnn(x.to(dtype).float(), lengths=lengths)[0], rtol=0, atol=0)
    torch.testing.assert_close(y.float(), model(x, lengths), rtol=0.02, atol=0.02)  # the head in 16 bits
    grads = torch.autograd.grad(out.sum() + h_n.sum(), list(model.rnn.parameters()))
    for g, w in zip(grads, want_grads):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_autocast_leaves_float64_alone_and_covers_diru_scan():
    cell = randomize_(diru_fast.DIRUCell(3, 8, num_compartments=2, dtype=torch.float64))
    layer = _layer("auto", n=3, d=8, k=2, layers=1)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hs = diru_fast.functional.diru_scan(x, cell.cell_weights(), num_compartments=2)
        out, _ = layer(x)
    assert hs.dtype == out.dtype == torch.float64
    torch.testing.assert_close(hs, diru_fast.functional.diru_scan(x, cell.cell_weights()), rtol=0, atol=0)
    torch.testing.assert_close(out, layer(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("backend", PROVIDERS)
def test_custom_ops_declare_float32_under_autocast(backend):
    """The custom ops (what compiled and exported graphs call) cast 16-bit inputs to float32 under
    autocast, so a graph whose projection autocasts hands the kernel what it supports."""
    a = {k: v.float() for k, v in contract_inputs(4, 3, 8).items()}
    xp16 = a["xp"].bfloat16()
    args = (a["h0"], a["w_hh"], a["w_int"], a["b_int"], a["w_out"], a["b_out"], None, backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hs, saved = torch.ops.diru_fast.scan_fwd(xp16, *args, True)
        d_p, d_zp, d_yp, d_h0 = torch.ops.diru_fast.scan_bwd(torch.ones_like(hs).bfloat16(), a["h0"], hs, saved,
                                                             a["w_hh"], a["w_int"], a["w_out"], None, backend)
    want_hs, want_saved = torch.ops.diru_fast.scan_fwd(xp16.float(), *args, True)
    assert hs.dtype == saved.dtype == d_p.dtype == d_h0.dtype == torch.float32
    torch.testing.assert_close((hs, saved), (want_hs, want_saved), rtol=0, atol=0)


@pytest.mark.no_poison
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("cpu", "torch")])
def test_autocast_in_compiled_graph(backend):
    """torch.compile(fullgraph=True) traces the float32-under-autocast rule (no graph break)."""
    torch._dynamo.reset()
    layer = _layer(backend, n=3, d=8, k=2, layers=1, dtype=torch.float32)
    x = torch.randn(2, 5, 3)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out, _ = compiled(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, layer(x)[0], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- quantize_dynamic


@pytest.mark.parametrize("backend, spec", [(b, {torch.nn.Linear}) for b in BACKENDS] + [("auto", None)], ids=str)
def test_quantize_dynamic_quantizes_the_head(backend, spec):
    """DIRU's recurrence keeps its float parameters (no quantized kernel exists for it); the linear
    head becomes a dynamically quantized int8 Linear; the outputs stay close to float."""
    torch.manual_seed(0)
    model = DIRU(3, 16, 4, num_compartments=4, num_layers=2, backend=backend).eval()
    x = torch.randn(3, 5, 3)
    q = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    assert isinstance(q.fc_out, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(q.rnn, DIRULayer)
    for (name, p), (_, p_q) in zip(model.rnn.named_parameters(), q.rnn.named_parameters()):
        assert torch.equal(p, p_q), name
    with torch.no_grad():
        want, got = model(x), q(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0.02 * want.abs().max().item())


# ---------------------------------------------------------------------------------- TorchScript


class _UserModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = DIRULayer(3, 8, num_compartments=2)

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize("make", [lambda: DIRU(3, 8, 1, num_compartments=2), lambda: DIRULayer(3, 8), _UserModel],
                         ids=["DIRU", "DIRULayer", "inside-a-user-model"])
def test_jit_script_names_the_supported_paths(make):
    with pytest.raises(UnsupportedExportError, match=r"torch\.export\.export.*torch\.jit\.trace"):
        torch.jit.script(make())


class _WithLengths(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, lengths):
        return self.layer(x, None, lengths)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_trace_save_load_runs_any_length(backend, tmp_path):
    """A traced layer records the recurrence as the custom op diru_fast::scan_fwd (not unrolled,
    not constant-folded): saved and loaded, it runs other batch sizes and sequence lengths."""
    layer = _layer(backend, n=3, d=6, k=3, layers=1).eval()  # bidirectional
    model = _WithLengths(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the Python-side input checks
        traced = torch.jit.trace(model, (torch.randn(2, 5, 3, dtype=torch.float64), torch.tensor([5, 3])))
    assert "diru_fast::scan_fwd" in str(traced.inlined_graph)
    torch.jit.save(traced, tmp_path / "diru.pt")
    loaded = torch.jit.load(tmp_path / "diru.pt")
    want_model = _WithLengths(_as_backend(layer, "torch"))
    for T, B in [(1, 1), (8, 3)]:
        x = torch.randn(B, T, 3, dtype=torch.float64)
        lengths = torch.tensor([T - (b % T) for b in range(B)])
        torch.testing.assert_close(loaded(x, lengths), want_model(x, lengths), **TOL)


def test_jit_traced_module_has_no_silent_backward():
    layer = _layer("auto", n=3, d=6, k=3, layers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(layer, (torch.randn(2, 5, 3, dtype=torch.float64),))
    out, _ = traced(torch.randn(2, 4, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="no autograd formula"):
        out.sum().backward()


# -------------------------------------------------------------------- torch.compile, dynamic T


@pytest.mark.no_poison
@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_one_graph_for_every_length(backend):
    """dynamic=True: one graph for every sequence length and batch size (from 2 up: PyTorch
    specializes sizes 0 and 1), forward and backward equal to eager. Every backend traces the custom
    ops: the compiled ones with their kernel, "torch" and "reference" with the contract as the kernel."""
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("eager")
    layer = _layer(backend, n=2, d=6, k=3, layers=1)
    want_layer = _as_backend(layer, "torch")
    compiled = torch.compile(layer, backend=counter, dynamic=True, fullgraph=True)
    graphs = None
    for T, B in [(4, 3), (2, 2)]:
        x = torch.randn(B, T, 2, dtype=torch.float64, requires_grad=True)
        lengths = torch.tensor([T - (b % T) for b in range(B)])
        out, h_n = compiled(x, None, lengths)
        want_out, want_h = want_layer(x, None, lengths)
        torch.testing.assert_close((out, h_n), (want_out, want_h), **TOL)
        got = torch.autograd.grad(out.sum() + h_n.sum(), [x] + list(layer.parameters()))
        want = torch.autograd.grad(want_out.sum() + want_h.sum(), [x] + list(want_layer.parameters()))
        torch.testing.assert_close(got, want, **TOL)
        graphs = graphs or counter.frame_count  # the first call compiles (AOTAutograd may restart once)
    assert counter.frame_count == graphs, "compiled again for a new length"


@pytest.mark.no_poison
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("cpu", "torch")])
def test_compile_default_dynamic_compiles_twice_at_most(backend):
    """Without dynamic=True PyTorch compiles a static graph first and a dynamic one when T first
    changes; no later length compiles again."""
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("eager")
    model = DIRU(2, 8, 1, num_compartments=2, backend=backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    counts = []
    for T in (5, 7, 12):
        compiled(torch.randn(3, T, 2)).sum().backward()
        counts.append(counter.frame_count)
    assert counts == [1, 2, 2]


# ------------------------------------------------------------------ module tools that keep working


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_clip_grad_norm_and_activation_checkpointing(backend):
    model = randomize_(DIRU(3, 8, 1, num_compartments=2, num_layers=2, backend=backend).double())
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    want = torch.autograd.grad(model(x).sum(), [x] + list(model.parameters()))
    y = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=False)
    y.sum().backward()
    for g, w in zip([x.grad] + [p.grad for p in model.parameters()], want):
        torch.testing.assert_close(g, w, **TOL)
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
    assert torch.isclose(total, torch.cat([w.flatten() for w in want[1:]]).norm())
    clipped = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert clipped <= 1e-3 * (1 + 1e-6)
