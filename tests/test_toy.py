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


@pytest.mark.parametrize("layer", toy.LAYERS)
def test_toy_ig_equals_captums_integrated_gradients(nets, layer):
    """Against an independent implementation: Captum's IntegratedGradients on the net's units, both directions."""
    from captum.attr import IntegratedGradients

    for key in (("and", 4, 0), ("or", 4, 1), ("and", 1, 2)):
        net = nets[key]
        clean, corrupted, m_clean, m_corrupted, gap = toy._runs(net, layer, "probability")
        forward = lambda units: net.from_units(units, layer, "probability")  # noqa: E731
        for direction, (start, end) in (("denoising", (corrupted, clean)), ("noising", (clean, corrupted))):
            reference = IntegratedGradients(forward).attribute(end[None].float(), baselines=start[None].float(), n_steps=64,
                                                               method="gausslegendre")[0] / gap
            ours = toy.integrated_gradients(net, direction, layer, n_steps=64).scores
            torch.testing.assert_close(ours.double(), reference.double(), rtol=1e-4, atol=1e-5, msg=str((key, direction)))


def test_asymmetry_signs_and_and_or_and_is_zero_for_ig(nets):
    for (gate, hidden, seed), net in nets.items():
        a = toy.asymmetries(net, "input")
        assert ((a["AP"] < -0.5) if gate == "and" else (a["AP"] > 0.5)).all(), (gate, hidden, seed, a)


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


def test_a_training_run_keeps_one_initialisation_across_its_checkpoints():
    epochs = [20, 60, 300]
    run = toy.training_run("and", 1, seed=3, epochs=epochs)
    assert sorted(run) == epochs and toy.accuracy(run[300], "and") == 1.0
    # every checkpoint is the same run stopped earlier: training the chosen start for 20 or 60 epochs gives them exactly
    attempt = next(a for a in range(50) if toy.accuracy(toy._train(toy._initial(1, 3, a), "and", 300, 0.1, "sgd", {300})[300], "and") == 1.0)
    for e in epochs[:-1]:
        again = toy._train(toy._initial(1, 3, attempt), "and", e, 0.1, "sgd", {e})[e]
        for a, b in zip(again.parameters(), run[e].parameters()):
            assert torch.equal(a, b)
    assert not torch.equal(run[20].model[0].weight, run[300].model[0].weight)  # saved copies, not one net trained on
    assert toy.training_run("and", 1, seed=3, epochs=[300])[300].state_dict().keys() == run[300].state_dict().keys()
    with pytest.raises(toy.ToyError, match="epochs must be"):
        toy.training_run("and", 1, epochs=[])


def test_input_shares_split_the_gap_and_are_each_nets_own(nets):
    shares = {key: toy.input_shares(net, n_steps=128) for key, net in nets.items()}
    for key, s in shares.items():
        assert s[0] >= s[1], key
        assert s.sum().item() == pytest.approx(1.0, abs=5e-3), key  # completeness (ReLU kink: quadrature error ~1e-3)
    # the split itself is not forced: an AND net stopped early splits unevenly
    early = toy.input_shares(toy.training_run("and", 1, seed=0, epochs=[100, 2000])[100])
    assert early[0] - early[1] > 0.1


def test_an_and_across_layers_is_missed_by_the_candidate_rule_with_per_layer_ig_and_found_with_both_layers_together():
    from ig_ap.analysis import asymmetry_labels, component_asymmetry, latent_candidates_by_rule

    net = toy.CrossLayerAnd(gain=10.0)
    s = toy.cross_layer_scores(net, n_steps=64)
    f = lambda u, v: torch.sigmoid(torch.tensor(10.0 * (u + v - 1.5))).item()  # noqa: E731  the net by hand
    gap = f(1, 1) - f(0, 0)
    # AP by hand: one unit on in the all-off run; one unit off in the all-on run
    assert s["AP denoising"].tolist() == pytest.approx([(f(1, 0) - f(0, 0)) / gap] * 2, abs=1e-6)
    assert s["AP noising"].tolist() == pytest.approx([(f(0, 1) - f(1, 1)) / gap] * 2, abs=1e-6)
    # per layer, each unit alone in its layer: its IG is its AP (the rest of the network on the base run)
    for d in ("denoising", "noising"):
        assert torch.allclose(s[f"IG per layer {d}"], s[f"AP {d}"], atol=1e-5)
    # both layers together: completeness (±1) and, the net being symmetric, half each
    assert s["IG both layers denoising"].tolist() == pytest.approx([0.5, 0.5], abs=1e-5)
    assert s["IG both layers noising"].tolist() == pytest.approx([-0.5, -0.5], abs=1e-5)
    shape = lambda x: x[None, :, None]  # noqa: E731  [prompt, layer, component]
    den, noi = shape(s["AP denoising"]), shape(s["AP noising"])
    assert (asymmetry_labels(den, noi) == "AND").all()  # AP sees the AND
    per_layer = component_asymmetry(shape(s["IG per layer denoising"]), shape(s["IG per layer noising"]))
    together = component_asymmetry(shape(s["IG both layers denoising"]), shape(s["IG both layers noising"]))
    assert not latent_candidates_by_rule(den, noi, per_layer)[0].any()  # the rule discards exactly this AND
    assert latent_candidates_by_rule(den, noi, together)[0].all()  # interpolated together, it is found
    with pytest.raises(toy.ToyError, match="gain"):
        toy.CrossLayerAnd(gain=0.0)
