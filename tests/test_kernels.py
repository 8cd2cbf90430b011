"""The attribution kernels against their references.

- AP heads: TransformerLens's own ``get_act_patch_attn_head_out_all_pos``.
- AP neurons: one neuron patched per forward pass with ``run_with_hooks``.
- IG: Captum's ``LayerIntegratedGradients`` on the same hook point, steps and method;
  completeness; exact negation when input and baseline swap in the same context.
- AtP: IG with one left-Riemann step in the baseline context.
All on the tiny random models, several seeds, both directions.
"""

from dataclasses import replace

import functools

import pytest
import torch
from captum.attr import LayerConductance, LayerIntegratedGradients
from transformer_lens import patching as tl_patching

from ig_ap.atp import atp_star, attribution_patching
from ig_ap.attribution import AttributionError
from ig_ap.ig import integrated_gradients, quadrature, reversed_path
from ig_ap.models import load_model
from ig_ap.patching import activation_patching, top_neurons
from ig_ap.tasks import make_dataset

SEEDS = [0, 1]
DIRECTIONS = ["denoising", "noising"]


@pytest.fixture(scope="module", params=[(n, s) for n in ("tiny-gpt2", "tiny-llama") for s in SEEDS], ids=lambda p: f"{p[0]}-s{p[1]}")
def setup(request):
    name, seed = request.param
    model = load_model(name, seed=seed)
    batch = make_dataset("ioi", model, n=4, seed=seed).batch()
    assert len(set(batch.last.tolist())) > 1 or seed, "want prompts of different lengths"
    return model, batch


def _base_and_source(batch, direction):
    return (batch.corrupted, batch.clean) if direction == "denoising" else (batch.clean, batch.corrupted)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_ap_heads_equal_transformer_lens_patching(setup, direction):
    model, batch = setup
    ours = activation_patching(model, batch, direction=direction, components="heads", progress=False, internal_batch_size=8)
    base, source = _base_and_source(batch, direction)
    for p in range(len(batch)):  # TransformerLens's metric is a scalar: one unpadded prompt at a time
        one, n = batch.select([p]), int(batch.last[p]) + 1
        _, cache = model.run_with_cache(source[p:p + 1, :n])
        with torch.no_grad():
            base_metric = one.score(model(base[p:p + 1, :n], return_type="logits"))[0]
        reference = tl_patching.get_act_patch_attn_head_out_all_pos(
            model, base[p:p + 1, :n], cache, lambda logits: one.score(logits)[0] - base_metric
        )
        torch.testing.assert_close(ours.heads[p], reference, rtol=0, atol=1e-5)
    assert ours.heads.abs().max() > 1e-2  # the heads matter in these random models


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_ap_neurons_equal_one_neuron_per_pass(setup, direction):
    model, batch = setup
    info = model.ig_ap_info
    ours = activation_patching(model, batch, direction=direction, components="neurons", progress=False)
    base, source = _base_and_source(batch, direction)
    _, cache = model.run_with_cache(source)
    with torch.no_grad():
        base_metric = batch.score(model(base, return_type="logits"))
        for layer in range(info.n_layers):
            name = f"blocks.{layer}.mlp.hook_post"
            for neuron in torch.randperm(info.d_mlp, generator=torch.Generator().manual_seed(layer))[:6].tolist():
                def patch(act, hook, neuron=neuron, name=name):
                    act = act.clone()
                    act[:, :, neuron] = cache[name][:, :, neuron]
                    return act
                logits = model.run_with_hooks(base, fwd_hooks=[(name, patch)], return_type="logits")
                expected = batch.score(logits) - base_metric
                torch.testing.assert_close(ours.neurons[:, layer, neuron], expected, rtol=0, atol=1e-5)


def test_ap_is_the_same_batched_and_one_prompt_at_a_time(tiny_llama):
    batch = make_dataset("capital_country", tiny_llama, n=5, seed=0).batch()
    assert len(set(batch.last.tolist())) > 1
    together = activation_patching(tiny_llama, batch, progress=False)
    for p in range(len(batch)):
        n = int(batch.last[p]) + 1
        one = batch.select([p])
        one = replace(one, clean=one.clean[:, :n], corrupted=one.corrupted[:, :n])
        alone = activation_patching(tiny_llama, one, progress=False)
        torch.testing.assert_close(together.heads[p], alone.heads[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(together.neurons[p], alone.neurons[0], rtol=0, atol=1e-5)


def test_ap_chunking_and_neuron_subsets(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    full = activation_patching(tiny_gpt2, batch, progress=False, internal_batch_size=3)
    wide = activation_patching(tiny_gpt2, batch, progress=False, internal_batch_size=10_000)
    whole = activation_patching(tiny_gpt2, batch, progress=False, share_prefix=False)
    assert full.meta["shared_prefix"] > 0 and whole.meta["shared_prefix"] == 0
    torch.testing.assert_close(full.neurons, wide.neurons, rtol=0, atol=1e-5)
    torch.testing.assert_close(full.neurons, whole.neurons, rtol=0, atol=1e-5)
    torch.testing.assert_close(full.heads, whole.heads, rtol=0, atol=1e-5)
    chosen = top_neurons(full.neurons, 5)
    subset = activation_patching(tiny_gpt2, batch, components="neurons", neurons=chosen, progress=False)
    for layer in range(chosen.shape[0]):
        torch.testing.assert_close(subset.neurons[:, layer, chosen[layer]], full.neurons[:, layer, chosen[layer]], rtol=0, atol=1e-5)
    assert subset.neurons.isnan().sum() == len(batch) * chosen.shape[0] * (subset.neurons.shape[2] - 5)
    normalized = full.normalized()
    torch.testing.assert_close(normalized.heads * full.denominator[:, None, None], full.heads)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle"])
def test_ig_equals_captum_layer_integrated_gradients(setup, method):
    model, batch = setup
    info = model.ig_ap_info
    ours = integrated_gradients(model, batch, direction="denoising", n_steps=12, method=method, progress=False, internal_batch_size=20)

    def forward(tokens, answers, last):
        return replace(batch, answers=answers, last=last).score(model(tokens, return_type="logits"))

    for layer in range(info.n_layers):
        for kind, module in (("heads", model.blocks[layer].attn.hook_z), ("neurons", model.blocks[layer].mlp.hook_post)):
            lig = LayerIntegratedGradients(forward, module)
            raw = lig.attribute(batch.clean, baselines=batch.corrupted, additional_forward_args=(batch.answers, batch.last),
                                n_steps=12, method=method)
            # The bridge's raw hook_z tensor is [prompt, pos, head * d_head].
            reference = raw.reshape(*raw.shape[:2], info.n_heads, -1).sum(dim=(1, 3)) if kind == "heads" else raw.sum(dim=1)
            mine = ours.heads[:, layer] if kind == "heads" else ours.neurons[:, layer]
            assert (mine - reference).abs().max() <= 1e-5 * reference.abs().max() + 1e-7, (layer, kind)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_ig_completeness_at_64_gauss_legendre_steps(setup, direction):
    model, batch = setup
    result = integrated_gradients(model, batch, direction=direction, n_steps=64, progress=False)
    base, source = _base_and_source(batch, direction)
    for kind in ("heads", "neurons"):
        check = result.completeness[kind]
        assert check["relative"].max() < 1e-3, kind
        total = result[kind].sum(dim=2)
        # the target by hand: in the input context (the source run), minus the effect of setting the layer to its baseline
        exact = torch.stack([-_patched_layer_effect(model, batch, kind, layer, source, base) for layer in range(model.cfg.n_layers)], 1)
        torch.testing.assert_close(check["target"], exact.to(check["target"].dtype), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(total, exact.to(total.dtype), rtol=0, atol=2e-3 * result.denominator.abs().max().item())
        # the path profile splits each attribution over alpha without losing any of it
        torch.testing.assert_close(result.path_profile[kind].sum(-1), result[kind], rtol=1e-4, atol=1e-5)
    # In the input context the layer at its input value is the input run itself.
    assert result.completeness["heads"]["target"].abs().max() > 1e-3


def test_ig_swapped_in_the_same_context_is_exactly_negated(setup):
    model, batch = setup
    # denoising in its input context (clean run) and noising in its baseline context (clean run):
    # the same context, input and baseline swapped.
    forward = integrated_gradients(model, batch, direction="denoising", n_steps=10, context="input", progress=False)
    backward = integrated_gradients(model, batch, direction="noising", n_steps=10, context="baseline", progress=False)
    for kind in ("heads", "neurons"):
        torch.testing.assert_close(backward[kind], -forward[kind], rtol=0, atol=1e-5)
    # reversed_path reads one from the other without running the model: scores, targets, errors, profiles
    read = reversed_path(backward)
    assert (read.direction, read.meta["context"]) == ("denoising", "input")
    for kind in ("heads", "neurons"):
        torch.testing.assert_close(read[kind], forward[kind], rtol=0, atol=1e-5)
        for name in ("target", "error"):
            torch.testing.assert_close(read.completeness[kind][name], forward.completeness[kind][name], rtol=0, atol=1e-5)
        torch.testing.assert_close(read.path_profile[kind], forward.path_profile[kind], rtol=0, atol=1e-5)
    torch.testing.assert_close(read.clean_metric, forward.clean_metric)
    with pytest.raises(AttributionError, match="one-sided"):
        reversed_path(integrated_gradients(model, batch, n_steps=4, method="riemann_left", context="baseline", progress=False))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_atp_equals_ig_with_one_step_in_the_base_run(setup, direction):
    model, batch = setup
    atp = attribution_patching(model, batch, direction=direction)
    ig = integrated_gradients(model, batch, direction=direction, n_steps=1, method="riemann_left", context="baseline", progress=False)
    for kind in ("heads", "neurons"):
        torch.testing.assert_close(atp[kind], ig[kind], rtol=1e-5, atol=1e-5 * ig[kind].abs().max().item())
    ap = activation_patching(model, batch, direction=direction, components="heads", progress=False)
    torch.testing.assert_close(atp.clean_metric, ap.clean_metric, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(atp.corrupted_metric, ap.corrupted_metric, rtol=1e-5, atol=1e-5)


def test_ig_zero_baseline_and_layers_subset(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    zero = integrated_gradients(tiny_gpt2, batch, baseline="zero", layers=[1], n_steps=32, progress=False)
    assert zero.heads[:, 0].isnan().all() and (zero.heads[:, 1] != 0).any()  # not computed: NaN
    assert zero.completeness["neurons"]["relative"][:, 1].max() < 1e-2
    assert zero.meta["baseline"] == "zero" and zero.meta["task"] == "ioi" and zero.meta["model"] == "tiny-gpt2-s0"
    assert zero.meta["n_steps"] == 32 and zero.meta["method"] == "gausslegendre" and zero.direction == "denoising"


def test_quadrature_matches_captum():
    from captum.attr._utils.approximation_methods import approximation_parameters

    for method in ("gausslegendre", "riemann_middle", "riemann_left", "riemann_right", "riemann_trapezoid"):
        step_sizes, alphas = approximation_parameters(method)
        a, w = quadrature(7, method)
        torch.testing.assert_close(a, torch.tensor(alphas(7), dtype=torch.float64), rtol=0, atol=1e-7)
        if method != "riemann_trapezoid":  # Captum's trapezoid weights sum to 1 - 1/n; ours are the rule's
            torch.testing.assert_close(w, torch.tensor(step_sizes(7), dtype=torch.float64), rtol=0, atol=1e-7)
        assert abs(float(w.sum()) - 1) < 1e-12

    # Gauss-Legendre on n nodes integrates every polynomial of degree up to 2n − 1 exactly (and not 2n)
    for n in (1, 2, 3, 7, 12):
        a, w = quadrature(n, "gausslegendre")
        for degree in range(2 * n + 1):
            error = abs(float((w * a**degree).sum()) - 1 / (degree + 1))  # the integral of a^k over [0, 1]
            assert (error < 1e-12) if degree <= 2 * n - 1 else (n > 7 or error > 1e-10), (n, degree, error)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_left", "riemann_right", "riemann_trapezoid"])
def test_a_constant_gradient_gives_a_uniform_path_profile_for_every_rule(method):
    from ig_ap.ig import segment_shares

    for n, segments in ((4, 4), (8, 4), (12, 8), (5, 3)):
        _, w = quadrature(n, method)
        profile = (w[:, None] * segment_shares(w, segments)).sum(0)  # attribution ∝ weight where the gradient is constant
        torch.testing.assert_close(profile, torch.full((segments,), 1 / segments, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(segment_shares(w, segments).sum(1), torch.ones(n, dtype=torch.float64))


def test_bad_arguments_get_one_clear_line(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    cases = [
        (lambda: activation_patching(tiny_gpt2, batch, direction="backwards"), "unknown direction 'backwards'"),
        (lambda: activation_patching(tiny_gpt2, batch, components="mlp"), "unknown component kind"),
        (lambda: integrated_gradients(tiny_gpt2, batch, n_steps=0), "n_steps must be a positive int"),
        (lambda: integrated_gradients(tiny_gpt2, batch, method="simpson"), "unknown IG method 'simpson'"),
        (lambda: integrated_gradients(tiny_gpt2, batch, baseline="mean"), "baseline must be"),
        (lambda: integrated_gradients(tiny_gpt2, batch, layers=[5]), r"layers \[5\] are not layers of this model"),
        (lambda: attribution_patching(tiny_gpt2, replace(batch, corrupted=batch.corrupted[:, :-1])), "differ in shape"),
    ]
    for call, message in cases:
        with pytest.raises(AttributionError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def test_ig_to_a_tolerance_refines_only_the_layers_that_need_it(tiny_llama):
    batch = make_dataset("ioi", tiny_llama, n=4, seed=0).batch()
    coarse = integrated_gradients(tiny_llama, batch, n_steps=4, progress=False)
    assert coarse.completeness["heads"]["relative"][:, 0].max() > 0.1  # 4 steps are not enough at layer 0
    fine = integrated_gradients(tiny_llama, batch, n_steps=4, tolerance=0.01, progress=False)
    for kind in ("heads", "neurons"):
        assert fine.completeness[kind]["relative"].max() <= 0.01
        steps = fine.completeness[kind]["steps"]
        assert steps[0] > 4 and (steps >= 4).all() and steps.tolist() != [4.0] * 3
        for layer, n in enumerate(steps.int().tolist()):  # each layer equals a plain run with the steps it used
            plain = integrated_gradients(tiny_llama, batch, components=kind, n_steps=n, layers=[layer], progress=False)
            torch.testing.assert_close(fine[kind][:, layer], plain[kind][:, layer], rtol=1e-5, atol=1e-6)
    capped = integrated_gradients(tiny_llama, batch, components="heads", n_steps=4, tolerance=1e-9, max_steps=16, progress=False)
    assert capped.completeness["heads"]["steps"].max() == 16  # stops at the cap, and says so
    with pytest.raises(AttributionError, match="tolerance must be a positive number"):
        integrated_gradients(tiny_llama, batch, tolerance=-1)
    with pytest.raises(AttributionError, match="max_steps must be an int of at least n_steps"):
        integrated_gradients(tiny_llama, batch, n_steps=8, max_steps=4)


def test_ig_of_heads_and_neurons_in_shared_passes_equals_each_kind_alone(tiny_llama):
    """A layer's heads and neurons are integrated in the same passes, each on its own path: with passes of 3 copies (so
    a pass holds points of both paths, 4 points each) the scores, errors and profiles equal each kind run alone."""
    batch = make_dataset("ioi", tiny_llama, n=4, seed=1).batch()
    both = integrated_gradients(tiny_llama, batch, n_steps=4, context="baseline", internal_batch_size=3 * len(batch), progress=False)
    assert both.meta["rows_per_pass"] == 3 * len(batch)
    for kind in ("heads", "neurons"):
        alone = integrated_gradients(tiny_llama, batch, components=kind, n_steps=4, context="baseline", progress=False)
        torch.testing.assert_close(both[kind], alone[kind], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(both.path_profile[kind], alone.path_profile[kind], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(both.completeness[kind]["error"], alone.completeness[kind]["error"], rtol=1e-4, atol=1e-6)


def _patched_layer_effect(model, batch, kind, layer, base, source):
    """Exact AP of a whole layer: metric(base run with every component of the layer from source) − metric(base run)."""
    from ig_ap.attribution import hook_name

    name = hook_name(kind, layer)
    _, cache = model.run_with_cache(source, names_filter=lambda n: n == name)
    with torch.no_grad():
        patched = model.run_with_hooks(base, fwd_hooks=[(name, lambda act, hook: cache[name])], return_type="logits")
        return batch.score(patched) - batch.score(model(base, return_type="logits"))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_ig_pairs_with_the_ap_whose_base_run_it_shares(tiny_model, direction):
    """Per layer, baseline-context IG sums to exact AP of the whole layer in the same direction;
    input-context IG sums to minus the whole layer's AP in the other direction."""
    batch = make_dataset("ioi", tiny_model, n=3, seed=0).batch()
    base, source = _base_and_source(batch, direction)
    for context, sign, (b, s) in (("baseline", 1.0, (base, source)), ("input", -1.0, (source, base))):
        ig = integrated_gradients(tiny_model, batch, direction=direction, context=context, n_steps=32, progress=False)
        for kind in ("heads", "neurons"):
            for layer in range(tiny_model.cfg.n_layers):
                exact = sign * _patched_layer_effect(tiny_model, batch, kind, layer, b, s)
                missing = (ig[kind][:, layer].sum(-1) - exact).abs()  # measured here, not read from IG's own report
                assert missing.max() < 1e-2 * (ig.denominator.abs().max() + 1e-3)
                torch.testing.assert_close(ig.completeness[kind]["error"][:, layer], missing.float(), rtol=1e-3, atol=1e-5)
                assert exact.abs().max() > 1e-3 or layer == tiny_model.cfg.n_layers - 1  # the identity is not 0 = 0


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_network_ig_equals_captum_layer_conductance(setup, direction):
    """IG along the whole network with the left rule is Captum's LayerConductance on the embeddings, every layer, heads and neurons."""
    model, batch = setup
    info = model.ig_ap_info
    ours = integrated_gradients(model, batch, direction=direction, path="network", n_steps=12, method="riemann_left",
                                progress=False, internal_batch_size=3 * len(batch))  # several passes, joined
    base, source = _base_and_source(batch, direction)
    name = "blocks.0.hook_resid_pre"
    embeds = {k: model.run_with_cache(tokens, names_filter=name)[1][name] for k, tokens in (("input", source), ("baseline", base))}

    def forward(resid, tokens, answers, last):
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda act, hook: resid)], return_type="logits")
        return replace(batch, answers=answers, last=last).score(logits)

    for layer in range(info.n_layers):
        for kind, module in (("heads", model.blocks[layer].attn.hook_z), ("neurons", model.blocks[layer].mlp.hook_post)):
            # Captum's conductance takes the gradient at each step's start on n_steps + 1 points from 0 to 1
            raw = LayerConductance(forward, module).attribute(embeds["input"], baselines=embeds["baseline"], n_steps=12,
                                                              additional_forward_args=(source, batch.answers, batch.last),
                                                              method="riemann_trapezoid").detach()
            reference = raw.reshape(*raw.shape[:2], info.n_heads, -1).sum(dim=(1, 3)) if kind == "heads" else raw.sum(dim=1)
            mine = ours.heads[:, layer] if kind == "heads" else ours.neurons[:, layer]
            assert (mine - reference).abs().max() <= 1e-5 * reference.abs().max() + 1e-7, (layer, kind)
    assert ours.meta["path"] == "network" and ours.heads.abs().max() > 1e-2


def test_network_ig_is_complete_at_the_embeddings_negates_with_the_direction_and_refines_to_a_tolerance(setup):
    model, batch = setup
    den = integrated_gradients(model, batch, direction="denoising", path="network", n_steps=64, progress=False)
    noi = integrated_gradients(model, batch, direction="noising", path="network", n_steps=64, progress=False)
    for kind in ("heads", "neurons"):
        # the embeddings' attributions add up to metric(input) − metric(baseline): the trapezoid rule's error only
        assert den.completeness[kind]["relative"].max() < 1e-2
        torch.testing.assert_close(den.completeness[kind]["target"][:, 0], (den.clean_metric - den.corrupted_metric).float(),
                                   rtol=1e-4, atol=1e-5)
        # the same points walked the other way: the trapezoid rule gives exactly opposite attributions
        torch.testing.assert_close(noi[kind], -den[kind], rtol=0, atol=1e-5 * den[kind].abs().max().item())
        torch.testing.assert_close(den.path_profile[kind].sum(-1), den[kind], rtol=1e-4, atol=1e-5)
    coarse = integrated_gradients(model, batch, path="network", n_steps=2, tolerance=1e-3, progress=False)
    assert coarse.completeness["heads"]["steps"][0] > 2 and coarse.completeness["heads"]["relative"].max() <= 1e-3
    # the components of a layer need not add up to its AP (paths that skip it are credited to none of them)
    with pytest.raises(AttributionError, match="baseline must be 'other'"):
        integrated_gradients(model, batch, path="network", baseline="zero", progress=False)
    with pytest.raises(AttributionError, match="method"):
        integrated_gradients(model, batch, path="network", method="gausslegendre", progress=False)
    with pytest.raises(AttributionError, match="path must be"):
        integrated_gradients(model, batch, path="everything", progress=False)


# --------------------------------------------------------------------------- AtP*


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_atp_star_with_both_fixes_off_is_atp_exactly(setup, direction):
    model, batch = setup
    atp = attribution_patching(model, batch, direction=direction, progress=False)
    plain = atp_star(model, batch, direction=direction, qk_fix=False, grad_drop=False, progress=False)
    for kind in ("heads", "neurons"):
        assert torch.equal(plain[kind], atp[kind])
    assert plain.method == "attribution_patching"


def _dropped_atp(model, batch, direction, dropped: int, kind: str):
    """AtP with block ``dropped``'s attention and MLP outputs cut from the backward pass, by plain hooks on full
    forward passes (no prefix sharing, no copies): the reference for GradDrop's per-block estimates."""
    from ig_ap.attribution import hook_name

    base, source = _base_and_source(batch, direction)
    names = [hook_name(kind, l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(source, names_filter=lambda n: n in names)
    kept = {}

    def keep(act, hook, name):
        kept[name] = act
        return act

    cut = lambda act, hook: act.detach()  # noqa: E731
    hooks = [(n, functools.partial(keep, name=n)) for n in names] + [(f"blocks.{dropped}.hook_attn_out", cut), (f"blocks.{dropped}.hook_mlp_out", cut)]
    with torch.enable_grad():
        logits = model.run_with_hooks(base, fwd_hooks=hooks, return_type="logits")
        grads = torch.autograd.grad(batch.score(logits).sum(), [kept[n] for n in names], allow_unused=True)
    summed = (1, 3) if kind == "heads" else (1,)
    return torch.stack([((cache[n] - kept[n].detach()) * (torch.zeros_like(kept[n]) if g is None else g)).sum(dim=summed)
                        for n, g in zip(names, grads)], 1)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_grad_drop_is_the_papers_mean_of_dropped_estimates(tiny_llama, direction):
    """GradDrop = (1/(L−1)) Σ_ℓ |AtP with block ℓ's gradient dropped|, each estimate recomputed by hand."""
    batch = make_dataset("ioi", tiny_llama, n=3, seed=0).batch()
    star = atp_star(tiny_llama, batch, direction=direction, qk_fix=False, progress=False)
    L = tiny_llama.cfg.n_layers
    for kind in ("heads", "neurons"):
        dropped = torch.stack([_dropped_atp(tiny_llama, batch, direction, layer, kind) for layer in range(L)])
        for layer in range(L):  # a component's own block cut: no gradient reaches it
            assert dropped[layer][:, layer].abs().max() == 0
        torch.testing.assert_close(star[kind], dropped.abs().sum(0) / (L - 1), rtol=1e-4, atol=1e-6)
        assert (star[kind] >= 0).all()


def test_qk_fix_moves_atp_towards_ap_where_attention_saturates():
    """A model built so that a layer-0 head reaches layer 1's queries and keys only through the residual stream
    (layer 0's MLP writes nothing) and layer 1's attention saturates (its queries × 8): the QK fix, the exact
    pattern of layer 1, must remove a large part of AtP's error against AP for the layer-0 heads."""
    errors = {"atp": 0.0, "qk": 0.0}
    for seed in (0, 1, 2):
        model = load_model("tiny-gpt2", seed=seed)
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if "h.0._original_component.mlp._original_component.c_proj" in name:
                    weight.zero_()
                if "h.1._original_component.attn.q._original_component" in name:
                    weight *= 8
                if "h.1._original_component.attn.qkv._original_component" in name:
                    weight[..., :model.cfg.d_model] *= 8
        batch = make_dataset("ioi", model, n=4, seed=0).batch()
        for direction in DIRECTIONS:
            ap = activation_patching(model, batch, direction=direction, components="heads", progress=False).heads[:, 0]
            atp = attribution_patching(model, batch, direction=direction, components="heads", progress=False).heads[:, 0]
            qk = atp_star(model, batch, direction=direction, components="heads", grad_drop=False, progress=False).heads[:, 0]
            errors["atp"] += (atp - ap).abs().mean().item()
            errors["qk"] += (qk - ap).abs().mean().item()
    assert errors["qk"] < 0.7 * errors["atp"], errors


def test_grad_drop_recovers_a_component_whose_paths_cancel():
    """Hand-built cancellation: block 1's outputs scaled until one layer-0 neuron's indirect effect (through block 1)
    cancels its direct effect, so AtP scores it 0 (ranked last). GradDrop, which drops block 1's gradient, sees its
    direct effect and ranks it among the top. (AP of that neuron is small too here: the cancellation is real to
    first order; GradDrop's purpose is to leave no such neuron unexamined.)"""
    model = load_model("tiny-gpt2", seed=0)
    batch = make_dataset("ioi", model, n=1, seed=0).batch()
    params = dict(model.named_parameters())
    block1 = {n: p.detach().clone() for n, p in params.items()
              if "h.1._original_component" in n and ("attn.o._original" in n or "c_proj" in n)}

    def atp_with_block1_scaled(k):
        with torch.no_grad():
            for n, v in block1.items():
                params[n].copy_(v * k)
        return attribution_patching(model, batch, components="neurons", progress=False).neurons[0, 0]

    direct, scaled = atp_with_block1_scaled(0.0), atp_with_block1_scaled(3.0)  # k = 0: the direct path alone
    flips = ((direct.sign() != scaled.sign()) & (direct.abs() > 0.3 * direct.abs().max())).nonzero().flatten()
    assert len(flips), "no layer-0 neuron whose indirect effect can cancel its direct one"
    neuron = flips[direct[flips].abs().argmax()].item()
    low, high = 0.0, 3.0
    for _ in range(40):  # bisect on k for AtP = 0
        middle = (low + high) / 2
        low, high = (middle, high) if atp_with_block1_scaled(middle)[neuron].sign() == direct[neuron].sign() else (low, middle)
    atp = atp_with_block1_scaled((low + high) / 2)
    grad_drop = atp_star(model, batch, components="neurons", qk_fix=False, progress=False).neurons[0, 0]
    assert atp[neuron].abs() < 1e-5 * atp.abs().max()
    assert (grad_drop > grad_drop[neuron]).sum() < 0.05 * grad_drop.numel()  # among the top 5%
    assert grad_drop[neuron] > 0.3 * direct.abs().max()


def test_atp_star_rejects_bad_options(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    with pytest.raises(AttributionError, match="qk_fix must be True or False"):
        atp_star(tiny_gpt2, batch, qk_fix="yes")
