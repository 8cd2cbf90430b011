"""Why IG and AP disagree: IG of one component alone is its AP; joint patches measure what the rest adds."""

import pytest
import torch

from ig_ap.ablation import patch_sets
from ig_ap.attribution import AttributionError, hook_name
from ig_ap.ig import integrated_gradients
from ig_ap import toy
from ig_ap.interactions import (LABELS, PARTS, account, coalition_curve, disagreement_parts, head_interactions, joint_patches,
                                conditions_met, label_disagreements, layers_holding, pair_interactions, partner_screen, screened_partners)
from ig_ap.patching import activation_patching
from ig_ap.tasks import make_dataset


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("kind", ["heads", "neurons"])
def test_ig_of_one_component_alone_is_its_ap(tiny_model, direction, kind):
    """The identity: with every other component of its layer held at the baseline, in the base run's context, IG's path
    ends at the component patched: its IG is its AP up to quadrature error (the fundamental theorem of calculus)."""
    batch = make_dataset("ioi", tiny_model, n=3, seed=0).batch()
    ap = activation_patching(tiny_model, batch, direction=direction, components=(kind,), progress=False)
    for layer, component in ((0, 1), (1, 3)):
        ig = integrated_gradients(tiny_model, batch, direction=direction, components=(kind,), context="baseline", n_steps=16,
                                  only={kind: {layer: [component]}}, progress=False)
        torch.testing.assert_close(ig[kind][:, layer, component], ap[kind][:, layer, component], atol=1e-5, rtol=1e-4)
        scores = ig[kind].clone()
        scores[:, layer, component] = float("nan")
        assert scores.isnan().all()  # the components held still have no attribution
        assert ig.completeness[kind]["relative"][:, layer].max() < 1e-4


def _reference_ig(model, batch, layer, kind, members, n_steps=128):
    """IG of ``members`` moving together (the rest of their layer at the corrupted value) in the corrupted run, by a
    midpoint Riemann sum over hooks on the full model: independent of the kernel's replay and quadrature."""
    name = hook_name(kind, layer)
    cache = {}
    for tokens, tag in ((batch.clean, "clean"), (batch.corrupted, "corrupted")):
        with model.hooks(fwd_hooks=[(name, lambda activation, hook, tag=tag: cache.setdefault(tag, activation.detach().clone()))]):
            model(tokens)
    x0, x1 = cache["corrupted"], cache["clean"]
    mask = torch.zeros(x0.shape[2], dtype=torch.bool)
    mask[members] = True
    shape = (1, 1, -1, 1) if kind == "heads" else (1, 1, -1)
    delta = torch.where(mask.view(shape), x1 - x0, torch.zeros_like(x0))
    total = torch.zeros(len(batch), x0.shape[2], dtype=torch.float64)
    P, chunk = len(batch), 64
    alphas = (torch.arange(n_steps, dtype=torch.float64) + 0.5) / n_steps
    for start in range(0, n_steps, chunk):  # many points per pass: the prompts repeated once per point
        a = alphas[start:start + chunk].to(x0.dtype)
        S = len(a)
        point = (x0.unsqueeze(0) + a.view(S, *([1] * x0.dim())) * delta.unsqueeze(0)).reshape(S * P, *x0.shape[1:])
        point.requires_grad_(True)
        with model.hooks(fwd_hooks=[(name, lambda activation, hook: point)]):
            logits = model(batch.corrupted.repeat(S, 1))
        last = logits[torch.arange(S * P), batch.last.repeat(S)].view(S, P, -1)
        (grad,) = torch.autograd.grad(batch.metric(last, batch).sum(), point)
        total += (grad.view(S, *x0.shape) * delta).sum(dim=(0, 2, 4) if kind == "heads" else (0, 2)).double() / n_steps
    return total


@pytest.mark.parametrize("kind", ["heads", "neurons"])
def test_moving_a_subset_gives_ig_in_that_subsets_game(tiny_gpt2, kind):
    """only= a set S: each member's IG is IG of the game where S alone moves (checked against a plain Riemann sum over
    hooks on the full model), and S's attributions add up to S patched jointly."""
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=1).batch()
    layer, members = 1, [0, 2, 3]
    ig = integrated_gradients(tiny_gpt2, batch, direction="denoising", components=(kind,), context="baseline", n_steps=32,
                              only={kind: {layer: members}}, progress=False)
    reference = _reference_ig(tiny_gpt2, batch, layer, kind, members)
    torch.testing.assert_close(ig[kind][:, layer, members].double(), reference[:, members], atol=2e-4, rtol=1e-3)
    size = ig[kind].shape[-1]
    together = torch.zeros(1, size, dtype=torch.bool)
    together[0, members] = True
    joint, _, _ = joint_patches(tiny_gpt2, batch, layer, kind, together, "denoising")
    torch.testing.assert_close(ig[kind][:, layer, members].sum(-1), joint[0], atol=1e-5, rtol=1e-4)


def test_only_is_checked_before_any_work(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    with pytest.raises(AttributionError, match="out of range"):
        integrated_gradients(tiny_gpt2, batch, components=("heads",), only={"heads": {0: [99]}}, progress=False)
    with pytest.raises(AttributionError, match="per-layer IG"):
        integrated_gradients(tiny_gpt2, batch, components=("heads",), path="network", only={"heads": {0: [1]}}, progress=False)


@pytest.mark.parametrize("kind", ["heads", "neurons"])
def test_joint_patches_of_one_are_ap_and_of_two_are_the_ablation_modules(tiny_model, kind):
    """joint_patches starts at the patched layer; patch_sets (ablation) runs the whole model: the two must agree, and a set
    of one component is AP."""
    batch = make_dataset("ioi", tiny_model, n=3, seed=0).batch()
    size = tiny_model.cfg.n_heads if kind == "heads" else tiny_model.cfg.d_mlp
    sets = torch.zeros(3, size, dtype=torch.bool)
    sets[0, 1] = True
    sets[1, [0, 2]] = True
    sets[2, [1, 2, 3]] = True
    changes, clean, corrupted = joint_patches(tiny_model, batch, 1, kind, sets, "denoising")
    ap = activation_patching(tiny_model, batch, direction="denoising", components=(kind,), progress=False)
    torch.testing.assert_close(changes[0], ap[kind][:, 1, 1], atol=1e-5, rtol=1e-4)
    masks = []
    for s in sets:
        mask = torch.zeros(tiny_model.cfg.n_layers, size, dtype=torch.bool)
        mask[1] = s
        masks.append({kind: mask})
    patched = patch_sets(tiny_model, batch, masks, "denoising", normalize="none")
    torch.testing.assert_close(changes, patched.metric - corrupted, atol=1e-5, rtol=1e-4)


def test_pair_interactions_are_joint_minus_singles_for_every_pair(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    pairs = pair_interactions(tiny_gpt2, batch, 1, "heads")
    H = tiny_gpt2.cfg.n_heads
    assert pairs.interaction.shape == (3, H, H) and pairs.interaction.diagonal(dim1=1, dim2=2).isnan().all()
    sets = torch.zeros(1, H, dtype=torch.bool)
    sets[0, [0, 3]] = True
    joint, _, _ = joint_patches(tiny_gpt2, batch, 1, "heads", sets)
    torch.testing.assert_close(pairs.interaction[:, 0, 3], joint[0] - pairs.ap[:, 0] - pairs.ap[:, 3], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pairs.interaction, pairs.interaction.transpose(1, 2), equal_nan=True)
    # only the pairs asked for, the partners appended after the components
    some = pair_interactions(tiny_gpt2, batch, 1, "neurons", components=[5], partners={5: [7, 9]})
    assert some.components.tolist() == [5, 7, 9] and some.interaction[:, 1, 2].isnan().all()
    assert not some.interaction[:, 0, 1:].isnan().any()


def test_layers_holding_a_share_of_the_squared_disagreement():
    d = torch.zeros(2, 5, 3)
    d[:, 3, 0] = 3.0  # layer 3: 18 of 26 (over both prompts)
    d[:, 1, 1] = 2.0  # layer 1: 8 of 26
    d[0, 4, 2] = float("nan")  # not measured: counts 0
    assert layers_holding(d, 0.5) == [3]
    assert layers_holding(d, 18 / 26) == [3]
    assert layers_holding(d, 0.7) == [1, 3]  # in order, whatever the ranking
    assert layers_holding(d, 1.0) == [0, 1, 2, 3, 4]  # 1: every layer, even those with nothing
    assert layers_holding(torch.zeros(1, 4, 2), 0.9) == []
    with pytest.raises(ValueError, match="coverage"):
        layers_holding(d, 0.0)


def test_head_interactions_of_some_layers_are_those_of_all_there(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    every = head_interactions(tiny_gpt2, batch)
    some = head_interactions(tiny_gpt2, batch, layers=[1])
    torch.testing.assert_close(some.interaction[:, 1], every.interaction[:, 1], equal_nan=True)
    torch.testing.assert_close(some.ap[:, 1], every.ap[:, 1])
    assert some.interaction[:, 0].isnan().all() and some.ap[:, 0].isnan().all()
    assert some.half_sum()[:, 0].isnan().all() and not some.half_sum()[:, 1].isnan().any()  # NaN where not measured


def test_the_partner_screen_finds_the_strongest_partners(tiny_gpt2):
    """Recall of the screen against exhaustive pairs on a small layer: for 4 neurons of layer 1 (256 neurons), the true
    8 strongest partners by mean |I| over prompts, and the screen's 32 (an eighth of the layer)."""
    batch = make_dataset("ioi", tiny_gpt2, n=4, seed=0).batch()
    ap = activation_patching(tiny_gpt2, batch, direction="denoising", components=("neurons",), layers=[1], progress=False)
    chosen = ap.neurons[:, 1].abs().mean(0).topk(4).indices.tolist()
    screened = partner_screen(tiny_gpt2, batch, 1, "neurons", chosen, k=32)
    everything = {c: [q for q in range(tiny_gpt2.cfg.d_mlp) if q != c] for c in chosen}
    exact = pair_interactions(tiny_gpt2, batch, 1, "neurons", components=chosen, partners=everything)
    recalls = []
    for i, c in enumerate(chosen):
        strength = exact.interaction[:, i].abs().mean(0).nan_to_num(-1.0)
        truth = {int(exact.components[j]) for j in strength.topk(8).indices}
        recalls.append(len(truth & set(screened[c])) / 8)
    recall = sum(recalls) / len(recalls)
    assert recall >= 0.75, f"screen recall {recall:.2f} ({recalls})"


def test_the_account_splits_the_disagreement():
    ig, ap = torch.randn(5, 9), torch.randn(5, 9)
    assert account(ig, ap, ig - ap).explained().value == pytest.approx(1.0)
    assert account(ig, ap, torch.zeros(5, 9)).explained().value == pytest.approx(0.0)
    half = account(ig, ap, 0.5 * (ig - ap)).explained()
    assert half.value == pytest.approx(0.75) and half.low <= 0.75 <= half.high
    budget = account(ig, ap, 0.5 * (ig - ap)).budget()
    total = ((ig - ap) ** 2).sum(-1).mean().item()
    assert budget["explained"] + budget["rest"] == pytest.approx(total) and budget["rest"] == pytest.approx(0.25 * total)
    # a prediction that is nearly exact on every prompt but one: the jackknife's upper bound would pass 1; it is cut there
    near = ig - ap
    near[0] *= 3.0
    share = account(ig, ap, near).explained()
    assert share.value < 1 and share.high == 1.0 and share.low < share.value


@pytest.mark.parametrize("gate", ["and", "or"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_the_label_rule_names_the_toy_gates_right(gate, direction):
    """The toy gate nets, whose answer is known: the two inputs of an AND are labelled AND-like, of an OR OR-like, in both
    directions. I(a, b) is the joint patch (the whole gap: ±1 normalised) minus the two single patches."""
    net = toy.train_gate(gate, hidden=2, seed=0)
    ap = toy.activation_patching(net, direction)
    ig = toy.integrated_gradients(net, direction).scores
    joint = 1.0 if direction == "denoising" else -1.0
    interaction = joint - ap[0] - ap[1]
    labels = label_disagreements(ig - ap, torch.full((2,), 0.5 * float(interaction)))
    assert labels == [LABELS[0] if gate == "and" else LABELS[1]] * 2, (ig - ap, interaction)
    # with every input of the rule given (AtP's distance from AP, IG of the one layer there is), the pairs still come first
    atp = toy.attribution_patching(net, direction)
    labels = label_disagreements(ig - ap, torch.full((2,), 0.5 * float(interaction)), across=ig - ap, atp=atp - ap, tolerance=0.02)
    assert labels == [LABELS[0] if gate == "and" else LABELS[1]] * 2, (ig - ap, atp - ap)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_the_label_rule_names_an_and_across_layers_cross_layer(direction):
    """Chapter 4's AND across layers: per-layer IG is AP (each unit is alone in its layer: no pairs), IG of both layers
    together is not; the rule names both units cross-layer."""
    scores = toy.cross_layer_scores()
    ap, per_layer, both = (scores[f"{m} {direction}"] for m in ("AP", "IG per layer", "IG both layers"))
    torch.testing.assert_close(per_layer, ap, atol=1e-4, rtol=0)
    labels = label_disagreements(per_layer - ap, torch.zeros(2), across=both - ap, tolerance=0.02)
    assert labels == [LABELS[2]] * 2, (per_layer - ap, both - ap)
    # without IG along both layers the rule has nothing to see: per-layer IG and AP agree
    assert label_disagreements(per_layer - ap, torch.zeros(2), tolerance=0.02) == [LABELS[5]] * 2


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_the_label_rule_names_a_saturated_unit_saturating(direction):
    """A net whose output is its first input through a saturated sigmoid: IG of that input is its AP (the whole gap; it is
    alone in its game), AtP, the gradient in the flat tail, a small part of it: saturating. The idle input is below the
    tolerance."""
    net = toy.saturating_net()
    ap, atp = toy.activation_patching(net, direction), toy.attribution_patching(net, direction)
    ig = toy.integrated_gradients(net, direction).scores
    assert abs(float(ap[0])) == pytest.approx(1.0) and float(ig[0]) == pytest.approx(float(ap[0]), abs=1e-4) and abs(float(atp[0])) < 0.2
    labels = label_disagreements(ig - ap, torch.zeros(2), atp=atp - ap, tolerance=0.02)
    assert labels == [LABELS[3], LABELS[5]]
    # a gentler sigmoid is not saturated: AtP is close to AP and nothing needs explaining
    gentle = toy.saturating_net(steepness=0.2)
    ap, atp = toy.activation_patching(gentle, direction), toy.attribution_patching(gentle, direction)
    assert label_disagreements(torch.zeros(2), torch.zeros(2), atp=atp - ap, tolerance=0.02) == [LABELS[5]] * 2


def test_the_label_rule_in_order():
    """The rule's steps on hand-made values: pairs first, then across layers, then saturation, else unexplained."""
    d = torch.tensor([0.2, -0.2, 0.2, 0.2, 0.2, 0.01])
    q = torch.tensor([0.15, -0.3, 0.01, 0.01, 0.01, 0.0])
    e = torch.tensor([0.9, 0.9, 0.5, 0.25, 0.25, 0.0])
    a = torch.tensor([0.0, 0.0, 0.0, 0.6, 0.3, 0.005])
    assert label_disagreements(d, q, across=e, atp=a, tolerance=0.02) == [
        LABELS[0], LABELS[1], LABELS[2], LABELS[3], LABELS[4], LABELS[5]]
    # both across layers and saturating: the larger of |e − d| and |a| names it
    d, q = torch.tensor([0.01, 0.01]), torch.zeros(2)
    assert label_disagreements(d, q, across=torch.tensor([0.1, 0.5]), atp=torch.tensor([0.3, 0.1]), tolerance=0.02) == [
        LABELS[3], LABELS[2]]
    # every condition met, where the label names the first: pairs that also saturate, both later conditions, none
    d, q = torch.tensor([0.2, 0.01, 0.2, 0.001]), torch.tensor([0.2, 0.0, 0.0, 0.0])
    e, a = torch.tensor([0.2, 0.1, 0.2, 0.0]), torch.tensor([0.5, 0.3, 0.0, 0.001])
    assert conditions_met(d, q, across=e, atp=a, tolerance=0.02) == [(LABELS[0], LABELS[3]), (LABELS[2], LABELS[3]), (), ()]
    assert label_disagreements(d, q, across=e, atp=a, tolerance=0.02) == [LABELS[0], LABELS[3], LABELS[4], LABELS[5]]


def test_the_parts_of_a_disagreement_add_up_to_it():
    ig, ap, half, alone = (torch.randn(4, 9) for _ in range(4))
    parts = disagreement_parts(ig, ap, half, alone)
    assert list(parts) == list(PARTS)
    torch.testing.assert_close(sum(parts.values()), ig - ap)
    torch.testing.assert_close(parts["pairs"], half)


def test_the_coalition_curve_runs_from_ap_to_per_layer_ig(tiny_gpt2):
    """Moving a head alone gives its AP; moving it with every other head of its layer gives its per-layer IG; in between,
    the value of one partner joining is measured against the pairwise prediction ½ I (they differ by the higher order)."""
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    layer, head = 1, 2
    n_heads = tiny_gpt2.cfg.n_heads
    partners = [h for h in range(n_heads) if h != head]
    curve = coalition_curve(tiny_gpt2, batch, layer, "heads", head, partners, [0, 1, len(partners)], n_steps=32)
    ap = activation_patching(tiny_gpt2, batch, direction="denoising", components=("heads",), progress=False)
    full = integrated_gradients(tiny_gpt2, batch, direction="denoising", components=("heads",), context="baseline", n_steps=32,
                                layers=[layer], progress=False)
    torch.testing.assert_close(curve[:, 0], ap.heads[:, layer, head].float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(curve[:, 2], full.heads[:, layer, head].float(), atol=1e-5, rtol=1e-4)
    # one partner: the two-member game, checked against the kernel-independent Riemann sum
    reference = _reference_ig(tiny_gpt2, batch, layer, "heads", [head, partners[0]])
    torch.testing.assert_close(curve[:, 1].double(), reference[:, head], atol=2e-4, rtol=1e-3)


def test_screened_partners_gives_each_neurons_ap_ig_alone_and_pairs(tiny_gpt2):
    """The bounded account for neurons: for chosen neurons of two layers, AP alone (= AP's kernel), IG moving alone (= its
    AP: the identity), and the exact interactions with the partners the screen picks (= joint patches of those pairs)."""
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    chosen = [(0, 4), (1, 7), (1, 30)]
    found = screened_partners(tiny_gpt2, batch, "neurons", chosen, k=3, n_steps=16)
    ap = activation_patching(tiny_gpt2, batch, direction="denoising", components=("neurons",), progress=False)
    for i, (layer, neuron) in enumerate(chosen):
        torch.testing.assert_close(found.ap[:, i], ap.neurons[:, layer, neuron].float(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(found.alone[:, i], found.ap[:, i], atol=1e-5, rtol=1e-4)
        assert found.partners[i] == partner_screen(tiny_gpt2, batch, layer, "neurons", [neuron], k=3)[neuron]
        partner = found.partners[i][0]
        sets = torch.zeros(1, tiny_gpt2.cfg.d_mlp, dtype=torch.bool)
        sets[0, [neuron, partner]] = True
        joint, _, _ = joint_patches(tiny_gpt2, batch, layer, "neurons", sets)
        single = ap.neurons[:, layer, partner].float()
        torch.testing.assert_close(found.interaction[:, i, 0], joint[0] - found.ap[:, i] - single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(found.half_sum(), 0.5 * found.interaction.sum(-1))
    # partners screened on other prompts than those they are measured on
    other = make_dataset("ioi", tiny_gpt2, n=3, seed=1).batch()
    apart = screened_partners(tiny_gpt2, batch, "neurons", chosen[:1], k=3, n_steps=16, screen_batch=other)
    assert apart.partners[0] == partner_screen(tiny_gpt2, other, 0, "neurons", [4], k=3)[4]
    torch.testing.assert_close(apart.ap[:, 0], found.ap[:, 0])
