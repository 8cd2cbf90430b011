"""Head sets, direct logit attribution and path patching, checked against exact identities and single-head AP."""

import functools
import math

import pytest
import torch

from ig_ap import heads
from ig_ap.attribution import AttributionError
from ig_ap.patching import activation_patching
from ig_ap.models import load_model
from ig_ap.tasks import Batch, Task, make_dataset


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
    assert ci.low <= ci.value <= ci.high and ci.n == 4
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


def test_patches_batched_into_one_pass_give_what_one_pass_per_patch_gives(setup, monkeypatch):
    model, batch = setup
    senders, receivers = [(0, 0), (0, 3), (1, 1)], [(1, 0), (1, 2)]
    together = heads.path_patching(model, batch, senders, receivers)
    sets = heads.set_effects(model, batch, [(0, 1), (1, 2), (1, 3)])
    monkeypatch.setattr(heads, "MAX_SEQUENCES", 1)  # one copy of the batch per pass
    torch.testing.assert_close(heads.path_patching(model, batch, senders, receivers).metric, together.metric, rtol=0, atol=1e-5)
    torch.testing.assert_close(heads.set_effects(model, batch, [(0, 1), (1, 2), (1, 3)]).effects, sets.effects, rtol=0, atol=1e-5)


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


# ---- a tiny model with a planted backup head

PLANTED_NAMES = list(range(1000, 1006))  # token ids standing for names
PLANTED_QUERY = 2000  # the token after the name


@pytest.fixture(scope="module")
def planted():
    """tiny-gpt2 rewired by hand (MLPs, biases and positions off) so that the answer to "name, query" is the name:

    - L0H0, the name mover, and L0H1, its twin: attention spread evenly, they copy the name's
      identity (dims 0–11 of its embedding) into the last position, which the tied unembedding reads;
    - L1H0, the backup: its key at the name reads the name's identity and a name flag (dim 12),
      its query at the last position reads minus what the layer-0 heads wrote (dims 0–11) and a
      constant from the query token. When both layer-0 heads copy the name, the two cancel and
      it looks at the query token instead; when L0H0 is ablated, it attends to the name and copies it;
    - L1H1: copies the name with attention spread evenly, whatever layer 0 did (a head with a
      direct effect that does not respond).

    Prompts: every ordered pair of distinct names (clean "a, query", corrupted "b, query": the answer flips).
    """
    model = load_model("tiny-gpt2", device="cpu", seed=0)
    hf = model.original_model
    generator = torch.Generator().manual_seed(0)
    d, dh = model.cfg.d_model, model.cfg.d_head
    identity = torch.zeros(d, dh)
    identity[torch.arange(12), torch.arange(12)] = 1.0  # residual dims 0–11 -> head dims 0–11
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        for norm in [*(b.ln_1 for b in hf.transformer.h), *(b.ln_2 for b in hf.transformer.h), hf.transformer.ln_f]:
            norm.weight.fill_(1.0)
        wte = hf.transformer.wte.weight  # tied to the unembedding
        names = torch.nn.functional.normalize(torch.randn(len(PLANTED_NAMES), 12, generator=generator), dim=1)
        for i, token in enumerate(PLANTED_NAMES):
            wte[token, :12], wte[token, 12] = names[i], 1.0
        constant = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
        wte[PLANTED_QUERY, 20:36] = 20.0 * constant

        def head(layer, h, q=None, k=None, v=None, o=None):
            attn = hf.transformer.h[layer].attn
            for offset, weight in ((0, q), (d, k), (2 * d, v)):
                if weight is not None:
                    attn.c_attn.weight[:, offset + h * dh: offset + (h + 1) * dh] = weight
            attn.c_proj.weight[h * dh:(h + 1) * dh] = o

        head(0, 0, v=identity, o=0.354 * identity.T)
        head(0, 1, v=identity, o=0.354 * identity.T)
        key = identity.clone()
        key[12, 12] = 1.0
        query = -12.0 * identity
        query[20:36, 12] = 4.1 * constant
        head(1, 0, q=query, k=key, v=identity, o=0.3 * identity.T)
        head(1, 1, v=identity, o=0.1 * identity.T)
    pairs = [(a, b) for a in PLANTED_NAMES for b in PLANTED_NAMES if a != b]
    batch = Batch(Task.IOI, torch.tensor([[a, PLANTED_QUERY] for a, _ in pairs]), torch.tensor([[b, PLANTED_QUERY] for _, b in pairs]),
                  torch.tensor(pairs), torch.ones(len(pairs), dtype=torch.long))
    return model, batch


def test_backup_detection_finds_the_planted_backup_head_by_its_response(planted):
    model, batch = planted
    with torch.no_grad():
        clean = batch.score(model(batch.clean))
    assert (clean > 0).all()  # the model does the task
    response = heads.backup_response(model, batch, [(0, 0)])
    assert response.heads() == [(1, 0)]
    assert response.rise[:, 0, 0].mean() < 0 and response.lost.mean() > 0  # the ablated name mover lost its direct effect
    assert response.rise[:, 1, 0].mean() > response.threshold > 0
    assert response.interval((1, 0)).low > 0
    dla = heads.direct_logit_attribution(model, batch).heads.mean(0)
    assert dla[1, 1] > 0 and (1, 1) not in response.heads()  # a direct effect that does not respond is no backup
    assert heads.find_head_sets(model, batch, n_movers=1, n_negative=1)["backup name movers"] == [(1, 0)]
    assert "mean-ablated" in response.rule and "5%" in response.rule


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


def test_mlp_paths_direct_path_is_the_frozen_run_and_single_layer_paths_reach_the_metric(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    names, paths = heads.mlp_paths(tiny_gpt2, batch, (0, 1))
    assert names == ["total", "direct", "MLP 0", "MLP 1"] and paths.metric.shape == (4, 3)
    torch.testing.assert_close(paths.metric[0], heads.patch_heads(tiny_gpt2, batch, [(0, 1)]).metric)
    assert paths.effect()[2].abs().max() > 1e-4  # the head's own layer's MLP reads its output
    # a sender in the last layer reaches the logits directly and through that layer's MLP only
    names, _ = heads.mlp_paths(tiny_gpt2, batch, (1, 0))
    assert names == ["total", "direct", "MLP 1"]


def test_copy_suppression_measures_both_runs_and_refuses_an_upstream_receiver(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    cs = heads.copy_suppression(tiny_gpt2, batch, (0, 1), (1, 2))
    assert cs.receiver_logit.shape == (3, 2) and cs.receiver_attention.shape == (3, 2)
    assert not torch.allclose(cs.receiver_logit[:, 0], cs.receiver_logit[:, 1])  # the edge changes the receiver
    with pytest.raises(AttributionError, match="is not after"):
        heads.copy_suppression(tiny_gpt2, batch, (1, 0), (1, 2))


def test_token_direct_effects_split_the_logit_difference(setup):
    model, batch = setup
    both = heads.token_direct_effects(model, batch, [(0, 1), (1, 2)])
    dla = heads.direct_logit_attribution(model, batch).heads
    torch.testing.assert_close(both[..., 0] - both[..., 1], torch.stack([dla[:, 0, 1], dla[:, 1, 2]], 1), rtol=1e-4, atol=1e-5)


def test_top_senders_need_an_interval_above_zero():
    clean, corrupted = torch.full((6,), 2.0), torch.zeros(6)
    metric = torch.stack([torch.tensor([0.9, 1.1, 1.0, 0.8, 1.2, 1.0]),   # clearly positive
                          torch.tensor([-1.0, 1.2, -1.1, 1.0, -0.9, 1.0]),  # positive mean, interval across 0
                          torch.full((6,), -0.5)])[None, :, None]  # [input, sender, receiver, prompt]
    paths = heads.Patched(metric, clean, corrupted)
    assert heads.top_senders(paths, [(0, 0), (0, 1), (0, 2)], 3) == [(0, 0)]


def test_copy_suppression_verdict_follows_the_three_predictions():
    n = 6
    up = torch.linspace(0.8, 1.2, n)
    both = lambda before, after: torch.stack([before, after], 1)  # noqa: E731  [prompt, (corrupted run, with the edge)]
    holds = heads.CopySuppression((0, 0), (1, 0), torch.stack([up, 0 * up], 1), both(-0.2 * up, -up), both(0.1 * up, 0.6 * up))
    assert holds.verdict().startswith("consistent with copy suppression") and len(holds.checks()) == 8
    lowers_s = heads.CopySuppression((0, 0), (1, 0), torch.stack([0 * up, -up], 1), both(-0.2 * up, -up), both(0.1 * up, 0.6 * up))
    text = lowers_s.verdict()
    assert "do not establish that the sender raises the IO logit" in text and "does not fit this sender" in text
    assert "the receiver attends more to IO" in text  # established, and said so


def test_mover_roles_read_attention_and_the_two_logits():
    n = 6
    ramp = torch.linspace(0.9, 1.1, n)
    attention = torch.stack([torch.stack([0.7 * ramp, 0.1 * ramp], -1),   # looks at IO
                             torch.stack([0.1 * ramp, 0.7 * ramp], -1),   # looks at S
                             torch.stack([0.1 * ramp, 0.7 * ramp], -1)], 1)  # looks at S, but raises S
    writes = torch.stack([torch.stack([ramp, 0 * ramp], -1), torch.stack([0 * ramp, -ramp], -1),
                          torch.stack([0 * ramp, ramp], -1)], 1)
    assert heads.mover_roles(attention, writes) == ["copies IO", "pushes S down", "neither pattern is established"]
