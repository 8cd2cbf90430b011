"""Why IG and AP disagree: interactions between the components of one layer, measured by joint patches.

The idea. Per-layer IG in AP's base run (``context="baseline"``) moves every component of a
layer from its baseline value to its input value *together*. IG of one component *alone*
(every other component of its layer held at the baseline: ``integrated_gradients(...,
only=...)``) is exactly its AP, by the fundamental theorem of calculus: the path ends at
that component patched into the base run. So the whole of IG_c − AP_c comes from the other
components of the layer moving with c along the path. To second order in the layer's
activation,

    IG_c − AP_c ≈ ½ Σ_{c′ ≠ c} I(c, c′),   I(c, c′) = AP({c, c′}) − AP(c) − AP(c′),

with AP({c, c′}) the two patched together (exact when the metric is quadratic in the
layer's activation: IG is then the Aumann–Shapley value of the layer's game, which splits
each pair's interaction evenly). AND-like pairs (I > 0: each needs the other) push IG above
AP in the direction patched, OR-like pairs (I < 0: either suffices) below it. What the pairs
do not explain is higher-order interaction, and quadrature error (bounded by IG's
completeness tolerance).

- :func:`joint_patches`: the metric's change with each of many sets of one layer's
  components patched together, many sets per pass, from that layer up (:mod:`ig_ap.replay`).
- :func:`pair_interactions`: I(c, c′) for every pair of a layer's heads, or of chosen neurons
  and their partners, with each component's AP.
- :func:`partner_screen`: the cheap screen that picks each neuron's likely partners among all
  neurons of its layer (one forward and backward pass per neuron), whose recall against
  exhaustive pairs ``tests/test_interactions.py`` measures.
- :meth:`PairInteractions.half_sum`, :func:`account`: ½ Σ I per component (the pairwise
  prediction), and the share of the disagreement Σ_c (IG_c − AP_c)² it explains, with an
  interval over prompts.
- :func:`disagreement_parts`, :func:`coalition_curve`: IG_c − AP_c split into its own path's
  quadrature error, the pairs and the higher order; the higher order measured by letting c's
  partners join one by one.
- :func:`label_disagreements`: the rule that names each disagreement (AND-like or OR-like
  pairs, cross-layer, saturating, unexplained).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ig_ap.ablation import _patch_masked
from ig_ap.analysis import Interval, jackknife_interval
from ig_ap.attribution import AttributionError, base_and_source, hook_name, prepare
from ig_ap.ig import _replace
from ig_ap.replay import MEMORY_MB, run_from, trace


@torch.no_grad()
def joint_patches(
    model,
    batch,
    layer: int,
    kind: str,
    sets: Bool[Tensor, "set component"],
    direction: str = "denoising",
    metric=None,
    memory_mb: float = MEMORY_MB,
    internal_batch_size: int | None = None,
    device: str | None = None,
) -> tuple[Float[Tensor, "set prompt"], Float[Tensor, "prompt"], Float[Tensor, "prompt"]]:
    """metric(base run with each set of ``layer``'s components patched together) − metric(base run), per set and prompt.

    ``sets[j]`` marks the components of kind ``kind`` (``"heads"``, ``"neurons"``) patched
    together in set ``j``, each taking its value from the source run at every position
    (``direction`` as AP's: ``"denoising"`` patches clean values into the corrupted run).
    Returns (changes ``[set, prompt]``, metric(clean), metric(corrupted)), in the metric's
    units. A set of one component is its AP exactly.
    """
    setup = prepare(model, batch, metric, direction, (kind,), layers=[layer], internal_batch_size=internal_batch_size,
                    memory_mb=memory_mb, share_prefix=True, device=device, progress=False)
    batch, P, name = setup.batch, len(setup.batch), hook_name(kind, layer)
    size = setup.info.n_heads if kind == "heads" else setup.info.d_mlp
    sets = torch.as_tensor(sets, dtype=torch.bool)
    if sets.dim() != 2 or sets.shape[1] != size:
        raise AttributionError(f"sets must be a [set, {size}] bool mask over the {kind} of layer {layer}, got {tuple(sets.shape)}")
    prefix = batch.first_difference()
    clean = trace(model, batch.clean, batch.last, [name], prefix=prefix)
    corrupted = trace(model, batch.corrupted, batch.last, [name], prefix=prefix)
    base, source = base_and_source(direction, clean, corrupted)
    base_metric = setup.metric(base.final, batch)
    per_pass = setup.copies_per_pass(model, batch.clean.shape[1] - prefix, setup.info.n_layers - layer, False)
    changes = []
    for start in range(0, len(sets), per_pass):
        chunk = sets[start:start + per_pass].to(base.final.device)
        hook = functools.partial(_patch_masked, source=source.cache[name], masks=chunk, n_prompts=P)
        final = run_from(model, base, layer, len(chunk), [(name, hook)], last=batch.last)
        changes.append(setup.metric(final.view(len(chunk), P, -1), batch) - base_metric)
    return torch.cat(changes).float().cpu(), setup.metric(clean.final, batch).float().cpu(), setup.metric(corrupted.final, batch).float().cpu()


def _half_sum(interaction: Float[Tensor, "... partner"]) -> Float[Tensor, "..."]:
    """½ Σ over the last axis (a component's partners) of the interactions, pairs not patched (NaN) counting 0."""
    return 0.5 * interaction.nan_to_num(0.0).sum(-1)


@dataclass(frozen=True)
class PairInteractions:
    """Joint-patching interactions of components of one layer: ``ap[p, i]`` of component ``components[i]`` alone and
    ``interaction[p, i, j]`` = AP({i, j}) − AP(i) − AP(j), NaN for pairs not patched (and on the diagonal), in the
    metric's units; ``gap`` is metric(clean) − metric(corrupted) per prompt."""

    layer: int
    kind: str
    direction: str
    components: Int[Tensor, "component"]
    ap: Float[Tensor, "prompt component"]
    interaction: Float[Tensor, "prompt component component"]
    gap: Float[Tensor, "prompt"]

    def half_sum(self) -> Float[Tensor, "prompt component"]:
        """½ Σ_{c′} I(c, c′) per component: the pairwise prediction of IG_c − AP_c (pairs not patched count 0)."""
        return _half_sum(self.interaction)


def pair_interactions(
    model,
    batch,
    layer: int,
    kind: str,
    direction: str = "denoising",
    components: Sequence[int] | None = None,
    partners: dict[int, Sequence[int]] | None = None,
    metric=None,
    memory_mb: float = MEMORY_MB,
    internal_batch_size: int | None = None,
    device: str | None = None,
) -> PairInteractions:
    """I(c, c′) for pairs of ``layer``'s components by exact joint patches, batched (:func:`joint_patches`).

    ``components``: the components to measure (all of the layer's by default: every pair of
    heads is 36 joint patches for 9 heads); ``partners``: ``{component: [partners]}`` to patch
    only those pairs (for neurons, the partners :func:`partner_screen` picks), each pair once.
    The result is indexed by ``components`` followed by every partner not among them.
    """
    info = prepare(model, batch, metric, direction, (kind,), layers=[layer], device=device, progress=False).info
    size = info.n_heads if kind == "heads" else info.d_mlp
    chosen = list(range(size)) if components is None else [int(c) for c in components]
    if partners is None:
        pairs = list(itertools.combinations(range(len(chosen)), 2))
        order = chosen
    else:
        order = chosen + sorted({int(q) for c in partners for q in partners[c]} - set(chosen))
        where = {c: i for i, c in enumerate(order)}
        pairs = sorted({tuple(sorted((where[int(c)], where[int(q)]))) for c in partners for q in partners[c] if int(q) != int(c)})
    n = len(order)
    sets = torch.zeros(n + len(pairs), size, dtype=torch.bool)
    sets[torch.arange(n), torch.tensor(order)] = True
    for j, (a, b) in enumerate(pairs):
        sets[n + j, [order[a], order[b]]] = True
    changes, clean, corrupted = joint_patches(model, batch, layer, kind, sets, direction, metric, memory_mb, internal_batch_size, device)
    singles = changes[:n].T  # [prompt, component]
    interaction = torch.full((changes.shape[1], n, n), float("nan"))
    for j, (a, b) in enumerate(pairs):
        value = changes[n + j] - singles[:, a] - singles[:, b]
        interaction[:, a, b] = interaction[:, b, a] = value
    return PairInteractions(layer, kind, direction, torch.tensor(order), singles, interaction, clean - corrupted)


def partner_screen(
    model,
    batch,
    layer: int,
    kind: str,
    components: Sequence[int],
    k: int,
    direction: str = "denoising",
    metric=None,
    device: str | None = None,
) -> dict[int, list[int]]:
    """Each component's ``k`` likely partners in its layer: the largest |AtP of c′ with c patched − AtP of c′|.

    The screen is attribution patching of the whole layer twice, in the base run and in the
    base run with ``c`` patched: the change of c′'s first-order effect when c is patched is
    the first-order estimate of I(c, c′) (exact for a metric quadratic in the layer). One
    forward and backward pass per component ``c`` screens every partner of its layer at
    once, where exact pairs cost one patch each.
    """
    setup = prepare(model, batch, metric, direction, (kind,), layers=[layer], device=device, progress=False)
    batch, P, name = setup.batch, len(setup.batch), hook_name(kind, layer)
    with torch.no_grad():
        clean = trace(model, batch.clean, batch.last, [name])
        corrupted = trace(model, batch.corrupted, batch.last, [name])
    base, source = base_and_source(direction, clean, corrupted)
    x0, x1 = base.cache[name], source.cache[name]
    delta = x1 - x0
    summed = (1, 3) if kind == "heads" else (1,)  # positions (and d_head) of [prompt, pos, ...]
    rows = [None] + [int(c) for c in components]
    points = []
    for c in rows:
        point = x0.clone()
        if c is not None:
            point[:, :, c] = x1[:, :, c]
        points.append(point)
    point = torch.cat(points).requires_grad_(True)
    with torch.enable_grad():
        final = run_from(model, base, layer, len(rows), [(name, functools.partial(_replace, value=point))], last=batch.last)
        values = setup.metric(final.view(len(rows), P, -1), batch)
        (grad,) = torch.autograd.grad(values.sum(), point)
    atp = (grad.view(len(rows), *x0.shape) * delta.unsqueeze(0)).sum(dim=tuple(d + 1 for d in summed))  # [row, prompt, component]
    screen = (atp[1:] - atp[:1]).abs().mean(1)  # [component, partner]
    found = {}
    for i, c in enumerate(rows[1:]):
        screen[i, c] = -1.0  # not its own partner
        found[c] = screen[i].topk(min(k, screen.shape[1] - 1)).indices.tolist()
    return found


@dataclass(frozen=True)
class LayerInteractions:
    """Every pair of heads of every layer (or of the layers asked for), by joint patches: the results cache's unit.

    ``ap[p, l, c]``: AP of head c of layer l alone; ``interaction[p, l, c, c′]``: I(c, c′), NaN on
    the diagonal and for layers not measured; metrics in the metric's units, ``gap`` per prompt.
    """

    direction: str
    ap: Float[Tensor, "prompt layer component"]
    interaction: Float[Tensor, "prompt layer component component"]
    gap: Float[Tensor, "prompt"]

    def half_sum(self) -> Float[Tensor, "prompt layer component"]:
        """½ Σ_{c′} I(c, c′) of every component: the pairwise prediction of per-layer IG − AP (NaN where not measured)."""
        return _half_sum(self.interaction).masked_fill(self.ap.isnan(), float("nan"))

    def to_dict(self) -> dict[str, Tensor]:
        return {"direction": torch.tensor(0 if self.direction == "denoising" else 1), "ap": self.ap,
                "interaction": self.interaction, "gap": self.gap}

    @classmethod
    def from_dict(cls, value: dict[str, Tensor]) -> "LayerInteractions":
        return cls("denoising" if int(value["direction"]) == 0 else "noising", value["ap"], value["interaction"], value["gap"])


def head_interactions(model, batch, direction: str = "denoising", layers: Sequence[int] | None = None,
                      memory_mb: float = MEMORY_MB) -> LayerInteractions:
    """I(c, c′) for every pair of heads in each of ``layers`` (all by default): :func:`pair_interactions` per layer."""
    info = prepare(model, batch, None, direction, ("heads",), device=None, progress=False).info
    layers = range(info.n_layers) if layers is None else layers
    P, H = len(batch), info.n_heads
    ap = torch.full((P, info.n_layers, H), float("nan"))
    interaction = torch.full((P, info.n_layers, H, H), float("nan"))
    gap = None
    for layer in layers:
        pairs = pair_interactions(model, batch, layer, "heads", direction, memory_mb=memory_mb)
        ap[:, layer], interaction[:, layer], gap = pairs.ap, pairs.interaction, pairs.gap
    return LayerInteractions(direction, ap, interaction, gap)


def layers_holding(disagreement: Float[Tensor, "prompt layer component"], coverage: float) -> list[int]:
    """The fewest layers whose components hold at least ``coverage`` of Σ disagreement² (over prompts and components).

    Where a model's disagreements gather in a few layers, the pairs of those layers are
    all that the pairwise account needs: patching every pair of every layer costs one joint
    patch per pair from each layer up, most of it in layers with nothing to explain. Pass
    the disagreements of the *selection* prompts (the layers are then chosen without the
    prompts the account is measured on); ``coverage`` 1 returns every layer. Layers are
    taken by their share, largest first; returned in order.
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be a share in (0, 1], got {coverage}")
    n_layers = disagreement.shape[1]
    if coverage == 1:
        return list(range(n_layers))
    square = disagreement.double().nan_to_num(0.0).pow(2).sum((0, 2))
    if square.sum() == 0:
        return []
    order = square.argsort(descending=True)
    held = square[order].cumsum(0) / square.sum()
    n = int((held < coverage).sum()) + 1
    return sorted(order[:min(n, n_layers)].tolist())


@dataclass(frozen=True)
class ComponentPartners:
    """Chosen components (``layer``, ``index``) of one kind with the partners a screen found in their layers: each one's
    AP alone, IG moving alone, and the interactions with its partners, in the metric's units, per prompt.

    ``interaction[p, i, j]`` is I(c_i, partners[i][j]) by joint patches; ``half_sum()`` is the
    pairwise prediction ½ Σ I over the screened partners only (partners the screen left out
    count 0: for neurons, a layer's thousands of other pairs are not patched).
    """

    kind: str
    components: list[tuple[int, int]]
    partners: list[list[int]]
    ap: Float[Tensor, "prompt component"]
    alone: Float[Tensor, "prompt component"]
    interaction: Float[Tensor, "prompt component partner"]
    gap: Float[Tensor, "prompt"]

    def half_sum(self) -> Float[Tensor, "prompt component"]:
        return _half_sum(self.interaction)


def screened_partners(
    model,
    batch,
    kind: str,
    components: Sequence[tuple[int, int]],
    k: int,
    direction: str = "denoising",
    memory_mb: float = MEMORY_MB,
    screen_batch=None,
    **ig_options,
) -> ComponentPartners:
    """For each chosen (layer, index): its ``k`` likely partners by :func:`partner_screen`, the exact interactions with
    them by joint patches (:func:`pair_interactions`), its AP, and its IG moving alone (the identity's check).

    ``screen_batch``: the prompts the screen picks partners on (``batch`` by default); pass the
    selection prompts, so that the partners are not picked on the prompts they are measured on.

    The bounded account for a kind with too many components per layer for every pair
    (neurons): the pairwise prediction is ½ Σ I over the screened partners, whose recall
    against exhaustive pairs the tests measure. ``ig_options`` go to
    :func:`ig_ap.ig.integrated_gradients` (``n_steps``, ``tolerance``…), in the base run's context.
    """
    components = [(int(l), int(c)) for l, c in components]
    position = {component: i for i, component in enumerate(components)}
    by_layer: dict[int, list[int]] = {}
    for layer, c in components:
        by_layer.setdefault(layer, []).append(c)
    P = len(batch)
    ap = torch.full((P, len(components)), float("nan"))
    alone = torch.full((P, len(components)), float("nan"))
    interaction = torch.full((P, len(components), k), float("nan"))
    partners: list[list[int]] = [[] for _ in components]
    gap = None
    for layer, chosen in by_layer.items():
        found = partner_screen(model, batch if screen_batch is None else screen_batch, layer, kind, chosen, k, direction)
        pairs = pair_interactions(model, batch, layer, kind, direction, components=chosen, partners=found, memory_mb=memory_mb)
        where = {int(c): i for i, c in enumerate(pairs.components.tolist())}
        for c in chosen:
            i = position[layer, c]
            partners[i] = found[c]
            ap[:, i] = pairs.ap[:, where[c]]
            interaction[:, i, :len(found[c])] = torch.stack([pairs.interaction[:, where[c], where[q]] for q in found[c]], 1)
            alone[:, i] = coalition_curve(model, batch, layer, kind, c, [], [0], direction, memory_mb=memory_mb, **ig_options)[:, 0]
        gap = pairs.gap
    return ComponentPartners(kind, components, partners, ap, alone, interaction, gap)


# --------------------------------------------------------------------------- the account


@dataclass(frozen=True)
class Account:
    """The disagreement of IG and AP over components, and the part of it the pairwise interactions predict.

    Per prompt: ``disagreement`` Σ_c (IG_c − AP_c)², ``residual`` Σ_c (IG_c − AP_c − ½ Σ I)²,
    both over the components accounted. :meth:`explained` is 1 − Σ residual / Σ
    disagreement over prompts (a ratio of means, with a jackknife interval over prompts):
    the share of the squared disagreement that pairwise interactions inside layers explain.
    The same account serves any estimate of AP and any predicted part of its error: chapter 6
    also splits AtP − AP by the attention-pattern term AtP − AtP (QK fix).
    """

    disagreement: Float[Tensor, "prompt"]
    residual: Float[Tensor, "prompt"]

    def budget(self) -> dict[str, float]:
        """The mean squared disagreement per prompt, split into the part the prediction explains and the rest (the rest
        is the mean residual; the explained part, their difference, is negative where the prediction overshoots)."""
        disagreement, residual = self.disagreement.double().mean().item(), self.residual.double().mean().item()
        return {"explained": disagreement - residual, "rest": residual}

    def explained(self) -> Interval:
        """The share explained with its jackknife interval, cut at 1 (a share of a sum of squares explained cannot exceed
        it; cutting cannot lower the coverage)."""
        values = torch.stack([self.disagreement, self.residual], -1).double()
        interval = jackknife_interval(values, lambda v: 1 - v[..., 1].mean(-1) / v[..., 0].mean(-1))
        return interval.within(highest=1.0)


def account(ig: Float[Tensor, "prompt component"], ap: Float[Tensor, "prompt component"],
            predicted: Float[Tensor, "prompt component"]) -> Account:
    """The :class:`Account` of IG against AP, with ``predicted`` the pairwise prediction of IG − AP (``half_sum``)."""
    difference = (ig - ap).double()
    return Account((difference ** 2).sum(-1), ((difference - predicted.double()) ** 2).sum(-1))


LABELS = ("AND-like pairs", "OR-like pairs", "cross-layer", "saturating", "unexplained", "below the tolerance")
"""How :func:`label_disagreements` names a component's disagreement (rule: its docstring and the methods page)."""


def label_disagreements(
    difference: Float[Tensor, "..."],
    predicted: Float[Tensor, "..."],
    explained: float = 0.5,
    *,
    across: Float[Tensor, "..."] | None = None,
    atp: Float[Tensor, "..."] | None = None,
    tolerance: float = 0.0,
) -> list[str]:
    """Label each component's disagreement with AP by what explains it: one rule, stated once (the methods page too).

    Per component (means over prompts, shares of the gap): d = per-layer IG − AP
    (``difference``), q = ½ Σ I over its layer's partners (``predicted``), and where given
    e = IG along the whole network − AP (``across``) and a = AtP − AP (``atp``). In order:

    1. **below the tolerance**: |d|, and |e| and |a| where given, all below ``tolerance``
       (IG's completeness tolerance: nothing there to explain).
    2. **AND-like pairs** / **OR-like pairs**: |d| ≥ ``tolerance`` and q has d's sign and lies
       within a factor 1 / ``explained`` of it (between half and twice its size by default):
       the disagreement is the pairs', superadditive (q > 0: each needs the other) or
       subadditive (q < 0: either does what both do). I is a second difference of the metric,
       the same in both directions, so an AND gate's inputs are AND-like whether they are
       turned on in the off run or off in the on run.
    3. **cross-layer**: |e − d| ≥ max(``tolerance``, |d|): letting the other layers move with
       the component (IG along the network) changes IG's disagreement with AP by at least the
       per-layer disagreement itself; per-layer IG, like AP, holds the other layers at the
       base run, so what separates them is interaction across layers (chapter 4's AND across
       layers: per-layer IG equals AP there, IG of both layers does not).
    4. **saturating**: |a| ≥ max(``tolerance``, 2 |d|): AtP, the gradient at the base run
       times the change, is at least twice as far from AP as IG, which integrates along the
       path: the component's own effect bends between the runs (a saturated sigmoid or
       softmax; for heads, what AtP*'s QK fix recomputes is part of it).
    5. **unexplained**: none of these (interaction of three or more components, or
       quadrature error).

    Where both 3 and 4 hold, the larger of |e − d| and |a| names the disagreement.
    """
    labels = []
    for below, pairs, across_size, saturation in _conditions(difference, predicted, explained, across, atp, tolerance):
        if below:
            labels.append(LABELS[5])
        elif pairs:
            labels.append(pairs)
        elif across_size == saturation == 0.0:
            labels.append(LABELS[4])
        else:
            labels.append(LABELS[2] if across_size >= saturation else LABELS[3])
    return labels


def conditions_met(
    difference: Float[Tensor, "..."],
    predicted: Float[Tensor, "..."],
    explained: float = 0.5,
    *,
    across: Float[Tensor, "..."] | None = None,
    atp: Float[Tensor, "..."] | None = None,
    tolerance: float = 0.0,
) -> list[tuple[str, ...]]:
    """Every condition of :func:`label_disagreements`'s rule (2–4: pairs, cross-layer, saturating) that each component
    meets, in the rule's order, where the label names only the first (empty below the tolerance or where none holds).

    A label says what explains a disagreement first; a component can also meet a later
    condition (its AtP far from AP, say, while its pairs already explain IG − AP), which the
    label alone hides.
    """
    met = []
    for below, pairs, across_size, saturation in _conditions(difference, predicted, explained, across, atp, tolerance):
        met.append(() if below else tuple(x for x, holds in ((pairs, bool(pairs)), (LABELS[2], across_size > 0),
                                                             (LABELS[3], saturation > 0)) if holds))
    return met


def _conditions(difference, predicted, explained, across, atp, tolerance) -> list[tuple[bool, str, float, float]]:
    """Per component: (below the tolerance, the pairs' label or "", |e − d| where cross-layer holds else 0, |a| where
    saturating holds else 0): the conditions of :func:`label_disagreements`'s rule."""
    def values(x):
        return None if x is None else torch.as_tensor(x, dtype=torch.float64).flatten().tolist()

    d_all, q_all, e_all, a_all = values(difference), values(predicted), values(across), values(atp)
    out = []
    for i, (d, q) in enumerate(zip(d_all, q_all)):
        e = None if e_all is None else e_all[i]
        a = None if a_all is None else a_all[i]
        below = all(x is None or abs(x) < tolerance or (tolerance == 0 and x == 0) for x in (d, e, a))
        pairs = (LABELS[0] if q > 0 else LABELS[1]) if d != 0 and abs(d) >= tolerance and explained <= q / d <= 1 / explained else ""
        across_size = abs(e - d) if e is not None and abs(e - d) >= max(tolerance, abs(d)) and e != d else 0.0
        saturation = abs(a) if a is not None and abs(a) >= max(tolerance, 2 * abs(d)) and a != 0 else 0.0
        out.append((below, pairs, across_size, saturation))
    return out


PARTS = ("own path", "pairs", "higher order")
"""The parts of a disagreement IG − AP (:func:`disagreement_parts`), in order."""


def disagreement_parts(
    ig: Float[Tensor, "..."], ap: Float[Tensor, "..."], half_sum: Float[Tensor, "..."], alone: Float[Tensor, "..."],
) -> dict[str, Float[Tensor, "..."]]:
    """IG_c − AP_c split into three signed parts that add up to it exactly, per component.

    - **own path**: IG of c moving alone − AP_c (``alone`` − ``ap``): zero but for quadrature
      error on c's own path (the identity of the methods page);
    - **pairs**: ½ Σ I(c, c′) over c's partners (``half_sum``): the second-order term;
    - **higher order**: IG_c − IG alone − ½ Σ I: interaction of three or more components, and
      the terms of pairs beyond second order, measured as what the other two leave.
    """
    return {PARTS[0]: alone - ap, PARTS[1]: half_sum, PARTS[2]: ig - alone - half_sum}


def coalition_curve(
    model,
    batch,
    layer: int,
    kind: str,
    component: int,
    partners: Sequence[int],
    sizes: Sequence[int],
    direction: str = "denoising",
    **ig_options,
) -> Float[Tensor, "prompt size"]:
    """IG of ``component`` with itself and its first m ``partners`` moving (the rest of its layer at the baseline), per m
    in ``sizes``, in the metric's units.

    The higher-order part of a disagreement, measured by growing the coalition: at m = 0 the
    value is the component's AP (up to quadrature error), at m = every other component of the
    layer it is its per-layer IG, and between them each partner that joins adds its pairwise
    term ½ I(c, c′) and whatever it does with the partners already moving. Against
    ½ Σ I over the same partners, the curve shows where the part beyond pairs arises.
    ``ig_options`` go to :func:`ig_ap.ig.integrated_gradients` (``n_steps``, ``tolerance``,
    ``max_steps``, ``memory_mb``…); IG runs in the base run's context, as AP's.
    """
    from ig_ap.ig import integrated_gradients

    out = []
    for m in sizes:
        moving = [int(component), *(int(p) for p in list(partners)[:m])]
        result = integrated_gradients(model, batch, direction=direction, components=(kind,), context="baseline",
                                      layers=[layer], only={kind: {layer: moving}}, **{"progress": False, **ig_options})
        out.append(getattr(result, kind)[:, layer, int(component)].float().cpu())
    return torch.stack(out, 1)
