"""Ablations that run the model: faithfulness of component sets, and joint versus single patches.

Where :mod:`ig_ap.analysis` only reads score tensors, every function here patches
components of a model on a batch and measures the task metric, many sets in one batched
pass (:mod:`ig_ap.replay`):

- :func:`patch_sets`: the normalised metric after patching each set of components together.
- :func:`faithfulness`, :func:`faithfulness_curve`: the share of the clean−corrupted gap
  kept when everything outside a set of components is ablated; :func:`cross_fitted_faithfulness`
  with the sets chosen on other prompts than those they are scored on.
- :func:`interaction`: candidates patched together versus one at a time.
- :func:`disagreement_ablation`: what one method ranks high and the other does not, ablated,
  against random components of the same count (the original project's test).
- :func:`circuit_faithfulness`, :func:`cross_fitted_circuits`: MIB's faithfulness curve of the top
  components at its circuit sizes, with CPR and CMD (:class:`CircuitCurve`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ig_ap.analysis import Interval, Patched, jackknife_interval, ratio_of_means, top_components
from ig_ap.attribution import base_and_source, hook_name, prepare
from ig_ap.replay import Trace, run_from, trace


NORMALIZE = ("prompt", "batch", "none")
"""How :func:`patch_sets` and the functions on it return the metric: per prompt, as shares of the batch's mean gap (the
default: the ratio of means, the book's one rule), or raw."""


def patch_sets(
    model,
    batch,
    sets: Sequence[dict[str, Bool[Tensor, "layer component"]]],
    direction: str = "noising",
    value: str = "other",
    metric=None,
    device: str | None = None,
    normalize: str = "batch",
    memory_mb: float | None = None,
) -> Float[Tensor, "set prompt"] | Patched:
    """The normalised metric after patching each set of components together, as many sets per pass as fit ``memory_mb``.

    Each element of ``sets`` maps a component kind (``"heads"``, ``"neurons"``) to a
    ``[layer, component]`` mask of the components patched (kinds not named are left
    alone). ``direction="noising"``: the base run is the clean one and patched components
    take their corrupted value (``value="other"``) or their mean over the batch's clean
    prompts (``value="mean"``); ``"denoising"``: the base run is the corrupted one and they
    take their clean value. Returns (metric − metric(corrupted)) / (metric(clean) −
    metric(corrupted)) per set and prompt: 1 is the clean run's metric, 0 the corrupted's.
    ``normalize="batch"`` divides the batch means instead (one column, ``[set, 1]``): the
    share of the batch's mean gap, which stays finite where a prompt's own gap is near 0.
    ``normalize="none"``: the metrics themselves, as a :class:`~ig_ap.analysis.Patched`
    ``[set, prompt]`` with the clean and corrupted runs' metrics, whose ``share()`` and
    ``interval()`` are the book's ratios of means with their intervals over prompts.
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(map(repr, NORMALIZE))}, got {normalize!r}")
    if value not in ("other", "mean"):
        raise ValueError(f"value must be 'other' or 'mean', got {value!r}")
    if not sets:
        raise ValueError("give at least one set of components")
    kinds = sorted({k for s in sets for k in s})
    setup = prepare(model, batch, metric, direction, kinds, device=device, memory_mb=memory_mb)
    batch, names = setup.batch, [hook_name(k, l) for k in kinds for l in range(setup.info.n_layers)]
    with torch.no_grad():
        clean = trace(model, batch.clean, batch.last, names)
        corrupted = trace(model, batch.corrupted, batch.last, names)
        base, other = base_and_source(direction, clean, corrupted)
        m_clean = setup.metric(clean.final, batch)
        m_corrupted = setup.metric(corrupted.final, batch)
        # Each distinct set runs once (callers such as circuit_curves pass many equal sets: every method's empty and full
        # circuit, rankings that agree on their top components); a set that patches nothing is the base run itself.
        unique, index = _distinct_sets(sets, kinds)
        todo = [s for s in unique if s is not None]
        per_pass = setup.copies_per_pass(model, batch.clean.shape[1], setup.info.n_layers, False)
        ran = [_run_sets(model, setup, base, other if value == "other" else None, clean, todo[start:start + per_pass])
               for start in range(0, len(todo), per_pass)]
        ran = iter(torch.cat(ran) if ran else [])
        m_base = base_and_source(direction, m_clean, m_corrupted)[0]
        values = torch.stack([m_base if s is None else next(ran) for s in unique])[index]
    if normalize == "none":
        return Patched(values.cpu(), m_clean.cpu(), m_corrupted.cpu())
    if normalize == "batch":
        values, m_clean, m_corrupted = values.mean(1, keepdim=True), m_clean.mean(), m_corrupted.mean()
    return ((values - m_corrupted) / (m_clean - m_corrupted)).cpu()


def _distinct_sets(sets, kinds) -> tuple[list[dict | None], Tensor]:
    """The distinct sets of ``sets`` (None for a set that patches nothing) and, per set, the index of its distinct set."""
    unique, where, index = [], {}, []
    for s in sets:
        masks = {k: s[k].to(torch.bool).cpu() for k in kinds if k in s and bool(s[k].any())}
        key = tuple((k, masks[k].shape, masks[k].numpy().tobytes()) for k in sorted(masks))
        if key not in where:
            where[key] = len(unique)
            unique.append(masks or None)
        index.append(where[key])
    return unique, torch.tensor(index)


def _run_sets(model, setup, base: Trace, other: Trace | None, clean: Trace, sets) -> Float[Tensor, "set prompt"]:
    """The metric of the base run with each of ``sets`` patched, all in one pass (one copy of the batch per set).

    Patched components take their value in ``other``, or (``other=None``) their mean over the clean prompts.
    """
    C, P = len(sets), len(setup.batch)
    hooks = []
    for kind in sorted({k for s in sets for k in s}):
        size = setup.info.n_heads if kind == "heads" else setup.info.d_mlp
        for layer in range(setup.info.n_layers):
            name = hook_name(kind, layer)
            source = other.cache[name] if other is not None else clean.cache[name].mean(0, keepdim=True).expand_as(clean.cache[name])
            masks = torch.stack([
                s[kind][layer].to(torch.bool) if kind in s else torch.zeros(size, dtype=torch.bool) for s in sets
            ]).to(source.device)  # [set, component]: True = patched
            hooks.append((name, functools.partial(_patch_masked, source=source, masks=masks, n_prompts=P)))
    final = run_from(model, base, 0, C, hooks, last=setup.batch.last)
    return setup.metric(final.view(C, P, -1), setup.batch)


def _patch_masked(activation, hook, source, masks, n_prompts):
    """Rows of set ``j`` take ``source`` for the components where ``masks[j]`` is True."""
    patch = masks.repeat_interleave(n_prompts, dim=0)  # [row, component]
    patch = patch[:, None, :, None] if activation.dim() == 4 else patch[:, None, :]
    source = source.repeat(activation.shape[0] // source.shape[0], *([1] * (source.dim() - 1)))
    return torch.where(patch, source, activation)


def faithfulness(
    model,
    batch,
    keep: Sequence[dict[str, Bool[Tensor, "layer component"]]],
    ablation: str = "corrupted",
    metric=None,
    device: str | None = None,
    normalize: str = "batch",
    memory_mb: float | None = None,
) -> Float[Tensor, "set prompt"] | Patched:
    """The normalised metric kept when every component *outside* each set is ablated in the clean run.

    ``keep`` holds, per set, ``{kind: [layer, component] mask of the components kept}``;
    kinds not named are left intact. Ablated components take their corrupted value
    (``ablation="corrupted"``) or their mean over the batch's clean prompts (``"mean"``).
    1 when nothing is ablated, 0 when every component is ablated to its corrupted value.
    To ablate only a set, pass its complement. ``normalize``: see :func:`patch_sets`.
    """
    if ablation not in ("corrupted", "mean"):
        raise ValueError(f"ablation must be 'corrupted' or 'mean', got {ablation!r}")
    if not keep:
        raise ValueError("keep must hold at least one set")
    ablated = [{kind: ~mask.to(torch.bool) for kind, mask in s.items()} for s in keep]
    return patch_sets(model, batch, ablated, "noising", "other" if ablation == "corrupted" else "mean", metric, device, normalize,
                      memory_mb)


def faithfulness_curve(
    model,
    batch,
    scores: Float[Tensor, "prompt layer component"],
    kind: str,
    sizes: Sequence[int],
    ablation: str = "corrupted",
    normalize: str = "batch",
    memory_mb: float | None = None,
) -> Float[Tensor, "size prompt"] | Patched:
    """Faithfulness of the top-``k`` components of ``kind`` by mean *signed* score, for each ``k`` in ``sizes``.

    Signed: the components kept first are those that move the metric most towards the
    clean run's. Ranking by |score| would keep a component that works against the answer
    as early as one that carries it, and the curve would dip for it (chapter 2's IOI curve
    at k = 10 did).
    """
    sets = [{kind: top_components(scores, k=k, signed=True)} for k in sizes]
    return faithfulness(model, batch, sets, ablation=ablation, normalize=normalize, memory_mb=memory_mb)


def _cross_fitted_halves(split) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
    """(prompts chosen on, prompts scored on), both ways: chosen on the test half and scored on the selection half, then
    the other way round; the scored prompts come in the order ``split.select`` then ``split.test``."""
    halves = [split.select.tolist(), split.test.tolist()]
    if not all(halves):
        raise ValueError("cross-fitting needs prompts on both sides of the split")
    return (halves[1], halves[0]), (halves[0], halves[1])


def cross_fitted_faithfulness(
    model,
    batch,
    rankings: Mapping[Hashable, Float[Tensor, "prompt layer component"]],
    kind: str,
    sizes: Sequence[int],
    split,
    ablation: str = "corrupted",
    memory_mb: float | None = None,
) -> dict[Hashable, Patched]:
    """:func:`faithfulness_curve` of several rankings, with the top components chosen on other prompts than those they
    are scored on, both ways.

    A set picked because it scores highest on some prompts keeps more of the gap on those
    prompts than on others (its selection fits their noise), so an in-sample curve flatters
    every method. ``split`` (:func:`ig_ap.analysis.selection_split`) halves the prompts: the
    top ``k`` of each ranking by mean signed score on one half are kept (everything else of
    ``kind`` ablated) on the other half, and the other way round. The scores and ``batch``
    hold every prompt; each result is a :class:`~ig_ap.analysis.Patched` ``[size, prompt]``
    (metrics, with the clean and corrupted runs') over ``split.select`` then ``split.test``,
    whose ``interval(i)`` and ``difference(other, i)`` are the faithfulness at ``sizes[i]``
    and two rankings' paired difference. All rankings' sets run in the same passes.
    """
    if not rankings:
        raise ValueError("give at least one ranking (name: scores)")
    parts = []
    for chosen, scored in _cross_fitted_halves(split):
        sets = [{kind: top_components(scores[chosen], k=k, signed=True)} for scores in rankings.values() for k in sizes]
        parts.append(faithfulness(model, batch.select(scored), sets, ablation=ablation, normalize="none", memory_mb=memory_mb))
    out = {}
    for i, name in enumerate(rankings):
        rows = slice(i * len(sizes), (i + 1) * len(sizes))
        out[name] = Patched(torch.cat([p.metric[rows] for p in parts], -1), torch.cat([p.clean for p in parts]),
                            torch.cat([p.corrupted for p in parts]))
    return out


@dataclass(frozen=True)
class DisagreementAblation:
    """The components one method ranks high and the other does not, ablated, against random components of the same count.

    ``sets`` maps each side ("IG only", "AP only") to its components (flat indices into
    ``[layer, component]``, in order); ``together``: the metric with the whole set ablated
    (:class:`~ig_ap.analysis.Patched` ``[prompt]``); ``alone``: each member ablated by itself
    (``[member, prompt]``); ``random``: ``n_random`` sets of as many components drawn from
    those neither method ranks high (``[draw, prompt]``). All on the held-out prompts, shares
    of their gap: 1 is the clean run's metric (nothing lost), 0 the corrupted's.
    """

    sets: dict[str, list[int]]
    together: dict[str, Patched]
    alone: dict[str, Patched]
    random: dict[str, Patched]

    def random_mean(self, side: str) -> Patched:
        """The random sets' metric averaged over the draws, per prompt (the baseline a set is compared with)."""
        r = self.random[side]
        return Patched(r.metric.mean(0), r.clean, r.corrupted)

    def versus_random(self, side: str, n_resamples: int = 1000, seed: int = 0) -> Interval:
        """How much more of the gap ablating the set keeps than ablating random components of the same count, on the
        same prompts (negative: the set matters more than random components), with its interval."""
        return self.together[side].difference(self.random_mean(side), n_resamples=n_resamples, seed=seed)


def disagreement_ablation(
    model,
    held_out,
    a: Float[Tensor, "prompt layer component"],
    b: Float[Tensor, "prompt layer component"],
    k: int,
    names: tuple[str, str] = ("IG", "AP"),
    kind: str = "heads",
    n_random: int = 20,
    seed: int = 0,
    memory_mb: float | None = None,
) -> DisagreementAblation:
    """The original project's test of "important disagreements": ablate what one method ranks high and the other does
    not, one at a time and all together, against random components of the same count.

    The top ``k`` components by mean |score| of ``a`` and of ``b`` are found on the
    selection prompts (``a`` and ``b`` hold those prompts only); "``names[0]`` only" are
    the components in ``a``'s top ``k`` and not in ``b``'s, and the other way round. Each
    set, each of its members, and ``n_random`` seeded draws of as many components from
    those in neither top ``k`` are ablated (noising: the clean run with them at their
    corrupted value) on ``held_out``, a batch of other prompts, all in the same passes
    (:func:`patch_sets`). A side with no component (the two top sets agree) is left out.
    """
    if a.shape != b.shape:
        raise ValueError(f"the two methods' scores differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    shape = a.shape[1:]
    top_a = top_components(a, k=k).flatten().nonzero().flatten().tolist()
    top_b = top_components(b, k=k).flatten().nonzero().flatten().tolist()
    pool = torch.tensor(sorted(set(range(shape.numel())) - set(top_a) - set(top_b)), dtype=torch.long)
    sides = {f"{names[0]} only": sorted(set(top_a) - set(top_b)), f"{names[1]} only": sorted(set(top_b) - set(top_a))}
    sides = {side: members for side, members in sides.items() if members}
    generator = torch.Generator().manual_seed(seed)

    def mask(indices) -> dict[str, Tensor]:
        m = torch.zeros(shape.numel(), dtype=torch.bool)
        m[torch.as_tensor(indices, dtype=torch.long)] = True
        return {kind: m.view(shape)}

    sets, layout = [], {}
    for side, members in sides.items():
        if len(pool) < len(members):
            raise ValueError(f"{len(pool)} components outside both top sets: too few to draw {len(members)} at random")
        draws = [pool[torch.randperm(len(pool), generator=generator)[:len(members)]] for _ in range(n_random)]
        start = len(sets)
        sets += [mask(members)] + [mask([m]) for m in members] + [mask(d) for d in draws]
        layout[side] = (start, len(members))
    if not sets:
        return DisagreementAblation({}, {}, {}, {})
    patched = patch_sets(model, held_out, sets, direction="noising", normalize="none", memory_mb=memory_mb)

    def rows(index) -> Patched:
        return Patched(patched.metric[index], patched.clean, patched.corrupted)

    together = {side: rows(start) for side, (start, _) in layout.items()}
    alone = {side: rows(slice(start + 1, start + 1 + n)) for side, (start, n) in layout.items()}
    random = {side: rows(slice(start + 1 + n, start + 1 + n + n_random)) for side, (start, n) in layout.items()}
    return DisagreementAblation(sides, together, alone, random)


@dataclass(frozen=True)
class Interaction:
    """Effect of patching candidates together versus the sum of patching each alone.

    In normalised units per prompt, or (made with ``normalize="none"``) in the metric's
    units with each prompt's ``gap``, for :meth:`intervals`.
    """

    joint: Float[Tensor, "prompt"]
    sum_of_singles: Float[Tensor, "prompt"]
    gap: Float[Tensor, "prompt"] | None = None

    @property
    def excess(self) -> Float[Tensor, "prompt"]:
        """|joint| − |sum of singles|: > 0 is the signature of AND/OR (super-additive) behaviour."""
        return self.joint.abs() - self.sum_of_singles.abs()

    def intervals(self, n_resamples: int = 1000, seed: int = 0) -> dict[str, Interval]:
        """The joint effect, the singles' sum and |joint| − |sum|, each as a share of the gap by the ratio of means
        (mean effect over mean gap), with 95% intervals over prompts (the excess by the jackknife-t). Needs ``gap`` (``normalize="none"``)."""
        if self.gap is None:
            raise ValueError("intervals need the gap: make the Interaction with normalize='none'")
        values = torch.stack([self.joint, self.sum_of_singles, self.gap], 1)
        excess = lambda v: (v[..., 0].mean(-1).abs() - v[..., 1].mean(-1).abs()) / v[..., 2].mean(-1)  # noqa: E731
        return {"joint patch": ratio_of_means(self.joint, self.gap, n_resamples, seed),
                "sum of single patches": ratio_of_means(self.sum_of_singles, self.gap, n_resamples, seed),
                "|joint| − |sum|": jackknife_interval(values, excess)}


def interaction(
    model, batch, candidates: Bool[Tensor, "layer component"], kind: str, direction: str, normalize: str = "batch",
    memory_mb: float | None = None,
) -> Interaction:
    """Patch the candidate components together and one at a time; compare the effects.

    OR candidates are checked by noising (each alone is redundant in the clean run, together
    they are not); AND candidates by denoising (each alone does little in the corrupted run,
    together they restore the behaviour). Effects are signed changes of the normalised
    metric (metric(patched) − metric(base run)), per prompt or (``normalize="batch"``, one
    column) as a share of the batch's mean gap, or (``"none"``) in the metric's units with
    each prompt's gap, for :meth:`Interaction.intervals`; the single effects are summed with
    their signs, so a set holding heads that work against the answer is not inflated.
    """
    index = candidates.nonzero().tolist()
    if not index:
        raise ValueError("no candidates to check")
    singles = []
    for layer, component in index:
        one = torch.zeros_like(candidates, dtype=torch.bool)
        one[layer, component] = True
        singles.append({kind: one})
    values = patch_sets(model, batch, [{kind: candidates.to(torch.bool)}] + singles, direction, normalize=normalize,
                        memory_mb=memory_mb)
    if normalize == "none":  # changes of the metric from the base run, in its units
        effects = values.metric - base_and_source(direction, values.clean, values.corrupted)[0]
        return Interaction(joint=effects[0], sum_of_singles=effects[1:].sum(0), gap=values.gap)
    effects = values - base_and_source(direction, 1.0, 0.0)[0]
    return Interaction(joint=effects[0], sum_of_singles=effects[1:].sum(0))


# --------------------------------------------------------------------------- MIB's circuit faithfulness: CPR and CMD

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The circuit sizes of MIB's circuit track (Mueller et al. 2025), as fractions of the components scored."""


@dataclass(frozen=True)
class CircuitCurve:
    """The metric with only a circuit kept, at each of MIB's circuit sizes, per prompt; its faithfulness and areas.

    ``metric[i]`` is m(C_i), the run with the top ``sizes[i]`` components kept and every
    other component of the kind patched from the corrupted run; ``empty`` is m(∅) (every
    component patched), ``full`` m(M) (nothing patched: the clean run). Faithfulness is
    MIB's f = (m(C) − m(∅)) / (m(M) − m(∅)), as a ratio of means over prompts (MIB averages
    the metric over the batch before dividing, as the book does). The areas are taken by
    the trapezoid rule over the fraction of components kept, ``sizes / total``, as MIB's
    evaluation does on a linear scale: :meth:`cpr`, the area under f (higher is better),
    and :meth:`cmd`, the area under |1 − f| (0 is best).
    """

    sizes: tuple[int, ...]
    total: int
    metric: Float[Tensor, "size prompt"]
    empty: Float[Tensor, "prompt"]
    full: Float[Tensor, "prompt"]

    @property
    def fractions(self) -> Float[Tensor, "size"]:
        return torch.tensor(self.sizes, dtype=torch.float64) / self.total

    def _stacked(self) -> Float[Tensor, "prompt column"]:
        """Per prompt: m(C_i) − m(∅) for every size, then m(M) − m(∅)."""
        return torch.cat([(self.metric - self.empty).T, (self.full - self.empty)[:, None]], 1).double()

    def _faithfulness_of(self, values: Tensor) -> Tensor:  # [..., prompt, column] -> [..., size]
        means = values.mean(-2)
        return means[..., :-1] / means[..., -1:]

    def _area(self, y: Tensor) -> Tensor:  # trapezoid over the fractions, [..., size] -> [...]
        x = self.fractions.to(y.dtype)
        return ((x[1:] - x[:-1]) * (y[..., 1:] + y[..., :-1]) / 2).sum(-1)

    def faithfulness(self) -> Float[Tensor, "size"]:
        """f at each size, as a ratio of means over prompts."""
        return self._faithfulness_of(self._stacked())

    def interval(self, i: int) -> Interval:
        """f at size ``i`` with its interval over prompts (:func:`~ig_ap.analysis.ratio_of_means`)."""
        return ratio_of_means(self.metric[i] - self.empty, self.full - self.empty)

    def cpr(self) -> Interval:
        """The area under f over the fraction of components kept, with its interval over prompts. The area is linear in
        the metrics, so it is itself a ratio of means (:func:`~ig_ap.analysis.ratio_of_means`)."""
        stacked = self._stacked()
        return ratio_of_means(self._area(stacked[:, :-1]), stacked[:, -1])

    def cmd(self) -> Interval:
        """The area under |1 − f| over the fraction of components kept, with its jackknife-t interval over prompts.

        An area of |1 − f| is never below 0, so the interval is cut at 0 (the t interval is
        symmetric and would reach below it at a few prompts); this cannot lower its coverage.
        """
        interval = jackknife_interval(self._stacked(), lambda v: self._area((1 - self._faithfulness_of(v)).abs()))
        return interval.within(lowest=0.0)

    def difference(self, other: "CircuitCurve", measure: str) -> Interval:
        """``measure`` (``"cpr"`` or ``"cmd"``) of this curve minus ``other``'s, paired over the same prompts, with its
        jackknife-t interval: two methods' circuits scored on the same prompts are compared this way."""
        if measure not in ("cpr", "cmd"):
            raise ValueError(f"measure must be 'cpr' or 'cmd', got {measure!r}")
        if self.sizes != other.sizes or self.metric.shape != other.metric.shape:
            raise ValueError("difference compares two curves at the same sizes on the same prompts")
        both = torch.stack([self._stacked(), other._stacked()], -1)  # [prompt, column, curve]

        def area(v: Tensor) -> Tensor:  # v: [..., prompt, column]
            f = self._faithfulness_of(v)
            return self._area(f if measure == "cpr" else (1 - f).abs())

        return jackknife_interval(both, lambda v: area(v[..., 0]) - area(v[..., 1]))


def circuit_sizes(total: int, fractions: Sequence[float] = MIB_FRACTIONS) -> tuple[int, ...]:
    """The number of components kept at each fraction: ``int(fraction × total)``, as MIB's evaluation counts them."""
    if not fractions or any(not 0 < f <= 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError(f"fractions must increase within (0, 1], got {fractions!r}")
    return tuple(int(f * total) for f in fractions)


def circuit_curves(
    model,
    batch,
    rankings: Mapping[Hashable, tuple[Float[Tensor, "prompt layer component"], bool]],
    kind: str,
    fractions: Sequence[float] = MIB_FRACTIONS,
    memory_mb: float | None = None,
) -> dict[Hashable, CircuitCurve]:
    """MIB's faithfulness curves of node-level circuits, for several rankings of the same components at once.

    The idea: a circuit at each size is the top ``int(fraction × N)`` of the ``N`` components
    of ``kind`` with a score (never-computed, NaN, components are never kept and not counted),
    kept while every other component of ``kind`` is patched from the corrupted run. Each
    ranking, ``name: (scores, signed)``, orders the components by mean signed score
    (``signed``: those that push the metric towards the clean run's first) or by mean |score|
    (MIB's evaluation code's default). All rankings share the prompts, the empty circuit and the
    full model, so their circuits are patched together, as many per pass as fit ``memory_mb``,
    and the two runs are traced once. Circuits are chosen from the scores and scored on
    ``batch``: pass scores from other prompts than ``batch`` to keep selection and test apart
    (:func:`cross_fitted_curves`). These are node-level circuits (heads or neurons), not MIB's
    edges: the numbers are not comparable with its leaderboard.
    """
    if not rankings:
        raise ValueError("give at least one ranking (name: (scores, signed))")
    sets, spans = [], {}
    for name, (scores, signed) in rankings.items():
        valid = ~scores.mean(0).isnan()
        total = int(valid.sum())
        if total == 0:
            raise ValueError(f"no {kind} has a score in {name!r}: nothing to build a circuit from")
        sizes = circuit_sizes(total, fractions)
        spans[name] = (len(sets), sizes, total)
        sets += [{kind: top_components(scores, k=k, signed=signed)} for k in sizes]
    nothing = {kind: torch.zeros_like(next(iter(rankings.values()))[0].mean(0), dtype=torch.bool)}
    patched = faithfulness(model, batch, sets + [nothing], ablation="corrupted", normalize="none", memory_mb=memory_mb)
    empty = patched.metric[-1]
    return {name: CircuitCurve(sizes, total, patched.metric[first:first + len(sizes)], empty, patched.clean)
            for name, (first, sizes, total) in spans.items()}


def cross_fitted_curves(
    model,
    batch,
    rankings: Mapping[Hashable, tuple[Float[Tensor, "prompt layer component"], bool]],
    kind: str,
    split,
    fractions: Sequence[float] = MIB_FRACTIONS,
    memory_mb: float | None = None,
) -> dict[Hashable, CircuitCurve]:
    """:func:`circuit_curves` with the circuits chosen on other prompts than those they are scored on, both ways.

    ``split`` (:func:`ig_ap.analysis.selection_split`) halves the prompts: the circuits chosen
    from the scores of one half are scored on the other, and the other way round, so every
    prompt in a curve is scored by circuits chosen without it (cross-fitting). The scores
    and ``batch`` hold every prompt; each curve's prompts are ``split.select`` then
    ``split.test``. Each half needs at least one prompt.
    """
    scored_on = [circuit_curves(model, batch.select(scored), {name: (scores[chosen], signed) for name, (scores, signed) in rankings.items()},
                                kind, fractions, memory_mb)
                 for chosen, scored in _cross_fitted_halves(split)]
    out = {}
    for name in rankings:
        first, second = scored_on[0][name], scored_on[1][name]
        if first.sizes != second.sizes:  # both halves score the same components, so this cannot happen with one model
            raise ValueError("the two halves' circuits have different sizes: the scores of the halves cover different components")
        out[name] = CircuitCurve(first.sizes, first.total, torch.cat([first.metric, second.metric], 1),
                                 torch.cat([first.empty, second.empty]), torch.cat([first.full, second.full]))
    return out


def circuit_faithfulness(
    model,
    batch,
    scores: Float[Tensor, "prompt layer component"],
    kind: str,
    fractions: Sequence[float] = MIB_FRACTIONS,
    signed: bool = True,
    memory_mb: float | None = None,
) -> CircuitCurve:
    """MIB's faithfulness curve of the circuits of one ranking: :func:`circuit_curves` of ``{"": (scores, signed)}``."""
    return circuit_curves(model, batch, {"": (scores, signed)}, kind, fractions, memory_mb)[""]


def cross_fitted_circuits(
    model,
    batch,
    scores: Float[Tensor, "prompt layer component"],
    kind: str,
    split,
    fractions: Sequence[float] = MIB_FRACTIONS,
    signed: bool = True,
    memory_mb: float | None = None,
) -> CircuitCurve:
    """The cross-fitted curve of one ranking: :func:`cross_fitted_curves` of ``{"": (scores, signed)}``."""
    return cross_fitted_curves(model, batch, {"": (scores, signed)}, kind, split, fractions, memory_mb)[""]
