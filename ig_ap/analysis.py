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
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
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


MIN_COMPONENTS_FOR_R = 3
"""A prompt with fewer valid (non-NaN) components than this has no correlation: two points always give r = ±1."""


def per_prompt_correlation(
    a: Float[Tensor, "prompt layer component"],
    b: Float[Tensor, "prompt layer component"],
    method: str = "pearson",
) -> Float[Tensor, "prompt"]:
    """r between two methods' scores over all components, one value per prompt (NaN components dropped; NaN for a
    prompt with fewer than :data:`MIN_COMPONENTS_FOR_R` valid components)."""
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
        out.append(_pearson(x, y) if len(x) >= MIN_COMPONENTS_FOR_R else float("nan"))
    return torch.tensor(out, dtype=torch.float64)


MIN_PROMPTS_FOR_INTERVAL = 3
"""Fewer prompts than this get no interval (NaN bounds, printed as "no interval"), whatever the statistic."""


@dataclass(frozen=True)
class Interval:
    """A statistic over prompts (or seeds) with its confidence interval.

    The interval depends on the statistic, each the best of those tried at the book's 4–8
    prompts (:func:`coverage_table` measures them): a mean has the t interval
    (:func:`mean_interval`), a ratio of means Fieller's (:func:`ratio_of_means`), a mean
    correlation the t interval of Fisher's z (:func:`correlation_summary`), any other
    statistic the expanded percentile bootstrap (:func:`bootstrap`). ``method`` names it.
    ``low`` and ``high`` are NaN when fewer than :data:`MIN_PROMPTS_FOR_INTERVAL` prompts
    remain (a reader must not be shown a near-zero-width interval from two prompts), and
    infinite when the data cannot bound the statistic (a ratio whose denominator is not
    distinguishable from 0). ``failed``: bootstrap resamples whose statistic was undefined.
    """

    value: float
    low: float
    high: float
    n: int
    level: float = 0.95
    method: str = ""
    failed: int = 0

    @property
    def width(self) -> float:
        return self.high - self.low

    def within(self, lowest: float = -math.inf, highest: float = math.inf) -> "Interval":
        """This interval cut to ``[lowest, highest]``, the range the statistic cannot leave (an attention weight lies in
        [0, 1], an area of |1 − f| is at least 0, a share of a sum of squares explained at most 1). The t and jackknife
        intervals are symmetric and reach past such a bound at a few prompts; cutting there cannot lower the coverage.
        Bounds that are not finite (no interval, or one the data cannot bound) are left as they are."""
        low = max(self.low, lowest) if math.isfinite(self.low) else self.low
        high = min(self.high, highest) if math.isfinite(self.high) else self.high
        return replace(self, low=low, high=high)

    def excludes(self, x: float) -> bool:
        """Whether ``x`` lies outside the interval (False when there is no interval)."""
        return bool(self.low > x or self.high < x)

    def format(self, digits: int = 2) -> str:
        """``value [low, high]`` with ``digits`` decimals (``value (n = …: no interval)`` without an interval); no "-0.00".

        A bound that is not 0 but would print as 0 gets up to 4 more decimals (all three
        numbers get them), so that a reader can see on which side of 0 it lies: "[0.00, 0.02]"
        cannot say whether the interval excludes 0, "[0.003, 0.020]" can.
        """
        bounds = [x for x in (self.low, self.high) if math.isfinite(x) and x != 0]
        while bounds and digits < 6 and any(float(f"{x:.{digits}f}") == 0 for x in bounds):
            digits += 1

        def number(x: float) -> str:
            text = f"{x:.{digits}f}"
            return text[1:] if text.startswith("-") and float(text) == 0 else text

        if math.isnan(self.value):
            return "undefined"
        if math.isnan(self.low):
            return f"{number(self.value)} (n = {self.n}: no interval)"
        if math.isinf(self.low) or math.isinf(self.high):
            return f"{number(self.value)} (unbounded interval: n = {self.n} cannot bound it)"
        return f"{number(self.value)} [{number(self.low)}, {number(self.high)}]"

    def __str__(self) -> str:
        return self.format()


def paired_difference(a: Float[Tensor, "prompt"], b: Float[Tensor, "prompt"], level: float = 0.95) -> Interval:
    """The mean of a − b over the prompts where both are defined, with its t interval: how two methods or baselines
    measured on the same prompts compare (not whether their two intervals overlap, which wastes the pairing)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return mean_interval(a - b, level)


def paired_verdict(difference: Interval) -> str:
    """``"higher"`` when the paired difference's interval lies above 0, ``"lower"`` below, else ``"undecided"``."""
    if math.isnan(difference.low):
        return "undecided"
    return "higher" if difference.low > 0 else "lower" if difference.high < 0 else "undecided"


def standing_out(intervals: dict[str, Interval]) -> tuple[str | None, str | None]:
    """(the key whose interval lies wholly above every other's, the key whose interval lies wholly below every other's);
    None where no key does: a ranking the intervals cannot carry is not stated."""
    def beats(x: Interval, y: Interval) -> bool:
        return compare_intervals(x, y) == "higher"

    top = [k for k, v in intervals.items() if all(beats(v, w) for j, w in intervals.items() if j != k)]
    bottom = [k for k, v in intervals.items() if all(beats(w, v) for j, w in intervals.items() if j != k)]
    return (top[0] if top else None), (bottom[0] if bottom else None)


def compare_intervals(a: Interval, b: Interval) -> str:
    """``"higher"`` when ``a``'s interval lies wholly above ``b``'s, ``"lower"`` when wholly below, else
    ``"undecided"`` (the intervals overlap, or one has no interval)."""
    if math.isnan(a.low) or math.isnan(b.low):
        return "undecided"
    return "higher" if a.low > b.high else "lower" if a.high < b.low else "undecided"


def _t_quantile(level: float, df: int) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))


def _rows(values) -> Tensor:
    """``values`` as float64, rows (prompts) holding NaN dropped."""
    values = torch.as_tensor(values, dtype=torch.float64)
    if not values.numel():
        return values.reshape(0, *values.shape[1:]) if values.dim() else values.reshape(0)
    return values[~values.reshape(len(values), -1).isnan().any(dim=1)]


def mean_interval(values: Float[Tensor, "prompt"], level: float = 0.95) -> Interval:
    """The mean over prompts with its t interval: mean ± t(n − 1) · sd / √n (prompts holding NaN dropped).

    Exact on normal data at every n, which no bootstrap is at the book's 4–8 prompts (a
    percentile bootstrap covers 80% at n = 4): see :func:`coverage_table`.
    """
    _check_level(level)
    x = _rows(values).reshape(-1)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    mean = float(x.mean())
    if n < MIN_PROMPTS_FOR_INTERVAL:
        return Interval(mean, math.nan, math.nan, n, level)
    half = _t_quantile(level, n - 1) * float(x.std()) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level, "t")


def ratio_of_means(
    numerator: Float[Tensor, "prompt"],
    denominator: Float[Tensor, "prompt"],
    n_resamples: int | None = None,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """mean(numerator) / mean(denominator) over prompts with its interval: the book's one rule for shares.

    An effect as a share of the clean−corrupted gap is ``ratio_of_means(metric −
    corrupted, clean − corrupted)``: the mean effect over the mean gap, not the mean of
    per-prompt ratios, which one prompt with a gap near zero can throw anywhere. The
    interval: where Fieller's (t(n − 1) quantiles, the sample covariance of the two means)
    is unbounded, because the denominator is not distinguishable from 0, it is unbounded
    (``low = −inf``, ``high = inf``, printed as such: the data cannot tell the ratio);
    otherwise the jackknife-t interval of the ratio (:func:`jackknife_interval`), which
    covered best of those tried, on skewed data too (:func:`coverage_table`). Prompts where
    either value is NaN are dropped. (``n_resamples`` and ``seed`` are accepted and unused.)
    """
    _check_level(level)
    pairs = _rows(torch.stack([torch.as_tensor(numerator, dtype=torch.float64).reshape(-1),
                               torch.as_tensor(denominator, dtype=torch.float64).reshape(-1)], 1))
    n = len(pairs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    a, b = (float(v) for v in pairs.mean(0))
    value = a / b if b != 0 else math.nan
    if n < MIN_PROMPTS_FOR_INTERVAL:
        return Interval(value, math.nan, math.nan, n, level)
    cov = torch.cov(pairs.T) / n  # covariance of the two means
    v11, v12, v22 = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    t2 = _t_quantile(level, n - 1) ** 2
    qa, qb, qc = b * b - t2 * v22, a * b - t2 * v12, a * a - t2 * v11  # qa·ρ² − 2·qb·ρ + qc ≤ 0
    disc = qb * qb - qa * qc
    if qa <= 0 or disc < 0:  # the denominator is not distinguishable from 0: no bounded interval
        return Interval(value, -math.inf, math.inf, n, level, "unbounded (Fieller)")
    return jackknife_interval(pairs, _ratio_of_pair_means, level)


def _ratio_of_pair_means(pairs: Float[Tensor, "*k prompt 2"]) -> Float[Tensor, "*k"]:
    """mean of the first column over mean of the second, over prompts."""
    return pairs[..., 0].mean(-1) / pairs[..., 1].mean(-1)


RESAMPLE_BYTES = 2**28
"""At most this many bytes of resampled values at once: :func:`bootstrap` computes its statistic in chunks of resamples."""


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")


def bootstrap(
    values: Float[Tensor, "prompt ..."],
    statistic,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``statistic`` of ``values`` with a seeded *expanded* percentile-bootstrap interval: for statistics that jump.

    Prompts are resampled with replacement (rows of ``values``); rows holding NaN are
    dropped first. ``statistic`` maps ``[resample, prompt, ...]`` to ``[resample]``. A plain
    percentile bootstrap is too narrow at a few prompts (its 95% covers a normal mean 80% of
    the time at n = 4); the expanded percentile bootstrap (Hesterberg 2015) reads the
    quantiles at Φ(±√(n / (n − 1)) · t(n − 1)) instead of ±1.96, which widens it as a t
    interval is widened. Resamples whose statistic is NaN are left out of the quantiles and
    counted in ``failed``. The same ``seed`` gives the same interval. It is for statistics
    such as the overlap of two top-k sets, which a few prompts move in jumps; it covers
    less than the others at 4 prompts (:func:`coverage_table`). For a mean, a ratio of
    means, a mean correlation and smooth functions of means use :func:`mean_interval`,
    :func:`ratio_of_means`, :func:`correlation_summary` and :func:`jackknife_interval`.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    _check_level(level)
    values, value, too_few = _point(values, statistic, level)
    if too_few is not None:
        return too_few
    n = len(values)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (n_resamples, n), generator=generator)
    per_resample = max(1, values[0].numel() * n * 8)  # bytes of one resample's values
    chunk = max(1, int(RESAMPLE_BYTES // per_resample))
    resampled = torch.cat([statistic(values[index[i:i + chunk]]).double() for i in range(0, n_resamples, chunk)])
    failed = int(resampled.isnan().sum())
    if failed == n_resamples:
        return Interval(value, math.nan, math.nan, n, level, "expanded percentile bootstrap", failed)
    alpha = _expanded_alpha(level, n)
    low, high = torch.nanquantile(resampled, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return Interval(value, low, high, n, level, "expanded percentile bootstrap", failed)


def _point(values, statistic, level: float) -> tuple[Tensor, float, Interval | None]:
    """(the rows without NaN, the statistic on them, an Interval with no bounds when there are too few rows, else None)."""
    values = _rows(values)
    if len(values) == 0:
        return values, math.nan, Interval(math.nan, math.nan, math.nan, 0, level)
    value = float(statistic(values[None])[0])
    if len(values) < MIN_PROMPTS_FOR_INTERVAL:
        return values, value, Interval(value, math.nan, math.nan, len(values), level)
    return values, value, None


def jackknife_interval(values: Float[Tensor, "prompt ..."], statistic, level: float = 0.95) -> Interval:
    """``statistic`` of ``values`` with the jackknife-t interval: value ± t(n − 1) · the jackknife standard error.

    For smooth statistics of means with no closed form (the excess of a joint patch over
    its members, a mean asymmetry). The standard error comes from the ``n`` statistics
    with one prompt left out; for a mean it is sd / √n exactly, so the interval is the t
    interval, and it covers as the t interval does at 4–8 prompts (:func:`coverage_table`).
    Rows holding NaN are dropped; ``statistic`` maps ``[k, prompt, ...]`` to ``[k]``. Not
    for statistics that jump (a top-k set), whose leave-one-out values may all agree: use
    :func:`bootstrap` there.
    """
    _check_level(level)
    values, value, too_few = _point(values, statistic, level)
    if too_few is not None:
        return too_few
    n = len(values)
    left_out = statistic(values[torch.tensor([[j for j in range(n) if j != i] for i in range(n)])]).double()
    failed = int(left_out.isnan().sum())
    if failed:
        return Interval(value, math.nan, math.nan, n, level, "jackknife-t", failed)
    se = math.sqrt((n - 1) / n * float(((left_out - left_out.mean()) ** 2).sum()))
    half = _t_quantile(level, n - 1) * se
    return Interval(value, value - half, value + half, n, level, "jackknife-t")


def _expanded_alpha(level: float, n: int) -> float:
    """The lower tail the expanded percentile bootstrap reads: Φ(−√(n / (n − 1)) · t(n − 1))."""
    from scipy.stats import norm

    return float(norm.cdf(-math.sqrt(n / (n - 1)) * _t_quantile(level, n - 1)))


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

    def difference(self, other: "Patched", *index: int, n_resamples: int = 1000, seed: int = 0) -> Interval:
        """How much more of the gap the patch at ``index`` recovers here than in ``other``, on the same prompts: the mean
        of the paired differences of the metric over the mean gap, with its interval (:func:`ratio_of_means`). Two
        methods compared on the same prompts are compared this way, not by whether their intervals overlap."""
        if self.gap.shape != other.gap.shape or not torch.allclose(self.gap, other.gap, rtol=1e-4, atol=1e-5):
            raise ValueError("difference compares two results on the same prompts (their clean−corrupted gaps differ)")
        return ratio_of_means(self.metric[index] - other.metric[index], self.gap, n_resamples, seed)

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
    fisher: Interval | None = None  # mean of r through Fisher's z, t interval of z over prompts
    abs_interval: Interval | None = None  # mean of |r|, t interval over prompts
    n_dropped: int = 0  # prompts without an r (too few valid components)

    def __str__(self) -> str:
        if self.fisher is None:
            return f"r = {self.mean:.2f} ± {self.sd:.2f}, |r| = {self.mean_abs:.2f} ± {self.sd_abs:.2f} (n = {self.n_prompts})"
        return (f"r = {self.fisher} (Fisher z; plain mean {self.mean:.2f}; mean |r| {self.mean_abs:.2f}; "
                f"n = {self.n_prompts})")


def correlation_summary(r: Float[Tensor, "prompt"], n_resamples: int | None = None, seed: int = 0,
                        level: float = 0.95) -> CorrelationSummary:
    """Summary of per-prompt r; with ``n_resamples`` (any value: the intervals have closed forms), the intervals.

    The mean r goes through Fisher's z: the t interval of the mean of atanh(r) over prompts,
    mapped back by tanh (r clipped to ±(1 − 1e-7)). Prompts without an r (NaN: fewer than
    :data:`MIN_COMPONENTS_FOR_R` valid components) are left out and counted in ``n_dropped``.
    """
    r = torch.as_tensor(r, dtype=torch.float64)
    dropped = int(r.isnan().sum())
    r = r[~r.isnan()]
    sd = lambda x: float(x.std()) if len(x) > 1 else 0.0  # noqa: E731
    fisher = abs_interval = None
    if n_resamples is not None:
        z = mean_interval(torch.atanh(r.clamp(-1 + 1e-7, 1 - 1e-7)), level)
        fisher = Interval(math.tanh(z.value), math.tanh(z.low), math.tanh(z.high), z.n, level, "t on Fisher's z")
        abs_interval = mean_interval(r.abs(), level)
    return CorrelationSummary(float(r.mean()), sd(r), float(r.abs().mean()), sd(r.abs()), len(r), fisher, abs_interval, dropped)


def top_components(
    scores: Float[Tensor, "prompt layer component"],
    k: int | None = None,
    quantile: float | None = None,
    signed: bool = False,
) -> Bool[Tensor, "layer component"]:
    """The components with the largest mean |score| over prompts (``signed``: the largest mean score, those that push
    the metric towards the clean run's): the top ``k``, or those above ``quantile``. Never-computed (NaN) components
    are never picked."""
    if (k is None) == (quantile is None):
        raise ValueError("give exactly one of k and quantile")
    magnitude = scores.mean(dim=0) if signed else scores.abs().mean(dim=0)
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


STABLE_JACCARD = 0.8
"""Méloux et al. (2025)'s bar for a stable circuit: the mean Jaccard index of the circuits found on bootstrap resamples
of the prompts, over at least 100 resamples."""


@dataclass(frozen=True)
class Stability:
    """How stable a top-k set is under resampling of the prompts: the Jaccard index of the top-``k`` sets found on two
    independent bootstrap resamples, for each of ``len(jaccard)`` pairs."""

    jaccard: Float[Tensor, "pair"]
    k: int
    n: int

    @property
    def value(self) -> float:
        """The mean Jaccard index over the pairs of resamples."""
        return float(self.jaccard.mean()) if len(self.jaccard) else math.nan

    @property
    def stable(self) -> bool:
        """Whether the mean reaches :data:`STABLE_JACCARD` (Méloux et al. 2025's bar)."""
        return self.value >= STABLE_JACCARD

    def spread(self, level: float = 0.95) -> Interval:
        """The mean with the middle ``level`` of the pairs' Jaccard indices (their spread, not a confidence interval of
        the mean); no spread below :data:`MIN_PROMPTS_FOR_INTERVAL` prompts."""
        if self.n < MIN_PROMPTS_FOR_INTERVAL or not len(self.jaccard):
            return Interval(self.value, math.nan, math.nan, self.n, level, "resample pairs")
        low, high = torch.quantile(self.jaccard.double(), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
        return Interval(self.value, float(low), float(high), self.n, level, "middle of the resample pairs")

    def __str__(self) -> str:
        spread = self.spread()
        if math.isnan(spread.low):
            return f"{spread.format()}"
        return (f"{self.value:.2f} (middle 95% of {len(self.jaccard)} resample pairs: {spread.low:.2f} to {spread.high:.2f}; "
                + ("stable" if self.stable else f"below {STABLE_JACCARD:g}") + ")")


def top_k_stability(scores: Float[Tensor, "prompt layer component"], k: int, n_resamples: int = 200, seed: int = 0,
                    signed: bool = False) -> Stability:
    """The stability of the top-``k`` components (by mean |score|, or mean score when ``signed``) under bootstrap
    resampling of the prompts (Méloux et al. 2025).

    Draws ``2 × n_resamples`` bootstrap resamples of the prompts (seeded), finds the top-``k``
    set on each as :func:`top_components` does (never-computed components never picked), and
    returns the Jaccard index of the sets of each of the ``n_resamples`` independent pairs. A
    set the prompts pin down gives Jaccard indices near 1; a set that changes with the draw of
    prompts gives low ones. Prompts with nothing computed are left out. Memory is bounded by
    drawing the resamples in chunks (:data:`RESAMPLE_BYTES`).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    flat = scores.flatten(1).double()
    flat = flat[~flat.isnan().all(dim=1)]
    n = len(flat)
    if n == 0:
        return Stability(torch.empty(0), k, 0)
    valid = ~flat.isnan().any(dim=0)
    values = flat[:, valid].nan_to_num(0.0)
    values = values if signed else values.abs()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (2 * n_resamples, n), generator=generator)
    chunk = max(2, 2 * (RESAMPLE_BYTES // max(1, 16 * n * values.shape[1])))
    chosen = []
    for start in range(0, len(index), chunk):
        means = values[index[start:start + chunk]].mean(dim=1)  # [resample, component]
        top = means.topk(min(k, means.shape[1]), dim=1).indices
        chosen.append(torch.zeros_like(means, dtype=torch.bool).scatter_(1, top, True))
    chosen = torch.cat(chosen)
    a, b = chosen[0::2], chosen[1::2]
    both, either = (a & b).sum(-1).double(), (a | b).sum(-1).double()
    return Stability(torch.where(either > 0, both / either.clamp_min(1), torch.ones_like(both)), k, n)


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
    """Prompts the model solves: the clean metric is right (positive: the answer beats the distractor, or the years
    above the threshold get more mass) and metric(clean) − metric(corrupted) is positive and at least ``min_share`` of
    the median positive gap.

    A prompt the model fails (gap near zero or negative) has no effect to attribute, and
    its normalised scores divide by almost nothing: it is dropped from the statistics, and
    the page says how many were. The threshold is relative so that one rule serves metrics
    of different units (logit and probability differences).
    """
    gap = clean - corrupted
    positive = gap[gap > 0]
    if not len(positive):
        return torch.zeros_like(gap, dtype=torch.bool)
    return (clean > 0) & (gap > 0) & (gap >= min_share * positive.median())


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
    stacked = torch.stack([a, b], dim=1).double()  # [prompt, 2, layer, component]
    stacked = stacked[~stacked.flatten(1).isnan().all(dim=1)]  # prompts with nothing computed
    valid = ~stacked.isnan().any(dim=0).flatten(1)  # [2, components]: computed on every prompt
    values = stacked.flatten(2)[:, :, valid.any(0)].nan_to_num(0.0)  # only components some method computed
    valid = valid[:, valid.any(0)]

    def statistic(v: Tensor) -> Tensor:  # [resample, prompt, 2, component]
        magnitude = v.abs().mean(dim=1).masked_fill(~valid, -math.inf)  # a component not computed is never picked
        top = magnitude.topk(min(k, magnitude.shape[2]), dim=2).indices
        chosen = torch.zeros_like(magnitude, dtype=torch.bool).scatter_(2, top, True) & valid
        both, either = (chosen[:, 0] & chosen[:, 1]).sum(-1), (chosen[:, 0] | chosen[:, 1]).sum(-1)
        return both.double() / either.clamp_min(1)

    return bootstrap(values, statistic, n_resamples, seed, level)


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

    (d + n)(d − n) / (|d| + |n|)² of the mean scores d (denoising) and n (noising): −1 when
    only noising sees the component (AND-like), +1 when only denoising does (OR-like), 0
    when the two directions see the same effect. Where d and n have opposite signs (the
    same effect seen from the two base runs) this is (d + n) · sign(d − n) / (|d| + |n|);
    where they have the same sign, no AND/OR pattern, it shrinks towards 0 and reaches 0 at
    d = n, so it is continuous in both scores (the sign form jumped from −1 to +1 between
    d = 0.30, n = 0.31 and d = 0.31, n = 0.30). Dividing by the largest score of the whole
    model instead (:func:`asymmetry`) makes the largest components look the most
    asymmetric. NaN where both scores are 0 or not computed.
    """
    return _own_scale_asymmetry(denoising.mean(dim=0), noising.mean(dim=0))


def _own_scale_asymmetry(d: Tensor, n: Tensor) -> Tensor:
    """(d + n)(d − n) / (|d| + |n|)² of mean scores, elementwise (NaN where both are 0)."""
    return (d + n) * (d - n) / (d.abs() + n.abs()) ** 2


def asymmetry_interval(
    denoising: Float[Tensor, "prompt layer component"],
    noising: Float[Tensor, "prompt layer component"],
    components: Bool[Tensor, "layer component"],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """The mean :func:`component_asymmetry` of the ``components`` picked, with its jackknife-t interval over prompts
    (each prompt left out in turn recomputes every component's mean scores, then its asymmetry; ``n_resamples`` and
    ``seed`` are unused)."""
    mask = components.to(torch.bool).to(denoising.device)
    stacked = torch.stack([denoising[:, mask], noising[:, mask]], -1)  # [prompt, component, direction]
    statistic = lambda v: _own_scale_asymmetry(v[..., 0].mean(1), v[..., 1].mean(1)).nanmean(-1)  # noqa: E731
    return jackknife_interval(stacked, statistic, level)


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


# --------------------------------------------------------------------------- select on some prompts, test on others


@dataclass(frozen=True)
class Split:
    """A seeded split of prompts: ``select`` picks components, ``test`` measures them (never the same prompts)."""

    select: Int[Tensor, "k"]
    test: Int[Tensor, "m"]
    seed: int

    def __str__(self) -> str:
        plural = lambda k: f"{k} prompt" + ("" if k == 1 else "s")  # noqa: E731
        return (f"components selected on {plural(len(self.select))} and tested on the other {len(self.test)} "
                f"(a seeded split, seed {self.seed})")


def selection_split(prompts: Int[Tensor, "n"] | int, seed: int = 0, select_share: float = 0.5) -> Split:
    """Split ``prompts`` (indices, or a count) at random, seeded: ``select_share`` of them to pick components on, the rest
    to test the picked ones on.

    A component picked because its score on some prompts is extreme looks significant on
    those same prompts even when nothing is there (on symmetric null scores, 30 × 9 heads, 8
    prompts, the in-sample AND group's interval excludes 0 nearly always:
    ``tests/test_analysis.py`` measures it); tested on other prompts it does not.
    """
    index = torch.arange(prompts) if isinstance(prompts, int) else torch.as_tensor(prompts).flatten()
    if not 0 < select_share < 1:
        raise ValueError(f"select_share must lie in (0, 1), got {select_share!r}")
    order = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))]
    k = int(round(select_share * len(index)))
    return Split(order[:k].sort().values, order[k:].sort().values, seed)


def held_out_asymmetry(
    denoising: Float[Tensor, "prompt layer component"],
    noising: Float[Tensor, "prompt layer component"],
    split: Split,
    label: str,
    threshold: float = 0.5,
    min_effect: float = 0.05,
) -> tuple[Bool[Tensor, "layer component"], Interval]:
    """Components labelled ``label`` (``"AND"`` or ``"OR"``, :func:`asymmetry_labels`) on the selection prompts, and
    the mean asymmetry of that group on the test prompts with its interval (:func:`asymmetry_interval`)."""
    labels = asymmetry_labels(denoising[split.select], noising[split.select], threshold, min_effect)
    picked = torch.from_numpy(labels == label)
    if not picked.any():
        return picked, Interval(math.nan, math.nan, math.nan, len(split.test))
    return picked, asymmetry_interval(denoising[split.test], noising[split.test], picked)


# --------------------------------------------------------------------------- coverage of the intervals


def _coverage_cases(rng: np.random.Generator):
    """(statistic, data, truth, draw(n) -> values, the package's interval(values) -> (low, high), the statistic)."""
    mean = lambda v: v.mean(dim=1)  # noqa: E731
    ratio, fisher = _ratio_of_pair_means, fisher_mean
    bounds = lambda i: (i.low, i.high)  # noqa: E731
    z0 = math.atanh(0.7)
    for data, noise in (("normal", lambda size: rng.standard_normal(size)),
                        ("skewed (exponential)", lambda size: rng.exponential(size=size) - 1)):

        def pairs(n, noise=noise):  # effect = 0.4 · gap + noise; the gap itself noisy: a share of a noisy gap
            gap = 2.0 + 0.8 * torch.tensor(noise(n))
            return torch.stack([0.4 * gap + 0.5 * torch.tensor(noise(n)), gap], 1)

        yield ("mean", data, 0.0, lambda n, noise=noise: torch.tensor(noise(n)),
               ("t (mean_interval)", lambda v: bounds(mean_interval(v))), mean)
        yield ("ratio of means, noisy denominator", data, 0.4, pairs,
               ("jackknife-t, unbounded where Fieller's is (ratio_of_means)", lambda v: bounds(ratio_of_means(v[:, 0], v[:, 1]))), ratio)
        yield ("mean r through Fisher's z", data, 0.7, lambda n, noise=noise: torch.tanh(z0 + 0.3 * torch.tensor(noise(n))),
               ("t on Fisher's z (correlation_summary)", lambda v: bounds(correlation_summary(v, 1).fisher)), fisher)


def _bootstrap_coverage(samples: Tensor, statistic, truth: float, alpha: float, n_resamples: int, seed: int) -> float:
    """Coverage of percentile-bootstrap intervals read at ``alpha`` and 1 − alpha, all trials at once ``[trial, prompt, ...]``."""
    trials, n = samples.shape[:2]
    index = torch.randint(n, (n_resamples, n), generator=torch.Generator().manual_seed(seed))
    resampled = statistic(samples[:, index].reshape(trials * n_resamples, n, *samples.shape[2:])).view(trials, n_resamples)
    low, high = torch.nanquantile(resampled.double(), torch.tensor([alpha, 1 - alpha], dtype=torch.float64), dim=1)
    return float(((low <= truth) & (truth <= high)).double().mean())


def coverage_table(sizes: Sequence[int] = (4, 5, 8), n_trials: int = 1000, n_resamples: int = 1000, seed: int = 0):
    """How often each interval method's 95% interval covers the truth, simulated, at the book's sample sizes.

    For a mean, a ratio of means with a noisy denominator (an effect as a share of a noisy
    gap) and a mean correlation through Fisher's z, on normal and on skewed (exponential)
    noise: ``n_trials`` samples of each size in ``sizes``, and each method's interval on
    each. Returns a ``pandas.DataFrame`` with one row per statistic, data and method and
    one column of coverage per size, plus the Monte Carlo standard error of a coverage of
    0.95. The methods the package uses are named with their function. The methods page
    shows this table, computed when the book is built; the tests require the package's
    methods to cover at least 93% on normal data.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for statistic, data, truth, draw, (name, interval), function in _coverage_cases(rng):
        samples = {n: torch.stack([draw(n) for _ in range(n_trials)]) for n in sizes}
        methods = {
            name: lambda x: float(np.mean([low <= truth <= high for low, high in map(interval, x)])),
            "jackknife-t (jackknife_interval)": lambda x: float(np.mean(
                [(i.low <= truth <= i.high) for i in (jackknife_interval(v, function) for v in x)])),
            "expanded percentile bootstrap (bootstrap)": lambda x: _bootstrap_coverage(
                x, function, truth, _expanded_alpha(0.95, x.shape[1]), n_resamples, seed),
            "percentile bootstrap (the plain one, for reference)": lambda x: _bootstrap_coverage(
                x, function, truth, 0.025, n_resamples, seed),
        }
        for method, coverage in methods.items():
            rows.append({"statistic": statistic, "data": data, "method": method,
                         **{f"n = {n}": coverage(samples[n]) for n in sizes}})
    table = pd.DataFrame(rows)
    table.attrs["monte_carlo_se"] = math.sqrt(0.95 * 0.05 / n_trials)
    return table
