"""Head mechanics (patches of head sets, direct logit attribution, path patching), checked against exact identities and single-head AP."""

import functools
import math

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
    ap = activation_patching(model, batch, direction="denoising", components="heads", progress=False).heads
    for layer, head in [(0, 1), (1, 3)]:
        joint = heads.patch_heads(model, batch, [(layer, head)])
        combination = heads.patch_heads(model, batch, [(layer, head)], "linear_combination")
        torch.testing.assert_close(joint.effect(), ap[:, layer, head].to(joint.metric.dtype), rtol=0, atol=1e-4)
        torch.testing.assert_close(combination.metric, joint.metric, rtol=0, atol=1e-5)


def _z_patch(model, batch, values):
    """The corrupted run's metric with hook_z of (layer, head) set to ``values[(layer, head)]``, hooks built by hand."""
    def put(activation, hook, head, value):
        activation = activation.clone()
        activation[:, :, head] = value
        return activation

    hooks = [(f"blocks.{l}.attn.hook_z", functools.partial(put, head=h, value=v)) for (l, h), v in values.items()]
    with torch.no_grad():
        return batch.score(model.run_with_hooks(batch.corrupted, fwd_hooks=hooks))


def test_the_notebooks_combination_moves_each_head_by_its_own_and_the_mean_delta(setup):
    # get_lin_comb_cache: clean z + mean over the set of (clean z − corrupted z). One head: corrupted + 2Δ.
    model, batch = setup
    with torch.no_grad():
        _, clean = model.run_with_cache(batch.clean)
        _, corrupted = model.run_with_cache(batch.corrupted)
    z = lambda cache, l, h: cache[f"blocks.{l}.attn.hook_z"][:, :, h]  # noqa: E731
    one = (1, 2)
    expected = _z_patch(model, batch, {one: z(corrupted, *one) + 2 * (z(clean, *one) - z(corrupted, *one))})
    got = heads.patch_heads(model, batch, [one], "notebook_combination")
    torch.testing.assert_close(got.metric, expected.cpu(), rtol=0, atol=1e-5)
    assert not torch.allclose(got.metric, heads.patch_heads(model, batch, [one]).metric, atol=1e-4)  # not the head's own patch
    pair = [(0, 1), (1, 2)]
    deltas = {h: z(clean, *h) - z(corrupted, *h) for h in pair}
    mean = sum(deltas.values()) / 2
    expected = _z_patch(model, batch, {h: z(corrupted, *h) + deltas[h] + mean for h in pair})
    torch.testing.assert_close(heads.patch_heads(model, batch, pair, "notebook_combination").metric, expected.cpu(), rtol=0, atol=1e-5)


def test_a_linear_combination_within_one_layer_equals_the_joint_patch_and_differs_across_layers(setup):
    model, batch = setup
    same_layer = [(1, 0), (1, 2), (1, 3)]
    torch.testing.assert_close(heads.patch_heads(model, batch, same_layer, "linear_combination").metric,
                               heads.patch_heads(model, batch, same_layer).metric, rtol=0, atol=1e-4)
    across = [(0, 1), (1, 2)]
    assert not torch.allclose(heads.patch_heads(model, batch, across, "linear_combination").metric,
                              heads.patch_heads(model, batch, across).metric, atol=1e-4)
    effects = heads.set_effects(model, batch, across)
    singles = sum(heads.patch_heads(model, batch, [h]).effect() for h in across)
    torch.testing.assert_close(effects.effects[0], singles, rtol=0, atol=1e-6)
    for way, mode in zip(heads.WAYS[1:], heads.MODES):
        torch.testing.assert_close(effects.effects[heads.WAYS.index(way)], heads.patch_heads(model, batch, across, mode).effect(),
                                   rtol=0, atol=1e-6)


def test_shares_and_fractions_are_ratios_of_means_with_intervals():
    # prompt 3's gap is almost 0: the mean of per-prompt ratios explodes, the ratio of means does not
    effect = torch.tensor([1.0, 2.0, 0.5, 0.3])
    gap = torch.tensor([2.0, 4.0, 1.0, 1e-4])
    patched = heads.Patched(effect + 1.0, gap + 1.0, torch.ones(4))
    assert patched.share().item() == pytest.approx(effect.mean() / gap.mean())
    assert (effect / gap).mean() > 100
    ci = patched.interval()
    # the gaps spread so widely over 4 prompts that their mean is not distinguishable from 0 (t(3) · se > mean):
    # no bounded interval, and it says so instead of printing a narrow one
    assert gap.mean() < 3.182 * gap.std() / 2
    assert math.isinf(ci.low) and math.isinf(ci.high) and ci.n == 4 and "unbounded" in str(ci)
    joint = torch.tensor([1.0, 2.0, 1.0, 1.0])
    sets = heads.SetEffects([(0, 0)], torch.stack([0.5 * joint, joint, joint, 2 * joint]), gap)
    assert sets.fraction("notebook's combination").value == pytest.approx(2.0)
    assert sets.share("jointly").value == pytest.approx(joint.mean() / gap.mean())
    tiny = heads.SetEffects([(0, 0)], torch.stack([joint, 0.01 * joint, joint, joint]), 10 * gap)
    assert math.isnan(tiny.fraction("linear combination").value)  # undefined, not a huge ratio, when the joint effect is ~0


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
    effects = heads.path_patching(model, batch, senders, receivers).effect()
    assert effects.shape == (3, 2, 3, len(batch))
    assert effects[:, 0, 0].abs().max() == 0  # same layer
    assert effects[:, 1, 0].abs().max() == 0 and effects[:, 1, 1].abs().max() == 0  # receivers at or below layer 1
    assert effects[:, 0, 1].abs().max() > 1e-4  # layer 0 reaches layer 1's q, k, v
    # together: every receiver's input at once; with one reachable receiver it is that receiver's own column
    together = heads.path_patching(model, batch, senders, receivers[:2], inputs=("q",), together=True)
    assert together.metric.shape == (1, 2, 1, len(batch))
    torch.testing.assert_close(together.effect()[0, 0, 0], effects[0, 0, 1], rtol=0, atol=1e-5)


def test_patches_batched_into_one_pass_give_what_one_pass_per_patch_gives(setup):
    model, batch = setup
    senders, receivers = [(0, 0), (0, 3), (1, 1)], [(1, 0), (1, 2)]
    together = heads.path_patching(model, batch, senders, receivers)
    sets = heads.set_effects(model, batch, [(0, 1), (1, 2), (1, 3)])
    one = 1e-6  # MiB: one copy of the batch per pass
    torch.testing.assert_close(heads.path_patching(model, batch, senders, receivers, memory_mb=one).metric, together.metric,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(heads.set_effects(model, batch, [(0, 1), (1, 2), (1, 3)], memory_mb=one).effects, sets.effects,
                               rtol=0, atol=1e-5)


def test_path_patching_to_a_query_equals_a_hand_built_direct_path_run(tiny_gpt2):
    # Sender in layer 0, receiver in layer 1: with everything else frozen, the receiver's residual
    # input is the corrupted one plus the sender's clean−corrupted output. Build that by hand.
    model = tiny_gpt2
    batch = make_dataset("ioi", model, n=2, seed=0).batch()
    effect = heads.path_patching(model, batch, [(0, 1)], [(1, 2)], inputs=("q",)).metric[0, 0, 0]
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
        expected = batch.score(logits)
    torch.testing.assert_close(effect, expected.cpu().to(effect.dtype), rtol=1e-4, atol=1e-5)


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


def test_attention_readout_on_a_hand_built_pattern():
    tokens = torch.tensor([[7, 5, 8, 5, 9, 5], [8, 7, 7, 9, 0, 0]])  # prompt 1 ends at position 3 (then padding)
    last = torch.tensor([5, 3])
    targets = torch.tensor([[8, 5], [9, 7]])  # (IO, S) per prompt
    pattern = torch.zeros(2, 2, 6, 6)
    pattern[0, 0, 5] = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.1, 0.2])  # S at 1, 3, 5; IO at 2
    pattern[0, 1, 5] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    pattern[1, 0, 3] = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0, 0.0])  # IO (9) at 3; S (7) at 1, 2
    pattern[1, 1, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    pattern[1, :, 5] = 1.0  # a padding row: never read
    got = heads.readout(pattern, tokens, last, targets)
    expected = torch.tensor([[[0.3, 0.5], [1.0, 0.0]], [[0.1, 0.5], [1.0, 0.0]]])
    torch.testing.assert_close(got, expected)


def test_attention_readout_of_a_model_sums_to_at_most_one(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    got = heads.attention_readout(tiny_gpt2, batch, [(1, 0), (0, 2)])
    assert got.shape == (3, 2, 2) and (got >= 0).all() and (got.sum(-1) <= 1 + 1e-5).all() and got.sum() > 0


def test_attention_from_last_sums_to_one_over_the_prompt_and_gives_the_readout(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    chosen = [(1, 0), (0, 2)]
    pattern = heads.attention_from_last(tiny_gpt2, batch, chosen)
    assert pattern.shape == (3, 2, batch.clean.shape[1])
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, 2))
    positions = torch.arange(batch.clean.shape[1])
    assert (pattern[positions[None, None, :].expand_as(pattern) > batch.last[:, None, None]] == 0).all()  # nothing past the end
    # summed over the positions holding IO and S, it is attention_readout
    is_target = batch.clean[:, None, :] == batch.answers[:, :2, None]  # [prompt, target, position]
    summed = torch.einsum("phk,ptk->pht", pattern, is_target.float())
    torch.testing.assert_close(summed, heads.attention_readout(tiny_gpt2, batch, chosen))


def test_mlp_paths_direct_path_is_the_frozen_run_and_single_layer_paths_reach_the_metric(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    names, paths = heads.mlp_paths(tiny_gpt2, batch, (0, 1))
    assert names == ["total", "direct", "MLP 0", "MLP 1"] and paths.metric.shape == (4, 3)
    torch.testing.assert_close(paths.metric[0], heads.patch_heads(tiny_gpt2, batch, [(0, 1)]).metric)
    assert paths.effect()[2].abs().max() > 1e-4  # the head's own layer's MLP reads its output
    # a sender in the last layer reaches the logits directly and through that layer's MLP only
    names, _ = heads.mlp_paths(tiny_gpt2, batch, (1, 0))
    assert names == ["total", "direct", "MLP 1"]


def test_token_direct_effects_split_the_logit_difference(setup):
    model, batch = setup
    both = heads.token_direct_effects(model, batch, [(0, 1), (1, 2)])
    dla = heads.direct_logit_attribution(model, batch).heads
    torch.testing.assert_close(both[..., 0] - both[..., 1], torch.stack([dla[:, 0, 1], dla[:, 1, 2]], 1), rtol=1e-4, atol=1e-5)


def test_patches_replayed_from_a_trace_equal_a_full_forward_pass_with_the_same_hooks(setup):
    # run_patches replays the corrupted run from its trace; a plain run_with_hooks with the same writes is the reference
    model, batch = setup
    runs = heads.clean_and_corrupted_runs(model, batch, ["blocks.0.attn.hook_result", "blocks.1.attn.hook_result"])
    patch = {"blocks.0.attn.hook_result": {2: runs.clean["blocks.0.attn.hook_result"][:, :, 2]},
             "blocks.1.attn.hook_result": {1: runs.clean["blocks.1.attn.hook_result"][:, :, 1]}}
    metric, record = heads.run_patches(model, batch, runs.base, [{}, patch], ["ln_final.hook_scale"])

    def put(activation, hook, index, value):
        activation = activation.clone()
        activation[:, :, index] = value
        return activation

    with torch.no_grad():
        hooks = [(name, functools.partial(put, index=i, value=v)) for name, d in patch.items() for i, v in d.items()]
        expected = batch.score(model.run_with_hooks(batch.corrupted, fwd_hooks=hooks))
        _, cache = model.run_with_cache(batch.corrupted, names_filter=lambda n: n == "ln_final.hook_scale")
    torch.testing.assert_close(metric[0], runs.m_corrupted.cpu(), rtol=0, atol=1e-5)
    torch.testing.assert_close(metric[1], expected.cpu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(record["ln_final.hook_scale"][0], cache["ln_final.hook_scale"], rtol=1e-5, atol=1e-6)


def test_head_names_and_ranking():
    assert heads.head_name((9, 6)) == "L9H6"
    scores = torch.tensor([[0.1, 0.5], [-0.2, 0.3]])
    assert heads.ranked_heads(scores) == [(0, 1), (1, 1), (0, 0), (1, 0)]
    assert heads.ranked_heads(scores, descending=False)[0] == (1, 0)


def test_additivity_reads_the_interval_of_the_sum_over_the_joint_effect():
    n = 6
    gap = torch.full((n,), 2.0)
    ramp = torch.linspace(0.9, 1.1, n)

    def effects(one_by_one, joint):  # rows in WAYS order: one by one (summed), jointly, linear combination, notebook's
        return heads.SetEffects([(0, 0), (0, 1)], torch.stack([one_by_one, joint, joint, joint]), gap)

    assert effects(0.5 * ramp, ramp).additivity() == "the set does more together than its members add up to"
    assert effects(1.5 * ramp, ramp).additivity() == "the set does less together than its members add up to"
    assert effects(ramp.flip(0) * torch.tensor([1.3, 0.7, 1.2, 0.8, 1.1, 0.9]), ramp).additivity().startswith("the prompts cannot tell")
    assert effects(ramp, 0.01 * ramp).additivity() == "undefined"  # joint effect under MIN_JOINT_SHARE of the gap
    round_trip = heads.SetEffects.from_dict(effects(ramp, ramp).to_dict())
    assert round_trip.heads == [(0, 0), (0, 1)] and torch.equal(round_trip.effects, effects(ramp, ramp).effects)
