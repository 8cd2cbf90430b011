"""Integrated gradients (IG) for every attention head and MLP neuron, one batched pass per layer.

The idea: for one layer, move its activation along a straight line from a *baseline*
(the other prompt's activation at that layer, or zero) to the *input* (this prompt's),
and integrate the gradient of the metric along the way. The attribution of a component
is the part of that integral that flows through its own coordinates::

    IG_c = sum over its coordinates of (input − baseline) · ∫₀¹ ∂metric/∂a(baseline + α (input − baseline)) dα

summed over positions (and over ``d_head`` for a head: patching ``hook_z`` and
``hook_result`` give the same sums, since a head's output is linear in its ``z``).
Completeness holds per layer: the attributions of the layer's components add up to
metric(layer at input) − metric(layer at baseline) in the same run, up to the quadrature
error, which is reported (``Attribution.completeness``).

Directions, as for patching (:mod:`ig_ap.attribution`): ``"denoising"`` integrates from
the corrupted activation (baseline) to the clean one (input); ``"noising"`` from clean to
corrupted. The rest of the network runs on the input prompt (``context="input"``, the
convention of Captum's ``LayerIntegratedGradients`` with ``inputs=`` the input prompt and
``baselines=`` the other, which the tests check against), or on the baseline prompt
(``context="baseline"``). In the baseline context, IG estimates activation patching in
the same direction, and with one left-Riemann step it *is* attribution patching.

Speed: the layers below the integrated one are computed once (:mod:`ig_ap.replay`), and
so are the positions before the first difference of clean and corrupted (where input
and baseline agree: they carry no attribution), through a key/value cache; all
``n_steps`` points of the path go through one batched forward and backward pass (rows
``step × prompt``, chunked to ``internal_batch_size`` / ``memory_mb``); the unembedding
is computed at each prompt's last token only. Quadrature: Gauss-Legendre (default) or the
Riemann rules, with Captum's nodes and weights.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ig_ap.attribution import Attribution, AttributionError, Setup, clean_and_corrupted, hook_name, prepare
from ig_ap.replay import MEMORY_MB, Trace, run_from, trace
from ig_ap.tasks import Batch

METHODS = ("gausslegendre", "riemann_middle", "riemann_left", "riemann_right", "riemann_trapezoid")
PATHS = ("layer", "network")
MAX_STEPS = 512
"""The most points a layer (or the network path) is refined to under a tolerance, by default."""
NETWORK_METHODS = ("riemann_trapezoid", "riemann_left")
"""The rules of the network path: the gradient at both ends of each step averaged (the trapezoid rule), or at its
start (Captum's ``LayerConductance``); both on ``n_steps + 1`` evenly spaced points from 0 to 1."""


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[Float[Tensor, "step"], Float[Tensor, "step"]]:
    """Nodes ``alpha`` in [0, 1] and weights summing to 1, as Captum computes them (but the trapezoid's weights)."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise AttributionError(f"n_steps must be a positive int, got {n_steps!r}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)
        return torch.tensor(0.5 * (1 + x)), torch.tensor(0.5 * w)
    if method not in METHODS:
        raise AttributionError(f"unknown IG method {method!r}; use one of {', '.join(METHODS)}")
    n = n_steps
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if method == "riemann_trapezoid":
        # The trapezoid rule on n nodes spaced 1/(n-1). (Captum weights them 1/n, which sums
        # to 1 - 1/n and breaks completeness; the other rules are Captum's exactly.)
        if n < 2:
            raise AttributionError("riemann_trapezoid needs n_steps >= 2")
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, n)
    elif method == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif method == "riemann_middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = torch.linspace(1 / n, 1, n)
    return alphas.double(), weights


def segment_shares(weights: Float[Tensor, "step"], segments: int) -> Float[Tensor, "step segment"]:
    """How each quadrature node's attribution is split over ``segments`` equal segments of α, for the path profile.

    Node ``i`` stands for the cell [w_1 + … + w_(i−1), w_1 + … + w_i] of the path (its weight's
    share of [0, 1]); its attribution is split by the overlap of that cell with each
    segment. A constant gradient (attribution proportional to the weights) then gives a
    uniform profile for every rule, which reading each node's segment from its α alone did
    not (the right Riemann rule put its last node's weight in the last segment, Gauss–Legendre
    segments varied by ±30%). Rows sum to 1.
    """
    ends = torch.cumsum(weights.double(), 0)
    ends = ends / ends[-1]
    starts = torch.cat([torch.zeros(1, dtype=torch.float64), ends[:-1]])
    edges = torch.linspace(0, 1, segments + 1, dtype=torch.float64)
    overlap = (torch.minimum(ends[:, None], edges[None, 1:]) - torch.maximum(starts[:, None], edges[None, :-1])).clamp_min(0)
    return overlap / (ends - starts).clamp_min(1e-300)[:, None]


def _replace(activation, hook, value):
    return value


def integrated_gradients(
    model,
    batch: Batch,
    metric: Callable | None = None,
    direction: str = "denoising",
    components: str | Sequence[str] = ("heads", "neurons"),
    *,
    n_steps: int = 50,
    method: str | None = None,
    path: str = "layer",
    tolerance: float | None = None,
    max_steps: int = MAX_STEPS,
    baseline: str = "other",
    context: str = "input",
    layers: Sequence[int] | None = None,
    segments: int = 4,
    internal_batch_size: int | None = None,
    memory_mb: float = MEMORY_MB,
    share_prefix: bool = True,
    only: Mapping[str, Any] | None = None,
    device: str | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> Attribution:
    """IG attributions of every head and neuron, layer by layer, with completeness and a path profile.

    Args:
        model: a bridge from :func:`ig_ap.models.load_model`.
        batch: prompt pairs (:class:`ig_ap.tasks.Batch`).
        metric: ``metric(last-token logits [..., prompt, vocab], batch) -> [..., prompt]``; the task's by default.
        direction: ``"denoising"`` (baseline corrupted, input clean) or ``"noising"`` (the reverse).
        components: ``"heads"``, ``"neurons"`` or both.
        n_steps: points on the path; ``method``: ``"gausslegendre"`` (the default) or a Riemann rule.
        path: ``"layer"`` (the default): each layer integrated on its own, the rest of the network
            on ``context``'s run; ``"network"``: every layer moves together, the conductance of each
            head and neuron (:func:`network_conductance`; ``method`` ``"riemann_trapezoid"``, the
            default there, or ``"riemann_left"``, Captum's ``LayerConductance``).
        tolerance: quadrature to a tolerance: a layer whose completeness error exceeds
            ``tolerance`` × the batch's mean |metric(clean) − metric(corrupted)| for any
            prompt is integrated again with twice the steps, until it does not or the steps
            would pass ``max_steps``; ``completeness[kind]["steps"]`` records the steps each
            layer used. ``None`` (default): ``n_steps`` everywhere. (The mean gap, not each
            prompt's own: a prompt the model does not solve, with a gap near 0, would
            otherwise drive every layer to ``max_steps``.)
        baseline: ``"other"`` (the other prompt's activation, aligned) or ``"zero"``.
        context: which prompt the rest of the network runs on: ``"input"`` or ``"baseline"``.
        layers: layers to attribute (all by default); the others are NaN.
        segments: the path profile splits alpha in this many equal segments.
        internal_batch_size: rows (step × prompt) per pass; by default what fits ``memory_mb``.
        share_prefix: run the positions before the first difference of clean and corrupted
            once (their input and baseline agree, so they carry no attribution); not with
            ``baseline="zero"``.
        only: move only these components of each layer and hold the others at the baseline:
            ``{kind: mask}``, the mask a ``[layer, component]`` bool tensor or ``{layer:
            indices}``. IG then attributes the game of the moving set: in the baseline's
            context, IG of one component alone is its AP (the fundamental theorem of calculus:
            the path's end is that component patched, everything else at the baseline), and the
            sum over a set is AP of the set. The components held still, and the layers and kinds
            with none moving, are NaN. Per-layer IG only (``path="layer"``).
        device, progress, meta: where to compute, whether to show a progress bar, extra
            metadata (as every kernel).

    Returns:
        :class:`~ig_ap.attribution.Attribution`; ``completeness[kind]`` holds per ``[prompt,
        layer]`` the ``target`` metric(input) − metric(baseline) of the layer, the absolute
        ``error`` |sum of attributions − target| and the ``relative`` error (divided by the
        batch's mean |metric(clean) − metric(corrupted)|), and per layer the ``steps`` it used;
        ``path_profile[kind]`` is ``[prompt, layer, component, segment]``.
    """
    if path not in PATHS:
        raise AttributionError(f"path must be one of {', '.join(map(repr, PATHS))}, got {path!r}")
    if path == "network":
        if only is not None:
            raise AttributionError("only= moves a subset of one layer's components: per-layer IG (path='layer') only")
        return network_conductance(model, batch, metric, direction, components, n_steps=n_steps, method=method or "riemann_trapezoid",
                                   tolerance=tolerance, max_steps=max_steps, baseline=baseline, context=context, layers=layers,
                                   segments=segments, internal_batch_size=internal_batch_size, memory_mb=memory_mb,
                                   share_prefix=share_prefix, device=device, progress=progress, meta=meta)
    method = method or "gausslegendre"
    setup = prepare(model, batch, metric, direction, components, layers=layers, internal_batch_size=internal_batch_size,
                    memory_mb=memory_mb, share_prefix=share_prefix, device=device, progress=progress, meta=meta)
    _check_options(n_steps, method, tolerance, max_steps, baseline, context, segments)
    moving = moving_masks(only, setup)
    batch = setup.batch
    prefix = batch.first_difference() if setup.share_prefix and baseline == "other" else 0
    runs = _trace_runs(model, setup, baseline, context, prefix)
    store = _Store.empty(setup, segments)
    # one job per layer: its kinds (heads, neurons) integrated in the same passes, each on its own path
    jobs = [(layer, kinds) for layer in setup.layers
            if (kinds := [k for k in setup.components if moving is None or bool(moving[k][layer].any())])]
    bar = tqdm(total=sum(len(kinds) for _, kinds in jobs) * n_steps, desc=f"IG {setup.direction}", unit="step",
               disable=not setup.progress)
    for layer, kinds in jobs:
        steps_per_pass = setup.copies_per_pass(model, batch.clean.shape[1] - prefix, setup.info.n_layers - layer, True)
        _attribute_layer(model, setup, runs, store, layer, kinds, baseline, n_steps, method, tolerance, max_steps,
                         segments, steps_per_pass, bar, None if moving is None else {k: moving[k][layer] for k in kinds})
    bar.close()
    if moving is not None:  # the components held still have no attribution in the moving set's game
        for kind in setup.components:
            store.scores[kind][:, ~moving[kind]] = float("nan")
            store.profile[kind][:, ~moving[kind]] = float("nan")
    return setup.result("integrated_gradients", store.scores, runs.clean_metric, runs.corrupted_metric,
                        completeness=store.completeness, path_profile=store.profile, n_steps=n_steps, method=method,
                        baseline=baseline, context=context, segments=segments, tolerance=tolerance, max_steps=max_steps,
                        shared_prefix=prefix, **({} if moving is None else {"only": {k: int(m.sum()) for k, m in moving.items()}}))


def moving_masks(only: Mapping[str, Any] | None, setup: Setup) -> dict[str, Tensor] | None:
    """``only=`` as a ``[layer, component]`` bool mask per kind of ``setup``'s components (a kind not named: none moves)."""
    if only is None:
        return None
    info = setup.info
    sizes = {"heads": info.n_heads, "neurons": info.d_mlp}
    if not isinstance(only, Mapping) or not set(only) <= set(sizes):
        raise AttributionError(f"only must be {{kind: mask}} with kinds 'heads', 'neurons'; got {only!r:.80}")
    masks = {}
    for kind in setup.components:
        value, mask = only.get(kind), torch.zeros(info.n_layers, sizes[kind], dtype=torch.bool)
        if isinstance(value, Mapping):
            for layer, indices in value.items():
                index = torch.as_tensor(indices, dtype=torch.long).flatten()
                if not 0 <= int(layer) < info.n_layers or (len(index) and (index.min() < 0 or index.max() >= sizes[kind])):
                    raise AttributionError(f"only[{kind!r}]: layer {layer} or its indices are out of range "
                                           f"({info.n_layers} layers, {sizes[kind]} {kind} per layer)")
                mask[int(layer), index] = True
        elif value is not None:
            value = torch.as_tensor(value)
            if value.dtype != torch.bool or tuple(value.shape) != tuple(mask.shape):
                raise AttributionError(f"only[{kind!r}] must be a bool mask of shape {tuple(mask.shape)} or {{layer: indices}}")
            mask = value.clone()
        masks[kind] = mask
    return masks


def _check_options(n_steps, method, tolerance, max_steps, baseline, context, segments) -> None:
    """IG's own options, checked before any work (one line each)."""
    if baseline not in ("other", "zero"):
        raise AttributionError(f"baseline must be 'other' or 'zero', got {baseline!r}")
    if context not in ("input", "baseline"):
        raise AttributionError(f"context must be 'input' or 'baseline', got {context!r}")
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise AttributionError(f"segments must be a positive int, got {segments!r}")
    quadrature(n_steps, method)  # checks both
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance <= 0):
        raise AttributionError(f"tolerance must be a positive number (a share of the clean−corrupted gap) or None, got {tolerance!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < n_steps:
        raise AttributionError(f"max_steps must be an int of at least n_steps ({n_steps}), got {max_steps!r}")


def reversed_path(attribution: Attribution) -> Attribution:
    """Per-layer IG of the other direction in the other context, from a result at hand, without running the model.

    The idea: IG of direction d with the rest of the network on its baseline prompt integrates
    a layer from one prompt's activation to the other's, in one prompt's run. IG of the other
    direction with the rest of the network on its *input* prompt runs in the same run and
    integrates the same line the other way: its attributions, completeness targets and path
    profile are those of ``attribution`` negated (the profile's segments in reverse order),
    and its errors and steps are the same. So chapter 3's control pairing (IG on the input
    run) of one direction is its main IG of the other direction, read backwards. The
    quadrature nodes of every rule but the one-sided Riemann rules are symmetric on [0, 1],
    so this is exact for them (``tests/test_kernels.py`` checks it against the kernel).
    """
    meta = attribution.meta
    if attribution.method != "integrated_gradients" or meta.get("path", "layer") != "layer" or meta.get("baseline") != "other":
        raise AttributionError("reversed_path takes per-layer IG with the other prompt's baseline (path='layer', baseline='other')")
    if meta.get("method") in ("riemann_left", "riemann_right"):
        raise AttributionError(f"the {meta['method']} rule is one-sided: read backwards it is the other rule; compute it instead")
    flipped = {"input": "baseline", "baseline": "input"}[meta["context"]]
    direction = "noising" if attribution.direction == "denoising" else "denoising"
    completeness = None
    if attribution.completeness is not None:
        completeness = {kind: {name: (-value if name == "target" else value.clone()) for name, value in table.items()}
                        for kind, table in attribution.completeness.items()}
    profile = None if attribution.path_profile is None else {k: -v.flip(-1) for k, v in attribution.path_profile.items()}
    return Attribution(attribution.method, direction,
                       None if attribution.heads is None else -attribution.heads,
                       None if attribution.neurons is None else -attribution.neurons,
                       attribution.clean_metric.clone(), attribution.corrupted_metric.clone(),
                       meta={**meta, "direction": direction, "context": flipped, "reversed_from": meta["context"]},
                       completeness=completeness, path_profile=profile, seconds=0.0)


@dataclass
class _Runs:
    """The traced input and baseline runs, the run the rest of the network sits on, and the metrics."""

    input: Trace
    baseline: Trace
    context: Trace
    clean_metric: Tensor
    corrupted_metric: Tensor

    @property
    def scale(self) -> Tensor:
        """The mean |metric(clean) − metric(corrupted)| over prompts: what the completeness error is a share of."""
        return (self.clean_metric - self.corrupted_metric).abs().mean().clamp_min(1e-12)


def _trace_runs(model, setup: Setup, baseline: str, context: str, prefix: int) -> _Runs:
    baseline_tokens, input_tokens = setup.runs()
    names = [hook_name(k, l) for l in setup.layers for k in setup.components]
    input_run = trace(model, input_tokens, setup.batch.last, names, prefix=prefix)
    baseline_run = trace(model, baseline_tokens, setup.batch.last, names if baseline == "other" else (), prefix=prefix)
    clean_run, corrupted_run = clean_and_corrupted(setup.direction, baseline_run, input_run)
    return _Runs(input_run, baseline_run, input_run if context == "input" else baseline_run,
                 setup.metric(clean_run.final, setup.batch).detach(), setup.metric(corrupted_run.final, setup.batch).detach())


@dataclass
class _Store:
    """What IG fills in, layer by layer: scores, path profiles and the completeness tables (NaN until computed)."""

    scores: dict[str, Tensor]
    profile: dict[str, Tensor]
    completeness: dict[str, dict[str, Tensor]]

    @classmethod
    def empty(cls, setup: Setup, segments: int) -> "_Store":
        info, P = setup.info, len(setup.batch)
        sizes = {"heads": info.n_heads, "neurons": info.d_mlp}
        nan = lambda *shape: torch.full(shape, float("nan"))  # noqa: E731
        completeness = {k: {m: nan(P, info.n_layers) for m in ("target", "error", "relative")} for k in setup.components}
        for k in setup.components:
            completeness[k]["steps"] = nan(info.n_layers)
        return cls({k: setup.empty(k) for k in setup.components},
                   {k: nan(P, info.n_layers, sizes[k], segments) for k in setup.components}, completeness)


def _attribute_layer(model, setup: Setup, runs: _Runs, store: _Store, layer: int, kinds: Sequence[str], baseline: str,
                     n_steps: int, method: str, tolerance, max_steps: int, segments: int, steps_per_pass: int, bar,
                     moving: Mapping[str, Tensor] | None = None) -> None:
    """IG of one layer's components of each of ``kinds``, each kind's points doubled until its completeness holds
    (``tolerance``); ``moving``: per kind, a bool mask over the layer's components, the only ones that leave the baseline.

    The kinds are integrated separately (heads on one path with the layer's neurons recomputed, neurons on another)
    but in the same passes: their rows are stacked, which fills the small passes of a few prompts better."""
    paths = {}
    for kind in kinds:
        name = hook_name(kind, layer)
        x = runs.input.cache[name]
        x0 = runs.baseline.cache[name] if baseline == "other" else torch.zeros_like(x)
        mask = None if moving is None else moving[kind]
        whole = mask is None or bool(mask.all())
        if not whole:  # the path's end: the moving components at their input values, the others at the baseline
            shape = (1, 1, -1, 1) if kind == "heads" else (1, 1, -1)
            x = torch.where(mask.to(x.device).view(shape), x, x0)
        target = _layer_target(model, setup, runs, layer, name, x0, x, baseline, steps_per_pass, whole)
        paths[kind] = (name, x0, x, target)
    steps = {kind: n_steps for kind in kinds}
    pending = list(kinds)
    while pending:
        results = _integrate(model, runs.context, layer,
                             [(paths[k][0], k, paths[k][1], paths[k][2], *quadrature(steps[k], method)) for k in pending],
                             setup.metric, setup.batch, segments, steps_per_pass, bar)
        refine = []
        for kind, (total, prof) in zip(pending, results):
            target = paths[kind][3]
            relative = (total.sum(-1) - target).abs() / runs.scale.double()
            if tolerance is None or bool((relative <= tolerance).all()) or 2 * steps[kind] > max_steps:
                store.scores[kind][:, layer] = total.float().cpu()
                store.profile[kind][:, layer] = prof.float().cpu()
                table = store.completeness[kind]
                table["target"][:, layer] = target.float().cpu()
                table["error"][:, layer] = (total.sum(-1) - target).abs().float().cpu()
                table["relative"][:, layer] = relative.float().cpu()
                table["steps"][layer] = steps[kind]
            else:  # refine this kind of the layer: the error is above the tolerance for some prompt
                steps[kind] *= 2
                bar.total += steps[kind]
                refine.append(kind)
        pending = refine


@torch.no_grad()
def _layer_target(model, setup: Setup, runs: _Runs, layer: int, name: str, x0: Tensor, x: Tensor, baseline: str,
                  per_pass: int, whole: bool = True) -> Tensor:
    """Completeness target: the metric with the layer at ``x`` minus at ``x0``, per prompt.

    With the other prompt's baseline, one end is the context run itself (the layer at its own value), whose metric
    is already known: only the other end is run (unless only part of the layer moves, ``whole`` False, in the input's
    context: then neither end is the run's own). With the zero baseline both ends are run (in one pass when
    ``per_pass`` allows two copies of the batch)."""
    P = len(setup.batch)
    if baseline == "other" and (whole or runs.context is runs.baseline):
        own = setup.metric(runs.context.final, setup.batch).double()
        other = x if runs.context is runs.baseline else x0
        final = run_from(model, runs.context, layer, 1, [(name, functools.partial(_replace, value=other))], last=setup.batch.last)
        moved = setup.metric(final.view(1, P, -1), setup.batch)[0].double()
        return moved - own if runs.context is runs.baseline else own - moved
    ends = [x0, x]
    at = []
    for start in range(0, 2, min(2, per_pass)):
        chunk = ends[start:start + per_pass]
        final = run_from(model, runs.context, layer, len(chunk), [(name, functools.partial(_replace, value=torch.cat(chunk)))],
                         last=setup.batch.last)
        at.append(setup.metric(final.view(len(chunk), P, -1), setup.batch))
    at = torch.cat(at)
    return (at[1] - at[0]).double()


def _integrate(model, context_run, layer: int, paths, metric, batch, segments: int, steps_per_pass: int,
               bar) -> list[tuple[Tensor, Tensor]]:
    """IG of the components of one or more hooks of block ``layer``, each on its own path, in shared passes.

    ``paths`` holds ``(hook name, kind, x0, x, alphas, weights)`` per path: that hook's
    activation moves from ``x0`` to ``x`` at the points ``alphas`` while everything else is
    computed from the context run. A pass holds up to ``steps_per_pass`` copies of the batch,
    points of any of the paths: each hook replaces only its own path's rows and leaves the
    others' as computed (so a heads path's rows recompute the block's neurons). Returns per
    path (attributions [prompt, component], profile [prompt, component, segment]).
    """
    P = len(batch)
    out, rows = [], []  # rows: (path, step) of every point, in order
    for j, (name, kind, x0, x, alphas, weights) in enumerate(paths):
        size = x.shape[-2] if kind == "heads" else x.shape[-1]
        out.append((torch.zeros(P, size, dtype=torch.float64, device=x.device),
                    torch.zeros(P, size, segments, dtype=torch.float64, device=x.device),
                    segment_shares(weights, segments).to(x.device), x - x0))  # [step, segment]; the path's direction
        rows += [(j, i) for i in range(len(alphas))]
    for start in range(0, len(rows), steps_per_pass):
        chunk = rows[start:start + steps_per_pass]
        C = len(chunk)
        runs, hooks, w = [], [], []  # each path's run of consecutive copies in this pass
        for j, group in itertools.groupby(range(C), key=lambda c: chunk[c][0]):
            copies = list(group)
            steps = [chunk[c][1] for c in copies]
            name, kind, x0, x, alphas, weights = paths[j]
            a = alphas[steps].to(device=x.device, dtype=x.dtype)
            point = (x0.unsqueeze(0) + a.view(-1, *(1,) * x.dim()) * out[j][3].unsqueeze(0)).reshape(len(steps) * P, *x.shape[1:])
            point.requires_grad_(True)
            runs.append((j, point, steps))
            hooks.append((name, functools.partial(_replace_rows, value=point, first=copies[0] * P, whole=len(copies) == C)))
            w.append(weights[steps])
        with torch.enable_grad():
            final = run_from(model, context_run, layer, C, hooks, last=batch.last)
            values = metric(final.view(C, P, -1), batch)
            w = torch.cat(w).to(device=values.device, dtype=values.dtype)
            grads = torch.autograd.grad((values * w[:, None]).sum(), [point for _, point, _ in runs])
        for (j, _, steps), grad in zip(runs, grads):
            kind, x = paths[j][1], paths[j][3]
            total, profile, split, delta = out[j]
            summed = (2, 4) if kind == "heads" else (2,)  # positions (and d_head) of [step, prompt, pos, ...]
            per_step = (grad.view(len(steps), P, *x.shape[1:]) * delta.unsqueeze(0)).sum(dim=summed)  # [step, prompt, component]
            total += per_step.sum(0).double()
            profile += torch.einsum("spc,sg->pcg", per_step.double(), split[steps])
        bar.update(C)
    return [(total, profile) for total, profile, _, _ in out]


def _replace_rows(activation, hook, value, first: int, whole: bool):
    """The activation with rows ``first`` … ``first + len(value)`` replaced by ``value`` (all of it when ``whole``)."""
    if whole:
        return value
    return torch.cat([activation[:first], value, activation[first + len(value):]])


# --------------------------------------------------------------------------- IG along the whole network: conductance


def network_conductance(
    model,
    batch: Batch,
    metric: Callable | None = None,
    direction: str = "denoising",
    components: str | Sequence[str] = ("heads", "neurons"),
    *,
    n_steps: int = 50,
    method: str = "riemann_trapezoid",
    tolerance: float | None = None,
    max_steps: int = MAX_STEPS,
    baseline: str = "other",
    context: str = "input",
    layers: Sequence[int] | None = None,
    segments: int = 4,
    internal_batch_size: int | None = None,
    memory_mb: float = MEMORY_MB,
    share_prefix: bool = True,
    device: str | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> Attribution:
    """IG along the whole network: the conductance of every head and neuron (``integrated_gradients(..., path="network")``).

    The idea: move the input of the whole network, the residual stream entering block 0
    (token plus position embeddings; the positions are the same in both prompts, so this
    interpolates the token embeddings), along the straight line from the baseline prompt's
    to the input prompt's. Every layer then moves at once, along the curve the network maps
    that line to, and each component is credited with the gradient flowing through it times
    its own change (Dhamdhere et al.'s conductance, Captum's ``LayerConductance``; EAP-IG's
    ``inputs`` variant for nodes)::

        conductance_c = ∫₀¹ ∂metric/∂a_c(α) · da_c/dα dα   (summed over positions and coordinates)

    with da_c/dα taken as the change of a_c between consecutive points of ``n_steps + 1``
    evenly spaced ones (``method``: the gradient at both ends averaged, ``"riemann_trapezoid"``,
    or at the start, ``"riemann_left"``, which is Captum's ``LayerConductance`` exactly). One
    batched forward and backward pass over the points serves every layer (per-layer IG needs
    one per layer). Unlike per-layer IG, the components of one layer need not add up to
    that layer's AP: paths that skip the layer through the residual stream are credited to no
    component of it. What is exact, up to the rule's error, is completeness at the input:
    the attributions to the embeddings add up to metric(input) − metric(baseline); that
    error is ``completeness[kind]`` (the same for every layer) and what ``tolerance`` bounds,
    doubling the steps of the whole path. Options and result as :func:`integrated_gradients`
    (``baseline`` must be ``"other"``; ``context`` has no meaning here and must be left at
    its default; ``layers`` picks the layers whose components are recorded).
    """
    if baseline != "other":
        raise AttributionError("path='network' interpolates from the baseline prompt's embeddings: baseline must be 'other'")
    if context != "input":
        raise AttributionError("path='network' moves every layer at once, so no layer runs on a context: leave context at 'input'")
    if method not in NETWORK_METHODS:
        raise AttributionError(f"path='network' takes method {' or '.join(map(repr, NETWORK_METHODS))}, got {method!r}")
    setup = prepare(model, batch, metric, direction, components, layers=layers, internal_batch_size=internal_batch_size,
                    memory_mb=memory_mb, share_prefix=share_prefix, device=device, progress=progress, meta=meta)
    _check_options(n_steps, "gausslegendre", tolerance, max_steps, baseline, context, segments)  # n_steps ≥ 1: two points
    batch = setup.batch
    prefix = batch.first_difference() if setup.share_prefix else 0
    runs = _trace_runs(model, setup, baseline, context, prefix)
    names = [hook_name(k, l) for l in setup.layers for k in setup.components]
    x0, x = runs.baseline.resid_pre(0), runs.input.resid_pre(0)
    target = (runs.input.final, runs.baseline.final)
    target = (setup.metric(target[0], batch) - setup.metric(target[1], batch)).double()
    steps_per_pass = setup.copies_per_pass(model, batch.clean.shape[1] - prefix, setup.info.n_layers, True)
    steps = n_steps
    bar = tqdm(total=steps + 1, desc=f"IG (network) {setup.direction}", unit="point", disable=not setup.progress)
    while True:
        totals, profile, embedding = _conduct(model, runs.input, names, x0, x, setup, steps, method, segments, steps_per_pass, bar)
        relative = (embedding - target).abs() / runs.scale.double()
        if tolerance is None or bool((relative <= tolerance).all()) or 2 * steps > max_steps:
            break
        steps *= 2
        bar.total += steps + 1
    bar.close()
    store = _Store.empty(setup, segments)
    for name in names:
        kind = "heads" if name.endswith("hook_z") else "neurons"
        layer = int(name.split(".")[1])
        store.scores[kind][:, layer] = totals[name].float().cpu()
        store.profile[kind][:, layer] = profile[name].float().cpu()
        table = store.completeness[kind]
        table["target"][:, layer] = target.float().cpu()
        table["error"][:, layer] = (embedding - target).abs().float().cpu()
        table["relative"][:, layer] = relative.float().cpu()
        table["steps"][layer] = steps
    return setup.result("integrated_gradients", store.scores, runs.clean_metric, runs.corrupted_metric,
                        completeness=store.completeness, path_profile=store.profile, n_steps=n_steps, method=method,
                        baseline=baseline, context=context, path="network", segments=segments, tolerance=tolerance,
                        max_steps=max_steps, shared_prefix=prefix)


def _keep_graph(activation, hook, name, store):
    store[name] = activation
    return activation


def _conduct(model, run: Trace, names: Sequence[str], x0: Tensor, x: Tensor, setup: Setup, steps: int, method: str,
             segments: int, steps_per_pass: int, bar) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """Conductance of the components at ``names`` along the network path on ``steps`` steps: (totals [prompt, component],
    profiles [prompt, component, segment], the embeddings' attribution summed [prompt])."""
    P, device = x.shape[0], x.device
    alphas = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    split = segment_shares(torch.full((steps,), 1.0 / steps, dtype=torch.float64), segments).to(device)  # [step, segment]
    delta = x - x0
    totals: dict[str, Tensor] = {}
    profile: dict[str, Tensor] = {}
    embedding = torch.zeros(P, dtype=torch.float64, device=device)
    previous = None  # the last point of the previous pass: (activations, gradients, embedding gradient)
    for start in range(0, steps + 1, steps_per_pass):
        a = alphas[start:start + steps_per_pass].to(device=device, dtype=x.dtype)
        S = len(a)
        point = (x0.unsqueeze(0) + a.view(S, *(1,) * x.dim()) * delta.unsqueeze(0)).reshape(S * P, *x.shape[1:]).requires_grad_(True)
        kept: dict[str, Tensor] = {}
        hooks = [("blocks.0.hook_resid_pre", functools.partial(_replace, value=point))]
        hooks += [(n, functools.partial(_keep_graph, name=n, store=kept)) for n in names]
        with torch.enable_grad():
            final = run_from(model, run, 0, S, hooks, last=setup.batch.last)
            values = setup.metric(final.view(S, P, -1), setup.batch)
            grads = torch.autograd.grad(values.sum(), [point] + [kept[n] for n in names])
        here = ({n: kept[n].detach().view(S, P, *kept[n].shape[1:]) for n in names},
                {n: g.view(S, P, *g.shape[1:]) for n, g in zip(names, grads[1:])},
                grads[0].view(S, P, *x.shape[1:]))
        if previous is not None:  # join the previous pass's last point to this pass's points
            here = tuple({n: torch.cat([prev[n], cur[n]]) for n in names} if isinstance(cur, dict) else torch.cat([prev, cur])
                         for prev, cur in zip(previous, here))
        acts, grads_at, embedding_grad = here
        first = start - (1 if previous is not None else 0)  # the index of acts' first point
        for n in names:
            change = acts[n][1:] - acts[n][:-1]  # [step, prompt, ...]
            slope = grads_at[n][1:] + grads_at[n][:-1] if method == "riemann_trapezoid" else 2 * grads_at[n][:-1]
            summed = (2, 4) if n.endswith("hook_z") else (2,)
            per_step = (change * slope / 2).sum(dim=summed).double()  # [step, prompt, component]
            totals[n] = totals.get(n, 0) + per_step.sum(0)
            profile[n] = profile.get(n, 0) + torch.einsum("spc,sg->pcg", per_step, split[first:first + len(per_step)])
        e_slope = embedding_grad[1:] + embedding_grad[:-1] if method == "riemann_trapezoid" else 2 * embedding_grad[:-1]
        embedding += (e_slope / 2 * delta.unsqueeze(0) / steps).sum(dim=tuple(range(2, e_slope.dim()))).sum(0).double()
        previous = tuple({n: v[-1:] for n, v in part.items()} if isinstance(part, dict) else part[-1:] for part in here)
        bar.update(S)
    return totals, profile, embedding
