"""The AND/OR toy networks: trained to 100%, and each method does what the theory says."""

import pytest
import torch

from ig_ap import toy

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def nets():
    return {(gate, hidden, seed): toy.train_gate(gate, hidden, seed) for gate in ("and", "or") for hidden in (1, 4) for seed in SEEDS}


def test_nets_reach_full_accuracy_reproducibly(nets):
    for (gate, hidden, seed), net in nets.items():
        assert toy.accuracy(net, gate) == 1.0, (gate, hidden, seed)
    again = toy.train_gate("and", 4, 1)
    for a, b in zip(again.parameters(), nets["and", 4, 1].parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(nets["and", 4, 0].model[0].weight, nets["and", 4, 1].model[0].weight)


def test_denoising_misses_and_inputs_noising_misses_or_inputs_ig_credits_both(nets):
    for (gate, hidden, seed), net in nets.items():
        s = toy.scores(net, "input")
        den, noi = s["AP denoising"], s["AP noising"]
        if gate == "and":  # turning one input on in the all-off run does little; turning one off kills the output
            assert (den.abs() < 0.25).all() and (noi.abs() > 0.75).all(), (gate, hidden, seed, den, noi)
        else:
            assert (den.abs() > 0.75).all() and (noi.abs() < 0.25).all(), (gate, hidden, seed, den, noi)
        # IG: both inputs credited, in both directions, summing to the whole effect
        for direction, sign in (("denoising", 1), ("noising", -1)):
            ig = s[f"IG {direction}"] * sign
            # (a ReLU kink on the path limits the quadrature: completeness to 1e-2 at 50 steps)
            assert (ig > 0.2).all() and abs(ig.sum().item() - 1) < 1e-2, (gate, hidden, seed, direction, ig)
        torch.testing.assert_close(s["IG noising"], -s["IG denoising"], rtol=0, atol=1e-5)


def test_asymmetry_signs_and_and_or_and_is_zero_for_ig(nets):
    for (gate, hidden, seed), net in nets.items():
        a = toy.asymmetries(net, "input")
        assert ((a["AP"] < -0.5) if gate == "and" else (a["AP"] > 0.5)).all(), (gate, hidden, seed, a)
        assert a["IG"].abs().max() < 1e-4


def test_a_single_hidden_unit_carries_everything_in_both_directions(nets):
    for gate in ("and", "or"):
        s = toy.scores(nets[gate, 1, 0], "hidden")
        for name, value in s.items():
            assert value.item() == pytest.approx(1 if "denoising" in name else -1, abs=1e-4), name


def test_ig_completeness_error_is_reported_and_small(nets):
    for layer in toy.LAYERS:
        result = toy.integrated_gradients(nets["and", 4, 0], "denoising", layer, n_steps=256)
        assert result.error < 1e-3
        coarse = toy.integrated_gradients(nets["and", 4, 0], "denoising", layer, n_steps=1)
        assert coarse.error == pytest.approx(abs(coarse.scores.sum().item() - 1))


def test_bad_toy_input_is_refused_with_one_line():
    for call, match in [
        (lambda: toy.train_gate("xor"), "unknown gate"),
        (lambda: toy.train_gate("and", hidden=0), "hidden must be"),
        (lambda: toy.train_gate("and", optimizer="lbfgs"), "unknown optimizer"),
        (lambda: toy.activation_patching(toy.GateNet(), layer="output"), "unknown layer"),
        (lambda: toy.activation_patching(toy.GateNet(), direction="sideways"), "direction"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)
