"""Every Triton kernel configuration the dispatcher can pick (training and inference forward,
backward) compiles for sm_80 and sm_90 without a GPU, fits shared memory, and does not spill; so do
the option variants (relu, dropout, time decay, all but attention, all three or four with attention
at k = 4, and all four formed in the step: the seeded mask, time decay from rates, the integration inputs;
each run with the configuration the launcher gives it) of the representative subset
``compile_check.option_variants`` names (kernels/compile_check.py; it needs the compiler, not the
interpreter, so it runs in a subprocess without TRITON_INTERPRET)."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _has_triton_cuda_backend():
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_triton_cuda_backend(),
                    reason="triton (with its NVIDIA backend and ptxas) is not installed")
def test_every_dispatcher_config_compiles_for_sm80_and_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out_json = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, str(ROOT / "kernels" / "compile_check.py"), "--workers", "2",
                           "--json", str(out_json)], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=1200)
    print(proc.stdout[-6000:])  # the register / shared-memory table, shown with -s or on failure
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads(out_json.read_text())
    config = importlib.import_module("diru_fast.kernels.config")  # the dispatcher's table
    check = importlib.import_module("diru_fast.kernels.compile_check")
    picked = {(cfg.label(), dtype) for cfg, dtype in config.all_configs()}
    variants = {(cfg.label(), dtype, o) for cfg, dtype in config.all_configs()
                for o in check.option_variants(cfg, dtype)}
    # attention alone is not among them: its streamed d_pad 256 variant runs per step now; it is compiled with the
    # other options in "all" / "all_decay" (resident, streamed d_pad 128, per step)
    assert {o for _, _, o in variants} == {"relu", "dropout", "decay", "all", "all_decay", "no_attention", "fused"}
    for everything in ("all", "all_decay", "fused"):  # every option at once, in each regime
        assert {cfg.split("-")[0] for cfg, _, o in variants if o == everything} == {"resident", "streamed", "step"}
    for arch in (80, 90):
        compiled = {(r["config"], r["dtype"]) for r in rows
                    if r["arch"] == arch and r["even"] and r["options"] == "none"}
        assert compiled == picked, f"sm_{arch}: configs not compiled: {picked - compiled}"
        with_options = {(r["config"], r["dtype"], r["options"]) for r in rows
                        if r["arch"] == arch and r["options"] != "none"}
        assert with_options == variants, f"sm_{arch}: option variants not compiled: {variants - with_options}"
    assert {r["kernel"] for r in rows} >= {"fwd_persistent", "fwd_persistent_infer", "bwd_persistent", "bwd_step_att"}
    for r in rows:
        assert r["shared"] <= r["shared_limit"]
        if r["kernel"].endswith("_infer"):  # the inference forward: a few bytes tolerated (compile_check.py)
            assert r["registers"] > 0 and r["spill_stores"] <= (32 if r["even"] else 320), r
        else:
            assert r["registers"] > 0 and (not r["even"] or r["spill_stores"] == 0), r
        # the approximate instructions are exactly the ones tests/providers/ptx_math.py emulates: every
        # forward kernel (tanh, sigmoid: exp and a division) holds both, the backwards (saved gates) none but
        # the exp of time decay's factors formed from rates (the kernels that carry dh through the decay)
        rates = check.OPTION_FLAGS[r["options"]]["DECAY_RATE"] and r["kernel"] in (
            "bwd_persistent", "bwd_step_dh", "bwd_step_dh_final")
        expected = (["div.full.f32", "ex2.approx.f32"] if r["kernel"].startswith("fwd")
                    else ["ex2.approx.f32"] if rates else [])
        assert r["approx"] == expected, r


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_all_options_run_compiles_every_variant_the_dispatcher_runs():
    """``compile_check.py --all-options`` (run by hand, not in CI: about five times the suite's check)
    compiles every option variant, k = 4 and k = 18, that the dispatcher runs with each config; the
    suite's subset is smaller. Attention at streamed d_pad 256, k = 18 at streamed d_pad >= 128 and
    dropout with decay at fp32 d_pad 256 run the per-step kernels (config.choose): not built for the
    streamed configs."""
    spec = importlib.util.spec_from_file_location("compile_check", ROOT / "kernels" / "compile_check.py")
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    config = importlib.import_module("diru_fast.kernels.config")
    every = set(cc.OPTION_FLAGS) - {"none"}
    assert {"attention18", "all18", "decay", "all_decay", "no_attention", "fused", "fused_no_attention"} <= every
    assert cc.OPTION_FLAGS["all18"]["K_PAD"] >= 18
    assert cc.OPTION_FLAGS["all_decay"] == dict(cc.OPTION_FLAGS["all"], HAS_DECAY=True)
    assert cc.OPTION_FLAGS["fused"] == dict(cc.OPTION_FLAGS["all_decay"], MASK_HASH=True, DECAY_RATE=True,
                                            WANT_O=True)
    attention = {name for name in every if cc.OPTION_FLAGS[name]["NK"]}
    for d, dtype, excluded in ((64, "bfloat16", set()), (64, "float32", set()), (512, "float16", set()),
                               (128, "bfloat16", {"attention18", "all18"}),
                               (256, "float32", attention | {"no_attention", "fused_no_attention"}),
                               (256, "bfloat16", attention | {"fused_no_attention"})):
        cfg = config.choose(d, dtype)
        assert set(cc.option_variants(cfg, dtype, every=True)) == every - excluded, (d, dtype)
        assert set(cc.option_variants(cfg, dtype)) <= every - excluded


@pytest.mark.skipif(not _has_triton_cuda_backend(),
                    reason="triton (with its NVIDIA backend and ptxas) is not installed")
def test_tf32x3_lowers_as_the_cpu_emulation_assumes():
    """Triton's 3xTF32 dot, compiled for sm_80 and sm_90: one cvt.rna per operand element (high parts
    only), as many fp32 subtractions (the low parts, unconverted: the MMA reads them truncated), three
    products of mma.sync and no wgmma: what tests/providers/ptx_math.py emulates (and
    bench/GPU_MODEL.md assumes)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, sys; sys.path.insert(0, 'kernels'); import compile_check as c; "
            "print(json.dumps([c.tf32x3_ptx_counts(80), c.tf32x3_ptx_counts(90)]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for counts in json.loads(proc.stdout.strip().splitlines()[-1]):
        n = counts["elements_per_thread"]
        assert counts["cvt_rna_tf32"] == n and counts["sub_f32"] == n, counts
        assert counts["mma_tf32"] == 3 * 4 and counts["wgmma"] == 0, counts  # 3 products x (2 n-tiles x 2 k-steps)
