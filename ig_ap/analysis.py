"""Statistics that compare attribution methods: correlation, top-component overlap, asymmetry.

Every function takes score tensors of one component kind, ``[prompt, layer, component]``
(heads or neurons), as :class:`~ig_ap.attribution.Attribution` holds them. Components
that a method did not compute (NaN, e.g. a neuron subset) are left out of every statistic.

- :func:`per_prompt_correlation`: Pearson or Spearman r between two methods, prompt by
  prompt; :func:`correlation_summary` gives the mean ± sd over prompts of r (signed) and
  of |r| (the published figure is the mean of per-prompt |r|).
- :func:`top_components`, :func:`jaccard`, :func:`precision_recall`: the components
  with the largest |score| (top-k or top quantile, by mean over prompts), and how the
  sets of two methods overlap.

Statistics that run the model (faithfulness, joint patches) live in :mod:`ig_ap.ablation`.
- :func:`asymmetry`, :func:`latent_candidates`: how two AP directions disagree, and the
  AND / OR candidates chosen by the *sign* of the asymmetry (not its absolute value,
  which made both sets identical in the original notebooks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor


def _ranks(x: Float[Tensor, "n"]) -> Float[Tensor, "n"]:
    """Ranks 0 … n-1 with ties given their mean rank (as scipy.stats.rankdata, minus one)."""
    order = x.argsort()
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for value in x.unique():
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else float("nan")


def per_prompt_correlation(
    a: Float[Tensor, "prompt layer component"],
    b: Float[Tensor, "prompt layer component"],
    method: str = "pearson",
) -> Float[Tensor, "prompt"]:
    """r between two methods' scores over all components, one value per prompt (NaN components dropped)."""
    if a.shape != b.shape:
        raise ValueError(f"score shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    out = []
    for x, y in zip(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)):
        keep = ~(x.isnan() | y.isnan())
        x, y = x[keep], y[keep]
        if method == "spearman":
            x, y = _ranks(x), _ranks(y)
        out.append(_pearson(x, y) if len(x) > 1 else float("nan"))
    return torch.tensor(out, dtype=torch.float64)


MIN_PROMPTS_FOR_INTERVAL = 3
"""Fewer prompts than this get no bootstrap interval (NaN bounds, printed as "no interval")."""


@dataclass(frozen=True)
class Interval:
    """A statistic over prompts with its bootstrap confidence interval (percentile method).

    ``low`` and ``high`` are NaN when fewer than :data:`MIN_PROMPTS_FOR_INTERVAL` prompts
    remain: resampling one or two prompts says nothing about the spread (two prompts give
    three possible means), and a reader must not be shown a near-zero-width interval.
    """

    value: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def width(self) -> float:
        return self.high - self.low

    def excludes(self, x: float) -> bool:
        """Whether ``x`` lies outside the interval (False when there is no interval)."""
        return bool(self.low > x or self.high < x)

    def format(self, digits: int = 2) -> str:
        """``value [low, high]`` with ``digits`` decimals (``value (n = …: no interval)`` without an interval); no "-0.00"."""
        def number(x: float) -> str:
            text = f"{x:.{digits}f}"
            return text[1:] if text.startswith("-") and float(text) == 0 else text

        if math.isnan(self.value):
            return "undefined"
        if not math.isfinite(self.low):
            return f"{number(self.value)} (n = {self.n}: no interval)"
        return f"{number(self.value)} [{number(self.low)}, {number(self.high)}]"

    def __str__(self) -> str:
        return self.format()


def compare_intervals(a: Interval, b: Interval) -> str:
    """``"higher"`` when ``a``'s interval lies wholly above ``b``'s, ``"lower"`` when wholly below, else
    ``"undecided"`` (the intervals overlap, or one has no interval)."""
    if not (math.isfinite(a.low) and math.isfinite(b.low)):
        return "undecided"
    return "higher" if a.low > b.high else "lower" if a.high < b.low else "undecided"


def bootstrap(
    values: Float[Tensor, "prompt ..."],
    statistic=None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``statistic`` of ``values`` (mean over prompts by default) with a seeded percentile-bootstrap interval.

    Prompts are resampled with replacement (rows of ``values``); rows holding NaN are
    dropped first. ``statistic`` maps ``[resample, prompt, ...]`` to ``[resample]``. The same
    ``seed`` gives the same interval.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    statistic = statistic or (lambda v: v.mean(dim=1))
    values = torch.as_tensor(values, dtype=torch.float64)
    keep = ~values.reshape(len(values), -1).isnan().any(dim=1) if values.numel() else torch.zeros(0, dtype=torch.bool)
    values = values[keep]
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level)
    value = float(statistic(values[None])[0])
    if n < MIN_PROMPTS_FOR_INTERVAL:
        return Interval(value, float("nan"), float("nan"), n, level)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (n_resamples, n), generator=generator)
    resampled = statistic(values[index])
    alpha = (1 - level) / 2
    low, high = torch.quantile(resampled, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return Interval(value, low, high, n, level)


def ratio_of_means(
    numerator: Float[Tensor, "prompt"],
    denominator: Float[Tensor, "prompt"],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """mean(numerator) / mean(denominator) over prompts, with a seeded bootstrap interval: the book's one rule for shares.

    An effect as a share of the clean−corrupted gap is ``ratio_of_means(metric −
    corrupted, clean − corrupted)``: the mean effect over the mean gap, not the mean of
    per-prompt ratios, which one prompt with a gap near zero can throw anywhere. Each
    resample draws prompts with replacement and takes the ratio of its two means. Prompts
    where either value is NaN are dropped.
    """
    pairs = torch.stack([torch.as_tensor(numerator, dtype=torch.float64), torch.as_tensor(denominator, dtype=torch.float64)], 1)
    return bootstrap(pairs, lambda v: v[..., 0].mean(-1) / v[..., 1].mean(-1), n_resamples, seed, level)


@dataclass(frozen=True)
class Patched:
    """The metric of patched runs per prompt, with the clean and corrupted runs' metrics: effects as shares of the gap.

    ``metric`` has one row per patch (any leading shape) and the prompts last. Effects are
    read as shares of the clean−corrupted gap by the ratio of means (:meth:`share`,
    :meth:`interval`, :func:`ratio_of_means`), the book's one rule; ``ig_ap.heads`` and
    ``ig_ap.ablation`` return it.
    """

    metric: Float[Tensor, "*patch prompt"]
    clean: Float[Tensor, "prompt"]
    corrupted: Float[Tensor, "prompt"]

    def effect(self) -> Float[Tensor, "*patch prompt"]:
        """metric − metric(corrupted), per prompt, in the metric's units."""
        return self.metric - self.corrupted

    @property
    def gap(self) -> Float[Tensor, "prompt"]:
        return self.clean - self.corrupted

    def share(self) -> Float[Tensor, "*patch"]:
        """Each patch's mean effect over the mean gap (the ratio of means): 0 = the corrupted run, 1 = the clean one."""
        return self.effect().mean(-1) / self.gap.mean()

    def interval(self, *index: int, n_resamples: int = 1000, seed: int = 0) -> Interval:
        """The share of the patch at ``index`` with its 95% bootstrap interval over prompts."""
        return ratio_of_means(self.effect()[index], self.gap, n_resamples, seed)

    def select(self, prompts: Tensor) -> "Patched":
        """Only the prompts ``prompts`` picks (a boolean mask or indices), e.g. those the model solves."""
        return Patched(self.metric[..., prompts], self.clean[prompts], self.corrupted[prompts])

    def to_dict(self) -> dict[str, Tensor]:
        return {"metric": self.metric, "clean": self.clean, "corrupted": self.corrupted}

    @classmethod
    def from_dict(cls, value: dict[str, Tensor]) -> "Patched":
        return cls(value["metric"], value["clean"], value["corrupted"])


def gap_scaled(result, kind: str, prompts: Tensor | None = None) -> Float[Tensor, "prompt layer component"]:
    """The scores of ``prompts`` (a mask or indices; all by default) divided by those prompts' *mean* clean−corrupted gap.

    Their mean over prompts is each component's share of the gap by the ratio of means,
    the book's one rule (a per-prompt ratio, ``Attribution.normalized()``, is kept for
    per-prompt statistics such as correlations).
    """
    scores, gap = result[kind], result.denominator
    if prompts is not None:
        scores, gap = scores[prompts], gap[prompts]
    return scores / gap.mean()


def fisher_mean(r: Float[Tensor, "*resample prompt"]) -> Float[Tensor, "*resample"]:
    """Mean of correlations through Fisher's z: tanh(mean(atanh(r))), r clipped to ±(1 − 1e-7)."""
    z = torch.atanh(torch.as_tensor(r, dtype=torch.float64).clamp(-1 + 1e-7, 1 - 1e-7))
    return torch.tanh(z.mean(dim=-1))


@dataclass(frozen=True)
class CorrelationSummary:
    """Per-prompt r over prompts: the mean through Fisher's z with its interval, the plain means, the spread."""

    mean: float  # plain mean of r
    sd: float
    mean_abs: float  # plain mean of |r| (the published figure)
    sd_abs: float
    n_prompts: int
    fisher: Interval | None = None  # mean of r through Fisher's z, bootstrap interval over prompts
    abs_interval: Interval | None = None  # mean of |r|, bootstrap interval over prompts

    def __str__(self) -> str:
        if self.fisher is None:
            return f"r = {self.mean:.2f} ± {self.sd:.2f}, |r| = {self.mean_abs:.2f} ± {self.sd_abs:.2f} (n = {self.n_prompts})"
        return (f"r = {self.fisher} (Fisher z; plain mean {self.mean:.2f}; mean |r| {self.mean_abs:.2f}; "
                f"n = {self.n_prompts})")


def correlation_summary(r: Float[Tensor, "prompt"], n_resamples: int | None = None, seed: int = 0,
                        level: float = 0.95) -> CorrelationSummary:
    """Summary of per-prompt r (NaN dropped); with ``n_resamples``, bootstrap intervals of the Fisher-z mean and of mean |r|."""
    r = r[~r.isnan()].double()
    sd = lambda x: float(x.std()) if len(x) > 1 else 0.0  # noqa: E731
    fisher = abs_interval = None
    if n_resamples is not None:
        fisher = bootstrap(r, lambda v: fisher_mean(v), n_resamples, seed, level)
        abs_interval = bootstrap(r.abs(), None, n_resamples, seed, level)
    return CorrelationSummary(float(r.mean()), sd(r), float(r.abs().mean()), sd(r.abs()), len(r), fisher, abs_interval)


def top_components(
    scores: Float[Tensor, "prompt layer component"],
    k: int | None = None,
    quantile: float | None = None,
) -> Bool[Tensor, "layer component"]:
    """The components with the largest mean |score| over prompts: the top ``k``, or those above ``quantile``."""
    if (k is None) == (quantile is None):
        raise ValueError("give exactly one of k and quantile")
    magnitude = scores.abs().mean(dim=0)
    valid = ~magnitude.isnan()
    chosen = torch.zeros_like(valid)
    values = magnitude[valid]
    if k is not None:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        index = values.topk(min(k, len(values))).indices
    else:
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
        index = (values > torch.quantile(values.double(), quantile).to(values.dtype)).nonzero().flatten()
    flat = chosen[valid]
    flat[index] = True
    chosen[valid] = flat
    return chosen


def jaccard(a: Bool[Tensor, "..."], b: Bool[Tensor, "..."]) -> float:
    """|a ∩ b| / |a ∪ b| (1 for two empty sets)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def precision_recall(found: Bool[Tensor, "..."], reference: Bool[Tensor, "..."]) -> tuple[float, float]:
    """Precision and recall of the set ``found`` against the set ``reference``."""
    hits = int((found & reference).sum())
    n_found, n_reference = int(found.sum()), int(reference.sum())
    return (hits / n_found if n_found else float("nan"), hits / n_reference if n_reference else float("nan"))


def top_per_layer(scores: Float[Tensor, "prompt layer component"], k: int) -> Bool[Tensor, "layer component"]:
    """Per layer, the ``k`` components with the largest mean |score| over prompts (NaN never chosen)."""
    magnitude = scores.abs().mean(dim=0).nan_to_num(-1.0)
    chosen = torch.zeros_like(magnitude, dtype=torch.bool)
    chosen.scatter_(1, magnitude.topk(min(k, magnitude.shape[1]), dim=1).indices, True)
    return chosen & (magnitude >= 0)


def random_per_layer(n_layers: int, n_components: int, k: int, seed: int = 0) -> Bool[Tensor, "layer component"]:
    """A seeded uniform random sample of ``k`` components in each layer (the same ``seed``, the same sample)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(n_layers, n_components, dtype=torch.bool)
    for layer in range(n_layers):
        chosen[layer, torch.randperm(n_components, generator=generator)[:k]] = True
    return chosen


def restrict(scores: Float[Tensor, "prompt layer component"], mask: Bool[Tensor, "layer component"]) -> Float[Tensor, "prompt layer component"]:
    """``scores`` with every component outside ``mask`` set to NaN, so that statistics see only the mask."""
    return scores.masked_fill(~mask.to(scores.device)[None], float("nan"))


def solved_prompts(clean: Float[Tensor, "prompt"], corrupted: Float[Tensor, "prompt"], min_share: float = 0.1) -> Bool[Tensor, "prompt"]:
    """Prompts the model solves: metric(clean) − metric(corrupted) is positive and at least ``min_share`` of the median positive gap.

    A prompt the model fails (gap near zero or negative) has no effect to attribute, and
    its normalised scores divide by almost nothing: it is dropped from the statistics, and
    the page says how many were. The threshold is relative so that one rule serves metrics
    of different units (logit and probability differences).
    """
    gap = clean - corrupted
    positive = gap[gap > 0]
    if not len(positive):
        return torch.zeros_like(gap, dtype=torch.bool)
    return (gap > 0) & (gap >= min_share * positive.median())


def kept_prompts(clean: Float[Tensor, "prompt"], corrupted: Float[Tensor, "prompt"], min_share: float = 0.1) -> tuple[Bool[Tensor, "prompt"], str]:
    """The prompts the statistics use (:func:`solved_prompts`) and a sentence for the page that counts them.

    When the model solves none (a random test model), every prompt is kept and the sentence says so.
    """
    solved = solved_prompts(clean, corrupted, min_share)
    n = len(solved)
    if not solved.any():
        return torch.ones_like(solved), f"the model solves none of the {n} prompts, so all are kept and the effects mean little"
    return solved, f"{int(solved.sum())} of {n} prompts kept (the model solves them: gap ≥ {min_share:g} of the median positive gap)"


def overlap_interval(a: Float[Tensor, "prompt layer component"], b: Float[Tensor, "prompt layer component"], k: int,
                     n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Jaccard index of the top-``k`` components of two methods (by mean |score| over prompts), with a bootstrap interval over prompts."""
    def statistic(values: Tensor) -> Tensor:  # [resample, prompt, 2, layer, component]
        magnitude = values.abs().mean(dim=1).flatten(2).nan_to_num(-1.0)  # [resample, 2, components]
        top = magnitude.topk(min(k, magnitude.shape[2]), dim=2).indices
        chosen = torch.zeros_like(magnitude, dtype=torch.bool).scatter_(2, top, True)
        both, either = (chosen[:, 0] & chosen[:, 1]).sum(-1), (chosen[:, 0] | chosen[:, 1]).sum(-1)
        return both.double() / either.clamp_min(1)

    stacked = torch.stack([a, b], dim=1).double()
    keep = ~stacked.flatten(1).isnan().all(dim=1)
    return bootstrap(stacked[keep].nan_to_num(0.0), statistic, n_resamples, seed, level)


def precision_recall_curve(
    ranking: Float[Tensor, "layer component"], reference: Bool[Tensor, "layer component"], ks: Sequence[int]
) -> tuple[list[float], list[float]]:
    """Precision and recall of the top-``k`` components by ``ranking`` (larger first) against ``reference``, per ``k``."""
    flat, ref = ranking.flatten().nan_to_num(float("-inf")), reference.flatten().bool()
    order = flat.argsort(descending=True)
    precision, recall = [], []
    for k in ks:
        found = torch.zeros_like(ref)
        found[order[:k]] = True
        p, r = precision_recall(found, ref)
        precision.append(p)
        recall.append(r)
    return precision, recall


def asymmetry(
    denoising: Float[Tensor, "prompt layer component"],
    noising: Float[Tensor, "prompt layer component"],
) -> Float[Tensor, "layer component"]:
    """How the two AP directions disagree, per component (mean over prompts), normalised.

    For activation-patching scores (metric(patched) − metric(base run)): a component
    without latent behaviour has AP(denoising) ≈ −AP(noising), the same effect seen from
    the two base runs. The asymmetry is their sum, divided by the largest |score| of
    either direction so that models compare: > 0 where adding the component's clean
    value to the corrupted run does more than removing it from the clean run (OR-like,
    found by denoising), < 0 the reverse (AND-like, found by noising).

    The sum is oriented by the sign of the component's effect, sign(mean(denoising −
    noising)): for a component that works *against* the clean answer (both scores flip
    sign) "denoising finds more" still reads as > 0. Without it, a negative component that
    only denoising sees would be called AND-like.

    For IG the sign of each direction depends on the context convention (see
    :mod:`ig_ap.ig`); use :func:`direction_asymmetry`, which orients it like AP.
    """
    effect = torch.sign((denoising - noising).mean(dim=0))
    total = (denoising + noising).mean(dim=0) * torch.where(effect == 0, 1.0, effect)
    scale = torch.stack([denoising.abs(), noising.abs()]).nan_to_num(0).max()
    return total / scale if scale > 0 else total


def direction_asymmetry(denoising, noising, kind: str) -> Float[Tensor, "layer component"]:
    """:func:`asymmetry` of two :class:`~ig_ap.attribution.Attribution` results of one method, oriented alike.

    Positive means OR-like for every method. For AP (and AtP, and IG in the baseline
    context) the two directions' scores are summed as they are. IG in the input context
    (Captum's convention, the default) integrates each direction in the *other* base run:
    IG(denoising) ≈ what removing the component from the clean run costs, IG(noising) ≈
    minus what adding it to the corrupted run gives, so its sum is oriented the other way
    and is negated here. (Where IG credits both inputs of an AND or an OR equally, as the
    theory says it does, the sum is near zero either way.)
    """
    if denoising.method != noising.method or denoising.direction != "denoising" or noising.direction != "noising":
        raise ValueError("give one method's denoising and noising results, in that order")
    flip = denoising.method == "integrated_gradients" and denoising.meta.get("context", "input") == "input"
    value = asymmetry(denoising[kind], noising[kind])
    return -value if flip else value


def latent_candidates(asym: Float[Tensor, "layer component"], k: int) -> tuple[Bool[Tensor, "layer component"], Bool[Tensor, "layer component"]]:
    """(AND candidates, OR candidates): the ``k`` most negative and the ``k`` most positive asymmetries.

    Chosen by sign: a component is an AND candidate only if its asymmetry is negative and
    an OR candidate only if it is positive, so the two sets never share a component.
    """
    flat = asym.flatten().nan_to_num(0)
    and_set = torch.zeros_like(flat, dtype=torch.bool)
    or_set = torch.zeros_like(flat, dtype=torch.bool)
    negative, positive = (flat < 0).nonzero().flatten(), (flat > 0).nonzero().flatten()
    and_set[negative[flat[negative].argsort()[:k]]] = True
    or_set[positive[flat[positive].argsort(descending=True)[:k]]] = True
    return and_set.view_as(asym), or_set.view_as(asym)


def component_asymmetry(
    denoising: Float[Tensor, "prompt layer component"],
    noising: Float[Tensor, "prompt layer component"],
) -> Float[Tensor, "layer component"]:
    """:func:`asymmetry` normalised by each component's own scale: in [−1, 1], comparable across components.

    (d + n) · sign(d − n) / (|d| + |n|) of the mean scores d (denoising) and n (noising):
    −1 when only noising sees the component (AND-like), +1 when only denoising does
    (OR-like), 0 when the two directions see the same effect. Dividing by the largest
    score of the whole model instead (:func:`asymmetry`) makes the largest components look
    the most asymmetric. NaN where both scores are 0 or not computed.
    """
    return _own_scale_asymmetry(denoising.mean(dim=0), noising.mean(dim=0))


def _own_scale_asymmetry(d: Tensor, n: Tensor) -> Tensor:
    """(d + n) · sign(d − n) / (|d| + |n|) of mean scores, elementwise."""
    effect = torch.sign(d - n)
    return (d + n) * torch.where(effect == 0, 1.0, effect) / (d.abs() + n.abs())


def asymmetry_interval(
    denoising: Float[Tensor, "prompt layer component"],
    noising: Float[Tensor, "prompt layer component"],
    components: Bool[Tensor, "layer component"],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """The mean :func:`component_asymmetry` of the ``components`` picked, with a bootstrap interval over prompts
    (each resample recomputes every component's mean scores, then its asymmetry)."""
    mask = components.to(torch.bool).to(denoising.device)
    stacked = torch.stack([denoising[:, mask], noising[:, mask]], -1)  # [prompt, component, direction]
    statistic = lambda v: _own_scale_asymmetry(v[..., 0].mean(1), v[..., 1].mean(1)).nanmean(-1)  # noqa: E731
    return bootstrap(stacked, statistic, n_resamples, seed, level)


def asymmetry_labels(
    denoising: Float[Tensor, "prompt layer component"],
    noising: Float[Tensor, "prompt layer component"],
    threshold: float = 0.5,
    min_effect: float = 0.05,
) -> np.ndarray:
    """``"AND"``, ``"OR"`` or ``"neither"`` per component, from AP scores in both directions (normalised units).

    A component is labelled only when its larger mean score is at least ``min_effect`` (of
    the gap), its two scores have opposite signs (the same effect seen from the two base
    runs; scores of the same sign are no AND/OR pattern) and :func:`component_asymmetry`
    is beyond ±``threshold``: below −threshold AND (only noising finds it), above
    +threshold OR (only denoising does).
    """
    d, n = denoising.mean(dim=0), noising.mean(dim=0)
    asym = component_asymmetry(denoising, noising)
    big = torch.maximum(d.abs(), n.abs()) >= min_effect
    opposite = (d * n) <= 0
    labels = np.full(tuple(asym.shape), "neither", dtype=object)
    labels[(big & opposite & (asym < -threshold)).numpy()] = "AND"
    labels[(big & opposite & (asym > threshold)).numpy()] = "OR"
    return labels


def latent_candidates_by_rule(
    ap_denoising: Float[Tensor, "prompt layer component"],
    ap_noising: Float[Tensor, "prompt layer component"],
    ig_asymmetry: Float[Tensor, "layer component"],
    threshold: float = 0.5,
    min_effect: float = 0.05,
    ig_threshold: float = 0.2,
) -> tuple[Bool[Tensor, "layer component"], Bool[Tensor, "layer component"]]:
    """(AND, OR) candidates by the rule of the original notebooks: high AP asymmetry, low IG asymmetry.

    A candidate carries the AND or OR label of :func:`asymmetry_labels` (AP scores of
    both directions, normalised; ``threshold`` and ``min_effect`` as there) and has
    |IG asymmetry| below ``ig_threshold``: IG credits an AND's or an OR's inputs alike in
    both directions, so a large IG asymmetry points at something else.
    """
    labels = asymmetry_labels(ap_denoising, ap_noising, threshold, min_effect)
    calm = (ig_asymmetry.abs() < ig_threshold).numpy()
    return torch.from_numpy((labels == "AND") & calm), torch.from_numpy((labels == "OR") & calm)


def path_accumulation(attribution, kind: str, k: int = 5) -> dict[tuple[int, int], Float[Tensor, "segment"]]:
    """Where along IG's path the attribution of the top-``k`` components accumulates.

    For each of the ``k`` components with the largest mean |attribution| (over prompts), the
    share of its mean attribution gathered by the end of each segment of α (from
    ``Attribution.path_profile``): a straight line from 1/segments to 1 means the gradient
    is the same all along the path; a curve that reaches 1 early means the metric
    saturates, and the points near α = 1 (the input) contribute nothing.
    """
    if not attribution.path_profile or kind not in attribution.path_profile:
        raise ValueError(f"this attribution has no path profile of {kind} (only integrated gradients record one)")
    profile = attribution.path_profile[kind].double().nanmean(dim=0)  # [layer, component, segment]
    chosen = top_components(attribution[kind], k=k).nonzero().tolist()
    chosen.sort(key=lambda lc: -float(attribution[kind][:, lc[0], lc[1]].abs().mean()))
    out = {}
    for layer, component in chosen:
        segments = profile[layer, component]
        out[layer, component] = segments.cumsum(0) / segments.sum()
    return out
