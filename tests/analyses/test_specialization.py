"""The specialization measurement: band powers of known tones, the index at its extremes, the
permutation null on constructed cases, and compartment outputs against the reference cell."""

import math

import pytest
import torch

import diru_fast
from diru_fast import reference
from diru_fast.analyses import specialization as S
from diru_fast.analyses.common import fisher_combined_p
from diru_fast.experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_LEARNED

DT = S.sine_time_step(50)
CENTRES = [(lo + hi) / 2 for lo, hi in S.BANDS]  # 1.25, 4, 8.5 rad per unit t


def tone(omega, steps=40, phase=0.0, dt=DT):
    t = torch.arange(steps, dtype=torch.float64) * dt
    return torch.sin(omega * t + phase)


@pytest.mark.parametrize("band", [0, 1, 2])
def test_a_pure_tone_puts_its_power_in_its_band(band):
    p = S.band_powers(tone(CENTRES[band], phase=0.3), DT)
    profile = p / p.sum()
    assert profile[band] > 0.99


def test_band_powers_scale_with_amplitude_squared_and_ignore_the_mean():
    x = tone(CENTRES[1])
    torch.testing.assert_close(S.band_powers(3 * x + 5, DT), 9 * S.band_powers(x, DT), rtol=1e-10, atol=1e-12)


def test_band_powers_reject_bands_without_bins():
    with pytest.raises(ValueError, match="no frequency bin"):
        S.band_powers(tone(1.0), DT, bands=[(100.0, 200.0)])


def test_index_of_identical_profiles_is_zero():
    profile = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    assert float(S.specialization_index(profile.expand(4, 3))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_index_of_disjoint_bands_is_one(k):
    assert float(S.specialization_index(torch.eye(3, dtype=torch.float64)[:k])) == pytest.approx(1.0, abs=1e-12)


def test_jensen_shannon_is_symmetric_and_bounded():
    g = torch.Generator().manual_seed(0)
    p, q = torch.rand(10, 3, generator=g, dtype=torch.float64), torch.rand(10, 3, generator=g, dtype=torch.float64)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    js = S.jensen_shannon(p, q)
    torch.testing.assert_close(js, S.jensen_shannon(q, p))
    assert bool(((js >= 0) & (js <= 1)).all())


def hand_made_outputs(specialized: bool, batch=6, steps=40, m=2):
    """o [B, T, k=3, m]: compartment c a tone in band c (specialized) or all three bands alike."""
    g = torch.Generator().manual_seed(1)
    o = torch.zeros(batch, steps, 3, m, dtype=torch.float64)
    for b in range(batch):
        for c in range(3):
            for j in range(m):
                phase = float(torch.rand(1, generator=g)) * 6.28
                if specialized:
                    o[b, :, c, j] = tone(CENTRES[c], steps, phase)
                else:
                    o[b, :, c, j] = sum(tone(w, steps, phase + i) for i, w in enumerate(CENTRES))
    return o


def test_hand_made_signals_with_known_spectra():
    power = S.unit_band_power(hand_made_outputs(True), DT)  # [6, 3]
    profiles = S.group_profiles(power, S.blocks(6, 3))
    torch.testing.assert_close(profiles, torch.eye(3, dtype=torch.float64), atol=0.02, rtol=0)
    assert float(S.specialization_index(profiles)) > 0.9
    same = S.group_profiles(S.unit_band_power(hand_made_outputs(False), DT), S.blocks(6, 3))
    assert float(S.specialization_index(same)) < 1e-3


def test_permutation_null_on_a_constructed_case():
    d, k, n_perm = 24, 3, 200
    power = torch.zeros(d, 3, dtype=torch.float64)
    for c in range(k):  # compartment c (units c*8..c*8+7) has power in band c only
        power[c * 8:(c + 1) * 8, c] = 1.0 + torch.arange(8, dtype=torch.float64) / 8
    test = S.permutation_test(power, k, n_perm, seed=0)
    assert test["index"] == pytest.approx(1.0)
    assert test["p_value"] == pytest.approx(1 / (n_perm + 1))  # no random partition is as specialized
    assert test["percentile"] == 1.0 and test["z"] > 5
    assert test["sorted_index"] == pytest.approx(1.0)

    scrambled = power[torch.randperm(d, generator=torch.Generator().manual_seed(3))]
    t2 = S.permutation_test(scrambled, k, n_perm, seed=0)
    assert t2["index"] < 0.5 and t2["p_value"] > 0.05  # the blocks no longer follow the bands
    assert t2["sorted_index"] == pytest.approx(1.0)  # but grouping the units by frequency recovers them


def test_permutation_null_of_identical_units_ties_everywhere():
    power = torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64).repeat(8, 1)
    test = S.permutation_test(power, 4, 50, seed=0)
    assert test["index"] == pytest.approx(0.0, abs=1e-12)
    assert test["p_value"] == 1.0 and test["percentile"] == 0.5


def test_random_partitions_are_partitions():
    parts = S.random_partitions(12, 4, 20, torch.Generator().manual_seed(0))
    assert parts.shape == (20, 4, 3)
    assert bool((parts.flatten(1).sort(1).values == torch.arange(12)).all())


def test_fisher_combined_p_matches_scipy():
    import scipy.stats as scipy_stats

    for ps in ([0.5], [0.01, 0.2, 0.7], [0.04, 0.04, 0.04, 0.9, 1.0]):
        assert fisher_combined_p(ps) == pytest.approx(scipy_stats.combine_pvalues(ps, method="fisher").pvalue, rel=1e-9)


def random_model(layers=1, k=2, cls=diru_fast.DIRU):
    torch.manual_seed(0)
    kwargs = {"backend": "torch"} if cls is diru_fast.DIRU else {}
    model = cls(2, 6, 1, num_compartments=k, num_layers=layers, **kwargs).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("cls", [diru_fast.DIRU, reference.DIRU], ids=["fast", "reference"])
@pytest.mark.parametrize("layers,layer", [(1, 0), (2, 1)])
def test_compartment_outputs_match_the_reference_cell_step_by_step(cls, layers, layer):
    model = random_model(layers, 3, cls)
    x = torch.randn(4, 7, 2, dtype=torch.float64)
    o, h = S.compartment_outputs(model, x, layer)
    assert o.shape == (4, 7, 3, 2) and h.shape == (4, 7, 6)
    ref = reference.DIRU(2, 6, 1, num_compartments=3, num_layers=layers).double()
    ref.load_state_dict(model.state_dict())
    states = [x.new_zeros(4, 6) for _ in range(layers)]
    for t in range(7):
        inp = x[:, t]
        for l, cell in enumerate(ref.cells):
            if l == layer:
                expect = torch.stack([comp(inp, states[l]) for comp in cell.compartments], 1)
                torch.testing.assert_close(o[:, t], expect, rtol=0, atol=1e-12)
            states[l] = cell(inp, states[l])
            inp = states[l]
        torch.testing.assert_close(h[:, t], states[layer], rtol=0, atol=1e-12)
    if layer == layers - 1:
        torch.testing.assert_close(model.fc_out(h[:, -1]), model(x), rtol=0, atol=1e-12)


def test_compartment_outputs_reject_a_missing_layer():
    with pytest.raises(ValueError, match="layer"):
        S.compartment_outputs(random_model(), torch.zeros(1, 3, 2, dtype=torch.float64), layer=1)


def per_k(fisher_ps):
    return [{"k": k, "trained": {"fisher_p": p}} for k, p in zip((2, 4, 8), fisher_ps)]


class Gain:
    def __init__(self, low):
        self.low = low


def test_verdict_rule():
    # exchangeable compartments: does not hold by the symmetry argument, whatever the p-values say
    assert S.verdict(per_k([0.3, 0.5, 0.9]), Gain(-1.0)) == DOES_NOT_HOLD
    assert S.verdict(per_k([0.01, 0.001, 0.02]), Gain(0.5)) == DOES_NOT_HOLD
    # attention: the permutation test asks a real question; a non-significant p is not "does not hold"
    assert S.verdict(per_k([0.3, 0.5, 0.9]), Gain(-1.0), is_exchangeable=False) == INCONCLUSIVE
    assert S.verdict(per_k([0.01, 0.001, 0.02]), Gain(0.5), is_exchangeable=False) == HOLDS
    assert S.verdict(per_k([0.01, 0.001, 0.02]), Gain(-0.5), is_exchangeable=False) == INCONCLUSIVE
    assert S.verdict(per_k([0.01, 0.5, 0.9]), Gain(0.5), is_exchangeable=False) == INCONCLUSIVE
    assert math.isclose(fisher_combined_p([1.0, 1.0]), 1.0)


def test_exchangeable_only_without_attention_or_sizes():
    assert S.exchangeable({}) and S.exchangeable({"activation": "relu", "compartment_dropout": 0.1})
    assert not S.exchangeable({"compartment_attention": True})
    assert not S.exchangeable({"compartment_sizes": [2, 6]})


def test_unit_diversity_by_hand():
    """Two units with disjoint one-band profiles: H([1/2, 1/2, 0]) - 0 = 1 bit; equal profiles: 0;
    units [1, 0] and [1/2, 1/2]: H([3/4, 1/4]) - (0 + 1)/2 = 0.811278 - 0.5."""
    assert S.unit_diversity(torch.tensor([[3.0, 0.0, 0.0], [0.0, 5.0, 0.0]], dtype=torch.float64)) == \
        pytest.approx(1.0, abs=1e-12)
    assert S.unit_diversity(torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]], dtype=torch.float64)) == \
        pytest.approx(0.0, abs=1e-12)
    expect = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)) - 0.5
    assert S.unit_diversity(torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)) == pytest.approx(expect, abs=1e-12)


def test_unit_diversity_is_blind_to_the_unit_order():
    g = torch.Generator().manual_seed(0)
    power = torch.rand(12, 3, generator=g, dtype=torch.float64)
    assert S.unit_diversity(power) == pytest.approx(S.unit_diversity(power[torch.randperm(12, generator=g)]), abs=1e-14)


def test_permutation_p_is_uniform_for_exchangeable_groups():
    """The symmetry argument in miniature: units drawn iid, the block partition is one random
    partition among many, so its permutation p is (close to) uniform over repeated draws."""
    g = torch.Generator().manual_seed(1)
    ps = [S.permutation_test(torch.rand(16, 3, generator=g, dtype=torch.float64), 4, n_perm=99, seed=i)["p_value"]
          for i in range(200)]
    assert 0.4 < sum(ps) / len(ps) < 0.6
    assert 0.02 < sum(p <= 0.1 for p in ps) / len(ps) < 0.2


def test_selectivity_tests_pair_by_seed_and_apply_holm():
    runs = [{"seed": s, "k": k, "init": {"diversity_h": 0.01 * (1 + 0.1 * s)},
             "trained": {"diversity_h": 0.02 * (1 + 0.1 * s) * (1 + 0.01 * k)}} for s in range(4) for k in (2, 4)]
    controls = [{"model": "lstm", "seed": s, "init": {"diversity_h": 0.01}, "trained": {"diversity_h": 0.02 + 0.01 * s}}
                for s in range(4)]
    out = S.selectivity_tests(runs, controls)
    by = {t["baseline"]: t for t in out["tests"]}
    assert set(by) == {"lstm_trained", "diru_init"}
    # DIRU trained / init per seed: (1 + 0.01 k) * 2 averaged over k = 2 * 1.03 (the seed factor cancels)
    assert math.exp(by["diru_init"]["mean"]) == pytest.approx(2.06, rel=1e-9)
    assert by["diru_init"]["verdict"] == "higher" and by["diru_init"]["p_holm"] <= 2 * by["diru_init"]["p"]
    assert by["lstm_trained"]["detectable_ratio"] > 1


def test_sine_splits_are_standardised_with_training_statistics_only():
    cfg = S.SpecializationConfig(ks=(2,), seeds=1, n_train=32, n_val=16, n_test=16, seq_len=24, hidden_size=4,
                                 tune_k=2)
    train, val, test, scaling, trivial = S.sine_splits(cfg, 0)
    assert float(train.y.mean()) == pytest.approx(0.0, abs=1e-5) and float(train.y.std()) == pytest.approx(1.0, abs=1e-5)
    assert float(train.x.mean()) == pytest.approx(0.0, abs=1e-5)
    raw = S.SineDataset(16, 24, S.derive_seed("sine", 0, "test"))  # the study's test data, scaled by train stats
    torch.testing.assert_close(test.y, (raw.y - scaling["target_mean"]) / scaling["target_std"])
    mean = next(b for b in trivial if b["name"] == "mean")["mse"]
    assert mean == pytest.approx(float((test.y.double() - train.y.double().mean()).pow(2).mean()), rel=1e-5)
    assert {b["name"] for b in trivial} >= {"mean", "ls_all", "sine_fit"}


def test_comparisons_are_made_only_between_models_that_learned():
    runs = [{"seed": s, "k": 2, "init": {"diversity_h": 0.01 * (1 + 0.1 * s)},
             "trained": {"diversity_h": 0.02 * (1 + 0.2 * s)}} for s in range(4)]
    controls = [{"model": "lstm", "seed": s, "init": {"diversity_h": 0.01}, "trained": {"diversity_h": 0.01 + 0.001 * s}}
                for s in range(4)]
    yes, no = {"learned": True}, {"learned": False}
    out = {t["baseline"]: t for t in S.selectivity_tests(runs, controls, {"diru_k2": yes, "lstm": no})["tests"]}
    assert out["lstm_trained"]["verdict"] == "only DIRU learned" and out["lstm_trained"]["p_holm"] is None
    assert out["diru_init"]["p_holm"] == out["diru_init"]["p"]  # the only comparison made: Holm over one
    out = {t["baseline"]: t for t in S.selectivity_tests(runs, controls, {"diru_k2": no, "lstm": no})["tests"]}
    assert {t["verdict"] for t in out.values()} == {NOT_LEARNED}  # never "higher" / "lower" between non-learners
    out = {t["baseline"]: t for t in S.selectivity_tests(runs, controls, {"diru_k2": no, "lstm": yes})["tests"]}
    assert out["lstm_trained"]["verdict"] == "only LSTM learned"
    # the attention claim needs a DIRU that learned; the plain cell's verdict is the symmetry theorem
    assert S.verdict(per_k([0.01, 0.001, 0.02]), Gain(0.5), is_exchangeable=False, diru_learned=False) == NOT_LEARNED
    assert S.verdict(per_k([0.3, 0.5, 0.9]), Gain(-1.0), diru_learned=False) == DOES_NOT_HOLD


def test_learned_table_uses_the_median_test_ratio_per_model():
    runs = [{"k": 2, "seed": s, "test_ratio": r} for s, r in enumerate((0.1, 0.2, 0.5))] + \
        [{"k": 4, "seed": s, "test_ratio": r} for s, r in enumerate((0.4, 0.2, 0.5))]
    controls = [{"model": "lstm", "seed": s, "test_ratio": 0.05} for s in range(3)]
    baselines = [{"seed": s, "name": n, "mse": m} for s in range(3) for n, m in (("mean", 2.0), ("sine_fit", 0.02))]
    out = S.learned_table(runs, controls, baselines)
    assert out["models"]["diru_k2"]["learned"] and not out["models"]["diru_k4"]["learned"]
    assert out["models"]["lstm"]["median_ratio"] == 0.05 and out["trivial"] == {"sine_fit": pytest.approx(0.01)}


def test_tuning_picks_one_rate_per_model_on_the_tuning_seeds(monkeypatch):
    cfg = S.SpecializationConfig(ks=(2,), seeds=1, n_train=16, n_val=8, n_test=8, seq_len=24, hidden_size=4, tune_k=2,
                                 lr_grid=(1e-3, 1e-2), tune_seeds=2, epochs=1, n_perm=10, burn_in=4, backend="torch")
    seen = []
    real = S._train

    def spy(config, model, splits, lr, seed, test):
        seen.append((type(model).__name__, lr, seed, test))
        return real(config, model, splits, lr, seed, test)

    monkeypatch.setattr(S, "_train", spy)
    picked, trials = S.tune_models(cfg)
    assert set(picked) == {"diru", "lstm"} and all(v in cfg.lr_grid for v in picked.values())
    assert len(trials) == 8 and {t["seed"] for t in trials} == {1000, 1001}  # apart from the test seed 0
    assert not any(test for *_, test in seen)  # tuning never touches the test split
    with pytest.raises(ValueError, match="overlap"):
        S.SpecializationConfig(tune_first_seed=3)
