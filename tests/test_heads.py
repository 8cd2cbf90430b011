"""Head sets, direct logit attribution and path patching, checked against exact identities and single-head AP."""

import pytest
import torch

from ig_ap import heads
from ig_ap.attribution import AttributionError
from ig_ap.patching import activation_patching
from ig_ap.tasks import make_dataset


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def setup(request, tiny_gpt2, tiny_llama):
    model = {"tiny-gpt2": tiny_gpt2, "tiny-llama": tiny_llama}[request.param]
    return model, make_dataset("ioi", model, n=4, seed=1).batch()


def test_a_set_of_one_head_patched_jointly_or_as_a_linear_combination_equals_single_head_ap(setup):
    model, batch = setup
    ap = activation_patching(model, batch, direction="denoising", components="heads", progress=False).normalized().heads
    for layer, head in [(0, 1), (1, 3)]:
        joint = heads.patch_heads(model, batch, [(layer, head)])
        combination = heads.patch_heads(model, batch, [(layer, head)], "linear_combination")
        torch.testing.assert_close(joint, ap[:, layer, head].to(joint.dtype), rtol=0, atol=1e-4)
        torch.testing.assert_close(combination, joint, rtol=0, atol=1e-5)


def test_a_linear_combination_within_one_layer_equals_the_joint_patch_and_differs_across_layers(setup):
    model, batch = setup
    same_layer = [(1, 0), (1, 2), (1, 3)]
    torch.testing.assert_close(heads.patch_heads(model, batch, same_layer, "linear_combination"),
                               heads.patch_heads(model, batch, same_layer), rtol=0, atol=1e-4)
    across = [(0, 1), (1, 2)]
    assert not torch.allclose(heads.patch_heads(model, batch, across, "linear_combination"),
                              heads.patch_heads(model, batch, across), atol=1e-4)
    effects = heads.set_effects(model, batch, across)
    singles = sum(heads.patch_heads(model, batch, [h]).mean().item() for h in across)
    assert effects.one_by_one == pytest.approx(singles, abs=1e-6)
    expected = effects.linear_combination / effects.jointly if abs(effects.jointly) >= 0.05 else float("nan")
    assert effects.fractions["linear combination"] == pytest.approx(expected, nan_ok=True)
    assert heads.SetEffects(effects.heads, *effects.values()) == effects
    tiny = heads.SetEffects([(0, 0)], one_by_one=0.3, jointly=0.01, linear_combination=0.2)
    assert all(v != v for v in tiny.fractions.values())  # undefined, not a huge ratio, when the joint effect is ~0


def test_direct_logit_attribution_of_every_term_sums_to_the_logit_difference(setup):
    model, batch = setup
    for run in ("clean", "corrupted"):
        dla = heads.direct_logit_attribution(model, batch, run)
        torch.testing.assert_close(dla.sum(), dla.total, rtol=1e-4, atol=1e-4)
        assert dla.heads.abs().sum() > 0 and dla.mlps.abs().sum() > 0


def test_direct_effects_of_a_linear_combination_sum_to_the_joint_patches(setup):
    model, batch = setup
    same_layer = [(1, 0), (1, 2), (1, 3)]  # one layer: both patched runs are the same run, so the scales agree
    joint = heads.patched_direct_effects(model, batch, same_layer)
    combination = heads.patched_direct_effects(model, batch, same_layer, "linear_combination")
    torch.testing.assert_close(combination.sum(1), joint.sum(1), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(combination, joint, atol=1e-3)  # spread differently over the heads
    # the joint patch's direct effects are the clean run's, in the patched run's scale
    clean = heads.direct_logit_attribution(model, batch, "clean").heads
    assert torch.sign(joint[:, 0]).eq(torch.sign(clean[:, 1, 0])).float().mean() >= 0.75


def test_path_patching_is_zero_where_the_sender_is_not_upstream_and_not_zero_where_it_is(setup):
    model, batch = setup
    n_layers = model.cfg.n_layers
    senders = [(0, 0), (1, 1)]
    receivers = [(0, 2), (1, 0), (n_layers - 1, 3)]
    effects = heads.path_patching(model, batch, senders, receivers)
    assert effects.shape == (3, 2, 3, len(batch))
    assert effects[:, 0, 0].abs().max() == 0  # same layer
    assert effects[:, 1, 0].abs().max() == 0 and effects[:, 1, 1].abs().max() == 0  # receivers at or below layer 1
    assert effects[:, 0, 1].abs().max() > 1e-4  # layer 0 reaches layer 1's q, k, v


def test_path_patching_to_a_query_equals_a_hand_built_direct_path_run(tiny_gpt2):
    # Sender in layer 0, receiver in layer 1: with everything else frozen, the receiver's residual
    # input is the corrupted one plus the sender's clean−corrupted output. Build that by hand.
    model = tiny_gpt2
    batch = make_dataset("ioi", model, n=2, seed=0).batch()
    effect = heads.path_patching(model, batch, [(0, 1)], [(1, 2)], inputs=("q",))[0, 0, 0]
    with torch.no_grad():
        _, clean = model.run_with_cache(batch.clean)
        _, corrupted = model.run_with_cache(batch.corrupted)
        resid = corrupted["blocks.1.hook_resid_pre"] + clean["blocks.0.attn.hook_result"][:, :, 1] - corrupted["blocks.0.attn.hook_result"][:, :, 1]
        store = {}

        def set_resid(activation, hook):
            return resid

        def keep_q(activation, hook):
            store["q"] = activation.clone()
            return activation

        model.run_with_hooks(batch.corrupted, fwd_hooks=[("blocks.1.hook_resid_pre", set_resid), ("blocks.1.attn.hook_q", keep_q)])

        def put_q(activation, hook):
            activation = activation.clone()
            activation[:, :, 2] = store["q"][:, :, 2]
            return activation

        logits = model.run_with_hooks(batch.corrupted, fwd_hooks=[("blocks.1.attn.hook_q", put_q)])
        m_clean = batch.score(model(batch.clean))
        m_corrupted = batch.score(model(batch.corrupted))
        expected = (batch.score(logits) - m_corrupted) / (m_clean - m_corrupted)
    torch.testing.assert_close(effect, expected.cpu().to(effect.dtype), rtol=1e-3, atol=1e-4)


def test_head_sets_from_data_are_signed_and_published_ones_on_gpt2_small(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=4, seed=0).batch()
    sets, rule = heads.head_sets(tiny_gpt2, batch)
    assert "found from data" in rule and len(sets["name movers"]) == 3
    assert not set(sets["name movers"]) & set(sets["negative name movers"])
    assert not set(sets["backup name movers"]) & set(sets["name movers"])
    assert not heads.is_gpt2_small(tiny_gpt2)


def test_bad_heads_are_refused_in_one_line(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    for bad, match in [([(9, 6)], "does not exist"), ([], "empty"), (["x"], "not a \\(layer, head\\) pair")]:
        with pytest.raises(AttributionError, match=match) as err:
            heads.patch_heads(tiny_gpt2, batch, bad)
        assert "\n" not in str(err.value)
    with pytest.raises(AttributionError, match="unknown mode"):
        heads.patch_heads(tiny_gpt2, batch, [(0, 0)], "average")
    with pytest.raises(AttributionError, match="inputs must be"):
        heads.path_patching(tiny_gpt2, batch, [(0, 0)], [(1, 0)], inputs=("o",))
    gt = make_dataset("greater_than", tiny_gpt2, n=2, seed=0).batch()
    with pytest.raises(AttributionError, match="logit-difference task"):
        heads.direct_logit_attribution(tiny_gpt2, gt)


def test_head_sets_can_be_given_as_parameters(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    assert heads.parse_heads("L1H2, 0.3  L1H0") == [(1, 2), (0, 3), (1, 0)]
    sets, rule = heads.head_sets(tiny_gpt2, batch, name_movers="L1H2 L1H3", negative_name_movers="auto")
    assert sets["name movers"] == [(1, 2), (1, 3)] and "as given by the parameters" in rule
    assert not {(1, 2), (1, 3)} & (set(sets["negative name movers"]) | set(sets["backup name movers"]))
    for bad, match in [(dict(name_movers="9-6"), "cannot read head"), (dict(name_movers="L9H6"), "does not exist"),
                       (dict(movers="L1H2"), "unknown head set")]:
        with pytest.raises(AttributionError, match=match):
            heads.head_sets(tiny_gpt2, batch, **bad)
