"""The four circuit tasks of the book, as prompt-pair datasets that adapt to the tokenizer.

A task gives pairs of prompts, *clean* and *corrupted*, that tokenize to the same length
and differ in a few tokens, plus a metric on the model's logits at each prompt's last
token. Activation patching and integrated gradients both ask how much of the metric's
change from corrupted to clean each component carries.

=================  =============================================  ===================================
task               clean → corrupted                              metric (per prompt)
=================  =============================================  ===================================
``ioi``            "When Mary and John went to the store, John     logit(IO) − logit(S): " Mary" − " John"
                   gave a drink to" → ``abc``: the second
                   subject replaced by a third name (default);
                   ``abb``: both names replaced by two others,
                   same ABB pattern; ``swap``: the second subject
                   replaced by the indirect object, so that the
                   answer flips (the original notebook's `003`)
``greater_than``   "The war lasted from the year 1732 to the       probability on answers greater than
                   year 17" → year 1701                           the clean start minus the rest
``gender_bias``    "The nurse said that" → "The man said that"    logit(stereotyped pronoun) − logit(other)
``capital_country`` "Paris, the capital of" → "Tokyo, the          logit(country) − logit(corrupted
                   capital of" (same token length)                prompt's country), first tokens
=================  =============================================  ===================================

Every metric is computed for each prompt at its own last token (prompts in a batch are
right-padded: a padded batch read at position ``-1`` would read padding for the shorter
prompts, the original notebooks' main bug), on the answers of the *clean* prompt, for the
clean and the corrupted run alike; :func:`normalized` maps it to 0 (corrupted) … 1 (clean).

Greater-Than adapts to the tokenizer: where two-digit years are single tokens (GPT-2) the
answer is the two-digit year after "to the year 17" (Hanna et al. 2023); where digits are
single tokens (the embedded SmolLM2) the answer is the next digit, the tens digit of the
end year, and the metric is the mass on tens digits greater than the start year's minus
the mass on smaller ones (the equal digit is ambiguous and left out). The dataset's
``variant`` records which one was used.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ig_ap.models import EMBEDDED, ModelInfo, ModelUnavailableError, UnknownModelError, load_model, model_info
from ig_ap.words import (CAPITALS, FEMALE_PROFESSIONS, GENDER_TEMPLATES, GREATER_THAN_CENTURIES, GREATER_THAN_NOUNS,
                         IOI_TEMPLATES, MALE_PROFESSIONS, NAMES, OBJECTS, PLACES)


class Task(str, Enum):
    """The circuit tasks of the book."""

    IOI = "ioi"
    GREATER_THAN = "greater_than"
    GENDER_BIAS = "gender_bias"
    CAPITAL_COUNTRY = "capital_country"

    @classmethod
    def parse(cls, task: "Task | str") -> "Task":
        """The task named ``task``; :class:`TaskError` with the known names if there is none."""
        if isinstance(task, Task):
            return task
        try:
            return cls(str(task).strip().lower().replace("-", "_"))
        except ValueError:
            raise TaskError(f"unknown task {task!r}; choose one of {', '.join(t.value for t in cls)}") from None


class TaskError(ValueError):
    """A dataset cannot be built as asked (unknown task, bad size, unusable tokenizer)."""


TASK_TITLES = {
    Task.IOI: "IOI",
    Task.GREATER_THAN: "Greater-Than",
    Task.GENDER_BIAS: "Gender-Bias",
    Task.CAPITAL_COUNTRY: "Capital-Country",
}


# --------------------------------------------------------------------------- data classes


@dataclass
class Batch:
    """Prompt pairs as token ids, ready for the kernels.

    ``clean`` and ``corrupted`` are right-padded with ``pad_id``; prompt ``i`` of both ends
    at position ``last[i]``. ``answers`` holds the token ids the metric compares (logit
    difference tasks: ``[correct, wrong]``) or, for Greater-Than, the index of the clean
    prompt's threshold among ``candidates`` (the answer tokens in increasing order).
    """

    task: Task
    clean: Int[Tensor, "prompt pos"]
    corrupted: Int[Tensor, "prompt pos"]
    answers: Int[Tensor, "prompt n_answers"]
    last: Int[Tensor, "prompt"]
    candidates: Int[Tensor, "n_candidates"] | None = None
    pad_id: int = 0

    def __len__(self) -> int:
        return self.clean.shape[0]

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self, clean=move(self.clean), corrupted=move(self.corrupted), answers=move(self.answers),
            last=move(self.last), candidates=move(self.candidates),
        )

    def select(self, index: Sequence[int] | slice) -> "Batch":
        """A sub-batch (trailing columns of padding only are kept: shapes stay valid)."""
        pick = lambda t: t[index]  # noqa: E731
        return replace(self, clean=pick(self.clean), corrupted=pick(self.corrupted),
                       answers=pick(self.answers), last=pick(self.last))

    def first_difference(self) -> int:
        """First position where any clean and corrupted prompt of the batch differ (their shared prefix length)."""
        differs = (self.clean != self.corrupted).any(dim=0).nonzero()
        return int(differs[0]) if len(differs) else self.clean.shape[1]

    @property
    def metric(self) -> Callable[[Tensor, "Batch"], Tensor]:
        """The task's metric: ``metric(last-token logits [..., prompt, vocab], batch) -> [..., prompt]``."""
        return metric_of(self.task)

    def score(self, logits: Float[Tensor, "prompt pos vocab"], metric: Callable | None = None) -> Float[Tensor, "prompt"]:
        """The metric (the task's, or ``metric``) from full logits, read at each prompt's own last token."""
        return (metric or self.metric)(final_logits(logits, self.last), self)


@dataclass
class TaskDataset:
    """A task's prompt pairs for one tokenizer, with everything needed to rebuild and describe them."""

    task: Task
    model_id: str
    seed: int
    variant: str
    clean_prompts: list[str]
    corrupted_prompts: list[str]
    clean_ids: list[list[int]]
    corrupted_ids: list[list[int]]
    answers: Int[Tensor, "prompt n_answers"]
    answer_strings: list[tuple[str, ...]]
    candidates: Int[Tensor, "n_candidates"] | None = None
    pad_id: int = 0
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clean_prompts)

    @property
    def metric(self) -> Callable[[Tensor, Batch], Tensor]:
        return metric_of(self.task)

    def batch(self, index: Sequence[int] | None = None) -> Batch:
        """The prompts at ``index`` (all by default) as one right-padded :class:`Batch`."""
        index = range(len(self)) if index is None else index
        clean = [self.clean_ids[i] for i in index]
        corrupted = [self.corrupted_ids[i] for i in index]
        width = max(map(len, clean))
        pad = lambda rows: torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows])  # noqa: E731
        return Batch(
            task=self.task,
            clean=pad(clean),
            corrupted=pad(corrupted),
            answers=self.answers[list(index)],
            last=torch.tensor([len(r) - 1 for r in clean]),
            candidates=self.candidates,
            pad_id=self.pad_id,
        )

    def head(self, k: int) -> "TaskDataset":
        """The first ``k`` prompt pairs, as a dataset of their own (its ``variant`` says so, so results of
        the two never share a cache entry: ``make_dataset(n=k)`` may hold other prompts)."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self):
            raise TaskError(f"k must be an int in 1 … {len(self)}, got {k!r}")
        if k == len(self):
            return self
        pick = lambda items: items[:k]  # noqa: E731
        return replace(self, variant=f"{self.variant}-first{k}of{len(self)}", clean_prompts=pick(self.clean_prompts),
                       corrupted_prompts=pick(self.corrupted_prompts), clean_ids=pick(self.clean_ids),
                       corrupted_ids=pick(self.corrupted_ids), answers=self.answers[:k], answer_strings=pick(self.answer_strings))

    def rows(self, index: Sequence[int]) -> "TaskDataset":
        """The prompt pairs at ``index`` (in that order), as a dataset of their own whose ``variant`` names them, so that
        results on a part of a dataset never share a cache entry with results on another part."""
        index = [int(i) for i in (index.tolist() if hasattr(index, "tolist") else index)]
        if not index or any(not 0 <= i < len(self) for i in index):
            raise TaskError(f"rows must be a non-empty list of indices in 0 … {len(self) - 1}, got {index!r}")
        pick = lambda items: [items[i] for i in index]  # noqa: E731
        named = "-".join(map(str, index)) if len(index) <= 8 else hashlib.sha256(str(index).encode()).hexdigest()[:12]
        return replace(self, variant=f"{self.variant}-rows{named}of{len(self)}", clean_prompts=pick(self.clean_prompts),
                       corrupted_prompts=pick(self.corrupted_prompts), clean_ids=pick(self.clean_ids),
                       corrupted_ids=pick(self.corrupted_ids), answers=self.answers[index], answer_strings=pick(self.answer_strings))

    def row(self, i: int) -> "TaskDataset":
        """The ``i``-th prompt pair alone, as a one-prompt dataset (its ``variant`` says which row)."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self):
            raise TaskError(f"row must be an int in 0 … {len(self) - 1}, got {i!r}")
        return self.rows([i])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Consecutive batches of at most ``batch_size`` prompts."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise TaskError(f"batch_size must be a positive int, got {batch_size!r}")
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))


# --------------------------------------------------------------------------- metrics


def final_logits(logits: Float[Tensor, "prompt pos vocab"], last: Int[Tensor, "prompt"]) -> Float[Tensor, "prompt vocab"]:
    """Each prompt's logits at its own last token (never the last column of a padded batch)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), last.to(logits.device)]


def logit_diff(final: Float[Tensor, "*copies prompt vocab"], batch: Batch) -> Float[Tensor, "*copies prompt"]:
    """logit(correct answer) − logit(wrong answer), from each prompt's last-token logits.

    Leading dimensions broadcast: ``[copies, prompt, vocab]`` (the kernels' widened passes,
    copy ``c`` of prompt ``p``) gives ``[copies, prompt]``.
    """
    answers = batch.answers.to(final.device)
    pick = lambda column: final.gather(-1, answers[:, column:column + 1].expand(*final.shape[:-1], 1))[..., 0]  # noqa: E731
    return pick(0) - pick(1)


def prob_diff(final: Float[Tensor, "*copies prompt vocab"], batch: Batch) -> Float[Tensor, "*copies prompt"]:
    """Greater-Than: probability on answers above the clean threshold minus on the others.

    ``batch.candidates`` are the answer tokens in increasing order (years 00…99, or digits
    0…9) and ``batch.answers[:, 0]`` the index of the clean prompt's threshold among them.
    Two-digit years: greater minus ≤ (Hanna et al.). Next digit: greater minus smaller,
    the equal digit left out (``batch.answers[:, 1] == 1`` marks that variant). Leading
    dimensions broadcast as in :func:`logit_diff`.
    """
    probs = final.softmax(dim=-1)
    candidates = batch.candidates.to(probs.device)
    mass = probs[..., candidates]  # [..., prompt, n_candidates]
    order = torch.arange(len(candidates), device=probs.device)
    threshold = batch.answers[:, :1].to(probs.device)
    strict = batch.answers[:, 1:2].to(probs.device).bool()
    greater = order > threshold
    others = torch.where(strict, order < threshold, order <= threshold)
    return (mass * greater).sum(-1) - (mass * others).sum(-1)


METRICS: dict[Task, Callable[[Tensor, Batch], Tensor]] = {
    Task.IOI: logit_diff,
    Task.GREATER_THAN: prob_diff,
    Task.GENDER_BIAS: logit_diff,
    Task.CAPITAL_COUNTRY: logit_diff,
}


def metric_of(task) -> Callable[[Tensor, Batch], Tensor]:
    """The metric of a built-in :class:`Task`, or of a task read from a file (:class:`ig_ap.task_files.FileTask`)."""
    return METRICS[task] if isinstance(task, Task) else task.metric


def normalized(
    values: Float[Tensor, "prompt"], clean: Float[Tensor, "prompt"], corrupted: Float[Tensor, "prompt"]
) -> Float[Tensor, "prompt"]:
    """Map a metric to 0 at the corrupted run and 1 at the clean run, prompt by prompt."""
    return (values - corrupted) / (clean - corrupted)


@torch.no_grad()
def evaluate(model, dataset: TaskDataset, batch_size: int = 32) -> tuple[Float[Tensor, "prompt"], Float[Tensor, "prompt"]]:
    """The metric on the clean and on the corrupted prompts, per prompt."""
    device = model_info(model).device
    clean, corrupted = [], []
    for batch in dataset.batches(batch_size):
        batch = batch.to(device)
        clean.append(batch.score(model(batch.clean, return_type="logits")).cpu())
        corrupted.append(batch.score(model(batch.corrupted, return_type="logits")).cpu())
    return torch.cat(clean), torch.cat(corrupted)


# --------------------------------------------------------------------------- generators


class _Tok:
    """Tokenizer helpers for one model (BOS-aware, cached)."""

    def __init__(self, info: ModelInfo):
        self.info = info
        self.tokenizer = info.tokenizer
        self._cache: dict[str, list[int]] = {}

    def ids(self, text: str, bos: bool = True) -> list[int]:
        if text not in self._cache:
            self._cache[text] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = self._cache[text]
        return [self.tokenizer.bos_token_id, *ids] if bos and self.info.prepend_bos else list(ids)

    def single(self, text: str) -> int | None:
        """The token id if ``text`` is exactly one token, else None."""
        ids = self.ids(text, bos=False)
        return ids[0] if len(ids) == 1 else None

    def pad_id(self) -> int:
        t = self.tokenizer
        for candidate in (t.pad_token_id, t.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0


@dataclass
class _Pair:
    clean: str
    corrupted: str
    answers: tuple[int, ...]
    answer_strings: tuple[str, ...]


IOI_CORRUPTIONS = ("abc", "abb", "swap")
"""IOI corruptions: a third name as second subject (``abc``), two other names (``abb``), or the
indirect object as second subject (``swap``: the corrupted prompt's answer is the clean one's subject)."""


def _ioi(tok: _Tok, n: int, rng: random.Random, corruption: str = "abc"):
    if corruption not in IOI_CORRUPTIONS:
        raise TaskError(f"unknown IOI corruption {corruption!r}; choose one of {', '.join(map(repr, IOI_CORRUPTIONS))}")
    names = [x for x in NAMES if tok.single(" " + x) is not None]
    if len(names) < 8:
        raise TaskError(
            f"this tokenizer has only {len(names)} single-token names (with a leading space); IOI needs at least 8"
        )
    forms = [(t, order) for t in IOI_TEMPLATES for order in ("ABBA", "BABA")]
    capacity = len(forms) * len(names) * (len(names) - 1)
    _check_n(n, capacity, "IOI (templates × name pairs)")

    def fill(template, order, a, b, s2, place, obj):
        first, second = (a, b) if order == "ABBA" else (b, a)
        text = template.replace("[B] and [A]", f"{first} and {second}", 1)
        text = text.replace("[B]", s2).replace("[PLACE]", place).replace("[OBJECT]", obj)
        return text

    pairs, seen = [], set()
    while len(pairs) < n:
        template, order = rng.choice(forms)
        a, b = rng.sample(names, 2)
        key = (template, order, a, b)
        if key in seen:
            continue
        seen.add(key)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        clean = fill(template, order, a, b, b, place, obj)
        others = [x for x in names if x not in (a, b)]
        if corruption == "abc":
            corrupted = fill(template, order, a, b, rng.choice(others), place, obj)
        elif corruption == "swap":  # the same names, the other one as subject: the answer flips to b
            corrupted = fill(template, order, a, b, a, place, obj)
        else:
            d, e = rng.sample(others, 2)
            corrupted = fill(template, order, d, e, e, place, obj)
        pairs.append(_Pair(clean, corrupted, (tok.single(" " + a), tok.single(" " + b)), (" " + a, " " + b)))
    return pairs, f"corruption {corruption}", {"corruption": corruption}


def _greater_than_variant(tok: _Tok) -> tuple[str, list[int]]:
    """``two-digit`` (year tokens 00…99) or ``next-digit`` (digit tokens 0…9), and the candidate ids."""
    years = [tok.single(f"{y:02d}") for y in range(100)]
    centuries = [tok.single(f" {c}") for c in GREATER_THAN_CENTURIES]
    splits_as_pairs = all(tok.ids(f" {c}{y:02d}", bos=False) == [tok.single(f" {c}"), tok.single(f"{y:02d}")]
                          for c in (11, 17) for y in (1, 32, 99))
    if None not in years and None not in centuries and splits_as_pairs:
        return "two-digit", years
    digits = [tok.single(str(d)) for d in range(10)]
    if None not in digits and all(tok.ids(f" 17{y:02d}", bos=False)[-2:] == [digits[y // 10], digits[y % 10]] for y in (1, 32, 99)):
        return "next-digit", digits
    raise TaskError(
        "this tokenizer has neither single-token two-digit years nor single-token digits; Greater-Than cannot be built for it"
    )


def _greater_than(tok: _Tok, n: int, rng: random.Random):
    variant, candidates = _greater_than_variant(tok)
    # Start years YY: two-digit: 02…98 (Hanna et al.); next digit: tens digit 1…8 so that both
    # greater and smaller digits exist.
    yys = list(range(2, 99)) if variant == "two-digit" else [y for y in range(10, 90)]
    capacity = len(GREATER_THAN_NOUNS) * len(GREATER_THAN_CENTURIES) * len(yys)
    _check_n(n, capacity, "Greater-Than (nouns × centuries × years)")
    pairs, seen = [], set()
    while len(pairs) < n:
        noun, xx, yy = rng.choice(GREATER_THAN_NOUNS), rng.choice(GREATER_THAN_CENTURIES), rng.choice(yys)
        if (noun, xx, yy) in seen:
            continue
        seen.add((noun, xx, yy))
        clean = f"The {noun} lasted from the year {xx}{yy:02d} to the year {xx}"
        corrupted = f"The {noun} lasted from the year {xx}01 to the year {xx}"
        if variant == "two-digit":
            answers, strings = (yy, 0), (f"> {yy:02d}", f"≤ {yy:02d}")
        else:
            answers, strings = (yy // 10, 1), (f"> {yy // 10}", f"< {yy // 10}")
        pairs.append(_Pair(clean, corrupted, answers, strings))
    note = (
        "answers are two-digit year tokens (Hanna et al. 2023): probability on years greater than the start "
        "year minus probability on the others"
        if variant == "two-digit"
        else "digits are single tokens in this tokenizer, so the answer is the next digit (the tens digit of the end "
        "year): probability on tens digits greater than the start year's minus probability on smaller ones, the "
        "equal digit left out"
    )
    return pairs, note, {"variant": variant, "candidates": candidates}


def _gender_bias(tok: _Tok, n: int, rng: random.Random):
    he, she = tok.single(" he"), tok.single(" she")
    man, woman = " man", " woman"
    if he is None or she is None:
        raise TaskError("' he' and ' she' are not single tokens in this tokenizer; Gender-Bias cannot be built for it")
    by_gender = {}
    for gender, professions, swap in (("female", FEMALE_PROFESSIONS, man), ("male", MALE_PROFESSIONS, woman)):
        usable = []
        for template in GENDER_TEMPLATES:
            for profession in professions:
                clean = template.format(profession)
                corrupted = template.format(swap.strip())
                if len(tok.ids(clean)) == len(tok.ids(corrupted)):  # pairs of unequal length are dropped
                    usable.append((clean, corrupted))
        by_gender[gender] = usable
    per_gender = min(len(v) for v in by_gender.values())
    _check_n(n, 2 * per_gender, "Gender-Bias (templates × professions of the same token length as 'man'/'woman', balanced)")
    pairs = []
    half = {"female": (n + 1) // 2, "male": n // 2}
    for gender, count in half.items():
        for clean, corrupted in rng.sample(by_gender[gender], count):
            answers = (she, he) if gender == "female" else (he, she)
            strings = (" she", " he") if gender == "female" else (" he", " she")
            pairs.append(_Pair(clean, corrupted, answers, strings))
    rng.shuffle(pairs)
    return pairs, "balanced: half female-stereotyped professions (corrupted with 'man'), half male ('woman')", {}


def _capital_country(tok: _Tok, n: int, rng: random.Random):
    entries = []
    for capital, country in CAPITALS:
        first = tok.ids(" " + country, bos=False)[0]
        entries.append((capital, country, first, len(tok.ids(f"{capital}, the capital of"))))
    by_length: dict[int, list] = {}
    for entry in entries:
        by_length.setdefault(entry[3], []).append(entry)
    usable = [e for e in entries if any(o[2] != e[2] for o in by_length[e[3]])]
    _check_n(n, len(usable), "Capital-Country (capitals with another capital of the same token length)")
    pairs = []
    for capital, country, first, length in rng.sample(usable, n):
        others = [o for o in by_length[length] if o[2] != first]
        other = rng.choice(others)
        pairs.append(_Pair(
            f"{capital}, the capital of", f"{other[0]}, the capital of", (first, other[2]),
            (" " + country, " " + other[1]),
        ))
    return pairs, "answers are the countries' first tokens; the corrupted capital has the same token length", {}


def _check_n(n, capacity: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TaskError(f"n must be a positive int, got {n!r}")
    if n > capacity:
        raise TaskError(f"n={n} is more than {what} can give without repeats ({capacity}); ask for at most {capacity}")


_GENERATORS = {
    Task.IOI: _ioi,
    Task.GREATER_THAN: _greater_than,
    Task.GENDER_BIAS: _gender_bias,
    Task.CAPITAL_COUNTRY: _capital_country,
}


def make_dataset(task: Task | str, model, n: int | None = None, seed: int = 0, **options) -> TaskDataset:
    """Build ``n`` prompt pairs of ``task`` for ``model``'s tokenizer, reproducibly from ``seed``.

    Args:
        task: a :class:`Task` or its name (``"ioi"``, ``"greater_than"``, ``"gender_bias"``,
            ``"capital_country"``), or the path of a task file (``.csv``, ``.jsonl``, ``.json``:
            :func:`ig_ap.task_files.load_task_file`, whose ``n=None`` reads every row and whose
            options ``metric`` and ``on_bad_rows`` pass through).
        model: a bridge from :func:`ig_ap.models.load_model` (or its :class:`ModelInfo`).
        n: number of prompt pairs, each different (100 by default; a task file's rows, all by default).
        seed: the same seed gives the same dataset.
        options: task options; IOI takes ``corruption="abc"`` (default), ``"abb"`` or ``"swap"``
            (:data:`IOI_CORRUPTIONS`).

    Raises:
        TaskError: unknown task, ``n`` < 1 or more than the task can give without repeats,
            or a tokenizer that leaves too few usable names, years or words.
    """
    from ig_ap import task_files  # it builds on this module

    if task_files.is_task_file(task):
        return task_files.load_task_file(task, model, n=n, seed=seed, **options)
    task = Task.parse(task)
    n = 100 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TaskError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TaskError(f"seed must be an int, got {seed!r}")
    if options and task is not Task.IOI:
        raise TaskError(f"task {task.value} takes no options, got {', '.join(options)}")
    info = model if isinstance(model, ModelInfo) else model_info(model)
    tok = _Tok(info)
    pairs, notes, extra = _GENERATORS[task](tok, n, random.Random(f"{task.value}/{seed}"), **options)
    clean_ids = [tok.ids(p.clean) for p in pairs]
    corrupted_ids = [tok.ids(p.corrupted) for p in pairs]
    for c, k, p in zip(clean_ids, corrupted_ids, pairs):
        if len(c) != len(k):  # a generator bug, never the user's input
            raise AssertionError(f"clean and corrupted prompts differ in length: {p.clean!r} / {p.corrupted!r}")
    candidates = extra.pop("candidates", None)
    return TaskDataset(
        task=task,
        model_id=info.model_id,
        seed=seed,
        variant=extra.get("variant") or extra.get("corruption") or "default",
        clean_prompts=[p.clean for p in pairs],
        corrupted_prompts=[p.corrupted for p in pairs],
        clean_ids=clean_ids,
        corrupted_ids=corrupted_ids,
        answers=torch.tensor([p.answers for p in pairs], dtype=torch.long),
        answer_strings=[p.answer_strings for p in pairs],
        candidates=None if candidates is None else torch.tensor(candidates, dtype=torch.long),
        pad_id=tok.pad_id(),
        notes=notes,
        extra=extra,
    )


def parse_tasks(tasks: "str | Sequence[Task | str]") -> list[Task | str]:
    """Tasks named by a chapter parameter: ``"all"``, one name, comma-separated names or a list; a task file's path
    (``.csv``, ``.jsonl``, ``.json``) stands for itself (:func:`make_dataset` reads it)."""
    from ig_ap.task_files import is_task_file  # it builds on this module

    if isinstance(tasks, str):
        tasks = list(Task) if tasks.strip().lower() == "all" else [t.strip() for t in tasks.split(",") if t.strip()]
    parsed = []
    for task in tasks:
        if is_task_file(task):
            if not Path(str(task)).expanduser().is_file():
                raise TaskError(f"{task}: no such task file")
            parsed.append(str(task))
        else:
            parsed.append(Task.parse(task))
    if not parsed:
        raise TaskError("no task given; name one or more of " + ", ".join(t.value for t in Task) + ", or 'all'")
    return list(dict.fromkeys(parsed))


def task_title(task) -> str:
    """How pages name a task: the built-in tasks' titles (:data:`TASK_TITLES`), a task file's stem."""
    if isinstance(task, Task):
        return TASK_TITLES[task]
    if isinstance(task, (str, Path)):
        return Path(task).stem
    return task.title  # a FileTask


def solved_pair(model, task, seed: int = 0) -> TaskDataset:
    """The first prompt pair of ``task`` (a built-in task's seeded prompts, or a task file's rows in order) that the model
    solves, its clean metric above its corrupted one, as a one-prompt dataset scored by the task's own metric.

    Chapter 1's pair when the book is built on a task file. A :class:`TaskError` when the
    model solves no pair of the task.
    """
    dataset = make_dataset(task, model, seed=seed)
    clean, corrupted = evaluate(model, dataset)
    solved = (clean > corrupted).nonzero().flatten().tolist()
    if not solved:
        raise TaskError(f"{task_title(task)}: {model_info(model).model_id} solves none of its {len(dataset)} pairs (the clean "
                        "metric is never above the corrupted one); check the answers, or use another model")
    return dataset.row(solved[0])


METRIC_NAMES = {"logit_diff": "logit difference", "prob_diff": "probability difference", "greater_than": "probability difference"}
"""How pages name a task's metric, by the name of a task file's metric (``FileTask.metric_name``)."""


def metric_name(task) -> str:
    """How pages name the metric of a built-in :class:`Task` or of a task read from a file."""
    if isinstance(task, Task):
        return "probability difference" if task is Task.GREATER_THAN else "logit difference"
    return METRIC_NAMES[task.metric_name]


def prompt_pair(model, clean: str, corrupted: str, answer: str, distractor: str, task: Task | str = Task.IOI) -> TaskDataset:
    """One hand-written prompt pair as a one-prompt dataset, scored by logit(answer) − logit(distractor).

    ``answer`` and ``distractor`` must each be one token (with their leading space, e.g.
    ``" Mary"``) and the two prompts must tokenize to the same length; otherwise
    :class:`TaskError` says which and how to fix it. ``task`` names the task whose
    logit-difference metric is used (not Greater-Than, whose metric needs year candidates).
    """
    task = Task.parse(task)
    if task is Task.GREATER_THAN:
        raise TaskError("prompt_pair scores a logit difference; use make_dataset('greater_than', ...) for Greater-Than")
    info = model if isinstance(model, ModelInfo) else model_info(model)
    tok = _Tok(info)
    ids = []
    for name in (answer, distractor):
        token = tok.single(name)
        if token is None:
            pieces = [tok.tokenizer.decode([i]) for i in tok.ids(name, bos=False)]
            raise TaskError(f"{name!r} is {len(pieces)} tokens for {info.model_id} ({pieces}); give a single-token answer, e.g. with a leading space")
        ids.append(token)
    clean_ids, corrupted_ids = tok.ids(clean), tok.ids(corrupted)
    if len(clean_ids) != len(corrupted_ids):
        raise TaskError(
            f"the clean prompt is {len(clean_ids)} tokens and the corrupted one {len(corrupted_ids)}; "
            "patching needs prompts of the same token length: change words of the same length"
        )
    digest = hashlib.sha256("\x00".join((clean, corrupted, answer, distractor)).encode()).hexdigest()[:12]
    return TaskDataset(
        task=task, model_id=info.model_id, seed=0, variant=f"pair-{digest}",
        clean_prompts=[clean], corrupted_prompts=[corrupted], clean_ids=[clean_ids], corrupted_ids=[corrupted_ids],
        answers=torch.tensor([ids], dtype=torch.long), answer_strings=[(answer, distractor)],
        pad_id=tok.pad_id(), notes="a hand-written prompt pair",
    )


# --------------------------------------------------------------------------- summary table


def summary(model, n: int = 100, seed: int = 0, tasks: Sequence[Task | str] | None = None, batch_size: int = 32):
    """Per task: prompts, clean and corrupted metric (mean, sd), fraction of prompts right (metric > 0), variant.

    ``tasks``: built-in tasks or task files (all built-in tasks by default); ``n`` prompts of
    each, or every row of a task file that has at most ``n``.

    Returns a pandas DataFrame indexed by task title, with numeric columns; :func:`format_summary`
    turns it into the table the README and the book show.
    """
    import pandas as pd

    from ig_ap.task_files import is_task_file  # it builds on this module

    rows = []
    for task in tasks or list(Task):
        dataset = make_dataset(task, model, n=None if is_task_file(task) else n, seed=seed)
        if len(dataset) > n:  # a task file's rows: all of them, or a sample of n
            dataset = make_dataset(task, model, n=n, seed=seed)
        clean, corrupted = evaluate(model, dataset, batch_size=batch_size)
        rows.append({
            "task": task_title(dataset.task),
            "prompts": len(dataset),
            "metric": metric_name(dataset.task),
            "clean mean": clean.mean().item(),
            "clean sd": clean.std().item(),
            "corrupted mean": corrupted.mean().item(),
            "corrupted sd": corrupted.std().item(),
            "clean right": (clean > 0).float().mean().item(),
            "corrupted right": (corrupted > 0).float().mean().item(),
            "variant": dataset.variant,
        })
    return pd.DataFrame(rows).set_index("task")


def format_summary(table):
    """The summary as display strings: 'mean ± sd' and percentages."""
    import pandas as pd

    return pd.DataFrame({
        "prompts": table["prompts"],
        "metric": table["metric"],
        "clean (mean ± sd)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(table["clean mean"], table["clean sd"])],
        "corrupted (mean ± sd)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(table["corrupted mean"], table["corrupted sd"])],
        "clean right": [f"{x:.0%}" for x in table["clean right"]],
        "corrupted right": [f"{x:.0%}" for x in table["corrupted right"]],
        "variant": table["variant"],
    }, index=table.index)


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m ig_ap.tasks", description="The tasks' metrics on a model.")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--tasks", nargs="*", default=None, help="subset of: " + " ".join(t.value for t in Task))
    args = parser.parse_args(argv)
    try:
        tasks = [Task.parse(t) for t in args.tasks] if args.tasks else None
        model = load_model(args.model, device=args.device)
        table = summary(model, n=args.n, seed=args.seed, tasks=tasks)
    except (TaskError, UnknownModelError, ModelUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"model {model_info(model).model_id}, seed {args.seed}; 'right' = metric > 0")
    shown = format_summary(table)
    print(shown.to_markdown() if _has_tabulate() else shown.to_string())
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
