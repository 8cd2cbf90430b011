"""Your own task: prompt pairs read from a file, every row checked before any model runs.

The idea: a circuit task is a list of pairs, a *clean* prompt and a *corrupted* one of the
same token length, with the answer(s) the clean prompt should get and the wrong answer(s)
the corrupted one pushes towards. :func:`load_task_file` reads such a file into the same
:class:`~ig_ap.tasks.TaskDataset` the built-in generators give, whose ``task`` is a
:class:`FileTask`: the package takes it wherever it takes a task (``compute``, the kernels,
the results cache, which keys it by the file's *content* hash, not its path).

Formats, told apart by extension and columns:

=========================  ======================================================================
ours (``.csv``, ``.jsonl``)  columns ``clean, corrupted, answer, wrong`` and optionally ``metric``
                           (``logit_diff``, the default, or ``prob_diff``); several answers or wrong
                           answers in a CSV cell are separated by ``|`` (spaces are kept: write
                           ``" Mary| Anne"``), in JSONL they may be lists
auto-circuit (``.json``)   ``{"prompts": [{"clean", "corrupt", "answers": [...], "wrong_answers": [...]}]}``
EAP-IG (``.csv``)           its IOI files' ``clean, corrupted, correct_idx, incorrect_idx`` (token ids of the
                           model's tokenizer; ``corrupted_hard`` and an unnamed index column are read
                           past); its Gender-Bias files' ``clean_answer_idx, corrupted_answer_idx`` (and
                           ``label``); its Capital-Country (``fact-retrieval-comma``) files' ``country_idx,
                           corrupted_country_idx`` (and the names beside them); or its Greater-Than
                           files' ``clean, corrupted, label`` or ``clean, corrupted, correct_idx`` (the
                           start year's last two digits, not a token id), scored by the built-in
                           Greater-Than metric for this tokenizer
=========================  ======================================================================

The metric: ``logit_diff`` is the mean logit of the answers minus the mean logit of the
wrong answers (with one of each, the built-in tasks' logit difference exactly);
``prob_diff`` the summed probability of the answers minus that of the wrong answers.

Checked for every row before any model run, each with one line naming the file, the row
and the fix: empty cells, unknown columns, duplicate rows, clean and corrupted prompts of
different token lengths, answers that are not one token of this tokenizer, token ids that do
not decode to one token of it, an answer that is also a wrong answer (EAP-IG's Capital-Country
file gives Saint Kitts and Saint Lucia the same first token). ``on_bad_rows="drop"`` drops such rows instead and says how
many and which (a warning, and the dataset's ``notes`` and ``extra["dropped"]``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ig_ap.models import ModelInfo, model_info
from ig_ap.tasks import Batch, TaskDataset, TaskError, _greater_than_variant, _Tok, prob_diff

SUFFIXES = (".csv", ".jsonl", ".json")
ON_BAD_ROWS = ("raise", "drop")
OURS = ("clean", "corrupted", "answer", "wrong", "metric")
EAP_IG = ("clean", "corrupted", "correct_idx", "incorrect_idx", "corrupted_hard")
EAP_IG_LAYOUTS: dict[str, tuple[tuple[str, str], tuple[str, ...]]] = {
    "EAP-IG": (("correct_idx", "incorrect_idx"), EAP_IG),
    "EAP-IG Gender-Bias": (("clean_answer_idx", "corrupted_answer_idx"),
                           ("clean", "corrupted", "clean_answer_idx", "corrupted_answer_idx", "label")),
    "EAP-IG Capital-Country": (("country_idx", "corrupted_country_idx"),
                               ("clean", "capital", "country", "country_idx", "corrupted", "corrupted_capital",
                                "corrupted_country", "corrupted_country_idx")),
}
"""EAP-IG's CSV layouts with token-id columns: (answer id column, wrong-answer id column) and every column its files
hold, as its IOI, Gender-Bias and Capital-Country (``fact-retrieval-comma``) files publish them."""
GREATER_THAN_LAYOUT = "EAP-IG Greater-Than"
ANSWER_SEPARATOR = "|"


def answer_logit_diff(final: Float[Tensor, "*copies prompt vocab"], batch: Batch) -> Float[Tensor, "*copies prompt"]:
    """Mean logit of each prompt's answers minus the mean logit of its wrong answers.

    ``batch.answers`` is ``[prompt, 2K]``: K answer ids, then K wrong-answer ids, each side
    padded with −1. With one of each it is :func:`ig_ap.tasks.logit_diff` exactly. Leading
    dimensions of ``final`` broadcast.
    """
    return _answer_mass(final, batch, lambda picked: picked)


def answer_prob_diff(final: Float[Tensor, "*copies prompt vocab"], batch: Batch) -> Float[Tensor, "*copies prompt"]:
    """Summed probability of each prompt's answers minus that of its wrong answers (layout as :func:`answer_logit_diff`)."""
    return _answer_mass(final.softmax(-1), batch, None)


def _answer_mass(values: Tensor, batch: Batch, mean) -> Tensor:
    answers = batch.answers.to(values.device)
    k = answers.shape[1] // 2
    valid = (answers >= 0).to(values.dtype)  # [prompt, 2K]
    picked = values.gather(-1, answers.clamp_min(0).expand(*values.shape[:-1], answers.shape[1]))  # [..., prompt, 2K]
    picked = picked * valid
    right, wrong = picked[..., :k].sum(-1), picked[..., k:].sum(-1)
    if mean is not None:
        right, wrong = right / valid[:, :k].sum(-1), wrong / valid[:, k:].sum(-1)
    return right - wrong


FILE_METRICS: dict[str, Callable[[Tensor, Batch], Tensor]] = {"logit_diff": answer_logit_diff, "prob_diff": answer_prob_diff,
                                                              "greater_than": prob_diff}
"""The metrics a task file may name; ``greater_than`` is the built-in Greater-Than's (EAP-IG's Greater-Than layout)."""


@dataclass(frozen=True)
class FileTask:
    """A task read from a file: what the package takes wherever it takes a :class:`~ig_ap.tasks.Task`.

    ``value``, the name results are keyed under, is 12 hex digits of the SHA-256 of the file's
    bytes: the same file under another path or name shares its results, an edited file never
    does. ``title`` is the file's stem, for pages and tables.
    """

    name: str  # the file's stem
    sha256: str  # of the file's bytes
    metric_name: str = "logit_diff"

    @property
    def value(self) -> str:
        return f"file-{self.sha256[:12]}"

    @property
    def title(self) -> str:
        return self.name

    @property
    def metric(self) -> Callable[[Tensor, Batch], Tensor]:
        return FILE_METRICS[self.metric_name]


def is_task_file(task) -> bool:
    """Whether ``task`` (a task argument) names a task file rather than a built-in task."""
    return isinstance(task, (str, Path)) and Path(str(task)).suffix.lower() in SUFFIXES


@dataclass
class _Row:
    number: int  # 1-based, as a spreadsheet counts data rows
    clean: str
    corrupted: str
    answers: tuple  # strings, or token ids (EAP-IG)
    wrong: tuple
    metric: str | None = None
    columns: tuple[str, str] = ("answer", "wrong")  # where the answers and the wrong answers were read from


class _Problems:
    """Collects bad rows: the first one raises (``on_bad_rows="raise"``) or all are dropped and reported."""

    def __init__(self, path: Path, on_bad_rows: str):
        self.path, self.on_bad_rows, self.dropped = path, on_bad_rows, []

    def __call__(self, row: int, problem: str, fix: str) -> None:
        if self.on_bad_rows == "raise":
            raise TaskError(f"{self.path}, row {row}: {problem}; {fix} (or pass on_bad_rows='drop' to skip such rows)")
        self.dropped.append((row, problem))


def load_task_file(
    path: str | Path,
    model,
    n: int | None = None,
    seed: int = 0,
    metric: str | None = None,
    on_bad_rows: str = "raise",
) -> TaskDataset:
    """Read a task file into a dataset for ``model``'s tokenizer, every row checked first (formats: module text).

    Args:
        path: a ``.csv``, ``.jsonl`` or ``.json`` file.
        model: a bridge (or its :class:`~ig_ap.models.ModelInfo`).
        n: how many rows: all (``None``, in the file's order) or a sample of ``n`` drawn with ``seed``.
        metric: ``"logit_diff"`` or ``"prob_diff"``; else the file's ``metric`` column (one value for
            all rows), else ``"logit_diff"``.
        on_bad_rows: ``"raise"`` (the first bad row is a :class:`~ig_ap.tasks.TaskError`) or
            ``"drop"`` (bad rows are left out and reported).
    """
    path = Path(path).expanduser()
    if on_bad_rows not in ON_BAD_ROWS:
        raise TaskError(f"on_bad_rows must be one of {', '.join(map(repr, ON_BAD_ROWS))}, got {on_bad_rows!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise TaskError(f"n must be a positive int or None (every row), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TaskError(f"seed must be an int, got {seed!r}")
    if metric is not None and metric not in FILE_METRICS:
        raise TaskError(f"metric must be one of {', '.join(FILE_METRICS)}, got {metric!r}")
    if path.suffix.lower() not in SUFFIXES:
        raise TaskError(f"{path}: a task file is {', '.join(SUFFIXES)}; got {path.suffix or 'no extension'}")
    if not path.is_file():
        raise TaskError(f"{path}: no such task file")
    data = path.read_bytes()
    problems = _Problems(path, on_bad_rows)
    rows, layout = _read(path, data.decode("utf-8-sig"), problems)
    info = model if isinstance(model, ModelInfo) else model_info(model)
    tok = _Tok(info)
    candidates, gt_variant = None, None
    if layout == GREATER_THAN_LAYOUT:
        if metric not in (None, "greater_than"):
            raise TaskError(f"{path}: EAP-IG's Greater-Than layout is scored by the Greater-Than metric; leave metric unset")
        metric, (gt_variant, candidates) = "greater_than", _greater_than_variant(tok)
    else:
        metric = _metric_of(path, rows, metric)
    kept, seen = [], {}
    for row in rows:
        checked = (_check_greater_than(row, tok, info, gt_variant, problems) if layout == GREATER_THAN_LAYOUT
                   else _check(row, tok, info, layout, problems))
        if checked is None:
            continue
        fingerprint = (row.clean, row.corrupted, checked[2], checked[3])
        if fingerprint in seen:
            problems(row.number, f"the same pair and answers as row {seen[fingerprint]}", "remove the duplicate")
            continue
        seen[fingerprint] = row.number
        kept.append((row, *checked))
    if problems.dropped:
        listed = ", ".join(f"{r} ({p})" for r, p in problems.dropped[:10]) + (" ..." if len(problems.dropped) > 10 else "")
        warnings.warn(f"{path}: dropped {len(problems.dropped)} of {len(rows)} rows: {listed}", stacklevel=2)
    if not kept:
        raise TaskError(f"{path}: no usable row ({len(rows)} read, {len(problems.dropped)} dropped)")
    if n is not None:
        if n > len(kept):
            raise TaskError(f"{path} has {len(kept)} usable rows; ask for n of at most {len(kept)} (or n=None)")
        chosen = sorted(random.Random(f"{path.stem}/{seed}").sample(range(len(kept)), n))
        kept = [kept[i] for i in chosen]
    width = max(max(len(a), len(w)) for _, _, _, a, w in kept)
    pad = lambda ids: list(ids) + [-1] * (width - len(ids))  # noqa: E731
    task = FileTask(path.stem, hashlib.sha256(data).hexdigest(), metric)
    dropped = [{"row": r, "problem": p} for r, p in problems.dropped]
    notes = f"read from {path.name} ({layout} layout): {len(kept)} of {len(rows)} rows"
    if dropped:
        notes += f"; {len(dropped)} dropped: " + ", ".join(f"row {d['row']} ({d['problem']})" for d in dropped)
    return TaskDataset(
        task=task, model_id=info.model_id, seed=seed,
        variant=f"{metric}-{'all' if n is None else f'sample{n}'}-{on_bad_rows}",
        clean_prompts=[r.clean for r, *_ in kept], corrupted_prompts=[r.corrupted for r, *_ in kept],
        clean_ids=[c for _, c, _, _, _ in kept], corrupted_ids=[k for _, _, k, _, _ in kept],
        answers=torch.tensor([pad(a) + pad(w) if candidates is None else list(a) for _, _, _, a, w in kept], dtype=torch.long),
        answer_strings=[tuple(tok.tokenizer.decode([i]) for i in (*a, *w)) if candidates is None else
                        ((f"> {a[0]:02d}", f"≤ {a[0]:02d}") if a[1] == 0 else (f"> {a[0]}", f"< {a[0]}")) for _, _, _, a, w in kept],
        candidates=None if candidates is None else torch.tensor(candidates, dtype=torch.long),
        pad_id=tok.pad_id(), notes=notes,
        extra={"path": str(path), "sha256": task.sha256, "layout": layout, "rows": len(rows), "dropped": dropped,
               "row_numbers": [r.number for r, *_ in kept]},
    )


# --------------------------------------------------------------------------- reading the layouts


def _read(path: Path, text: str, problems: _Problems) -> tuple[list[_Row], str]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_auto_circuit(path, text, problems), "auto-circuit"
    if suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}, line {number}: not JSON ({error.msg}); write one object per line") from None
            if not isinstance(records[-1][1], dict):
                raise TaskError(f"{path}, line {number}: not a JSON object; write one {{\"clean\": ...}} object per line")
        return [_ours(path, number, record, problems) for number, record in records], "ours"
    reader = csv.DictReader(text.splitlines())
    columns = [c for c in (reader.fieldnames or []) if c is not None]
    if not columns:
        raise TaskError(f"{path}: empty, or no header row; the first line names the columns (clean,corrupted,answer,wrong)")
    named = [c for c in columns if c.strip()]  # EAP-IG's files start with an unnamed index column
    for layout, ((answer_column, wrong_column), known) in EAP_IG_LAYOUTS.items():
        if {answer_column, wrong_column} <= set(named):
            unknown = sorted(set(named) - set(known))
            if unknown:
                raise TaskError(f"{path}: unknown column(s) {', '.join(unknown)} for {layout}'s layout ({', '.join(known)})")
            rows = []
            for number, record in enumerate(reader, 1):
                ids = []
                for column in (answer_column, wrong_column):
                    value = (record.get(column) or "").strip()
                    ids.append(int(value) if value.lstrip("-").isdigit() else value)
                rows.append(_Row(number, record.get("clean") or "", record.get("corrupted") or "", (ids[0],), (ids[1],),
                                 columns=(answer_column, wrong_column)))
            return rows, layout
    for label in ("label", "correct_idx"):  # EAP-IG's greater_than_data.csv, and eap-ig-faithfulness's data/greater-than files
        if set(named) == {"clean", "corrupted", label}:
            return [_Row(number, record.get("clean") or "", record.get("corrupted") or "", ((record.get(label) or "").strip(),), ())
                    for number, record in enumerate(reader, 1)], GREATER_THAN_LAYOUT
    unknown = sorted(set(named) - set(OURS))
    if unknown:
        raise TaskError(f"{path}: unknown column(s) {', '.join(unknown)}; the columns are {', '.join(OURS)} (metric optional), "
                        "or EAP-IG's clean, corrupted, correct_idx, incorrect_idx")
    missing = [c for c in OURS[:4] if c not in named]
    if missing:
        raise TaskError(f"{path}: missing column(s) {', '.join(missing)}; the columns are {', '.join(OURS)} (metric optional)")
    return [_ours(path, number, record, problems) for number, record in enumerate(reader, 1)], "ours"


def _answers(value) -> tuple:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return tuple(value.split(ANSWER_SEPARATOR)) if isinstance(value, str) else ((str(value),) if value is not None else ())


def _ours(path: Path, number: int, record: dict, problems: _Problems) -> _Row:
    unknown = sorted(set(k for k in record if k) - set(OURS))
    if unknown:
        raise TaskError(f"{path}, row {number}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(OURS)} (metric optional)")
    return _Row(number, record.get("clean") or "", record.get("corrupted") or "", _answers(record.get("answer")),
                _answers(record.get("wrong")), (record.get("metric") or "").strip() or None)


def _read_auto_circuit(path: Path, text: str, problems: _Problems) -> list[_Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise TaskError(f"{path}: not JSON ({error.msg} at line {error.lineno}); auto-circuit's layout is "
                        '{"prompts": [{"clean", "corrupt", "answers", "wrong_answers"}]}') from None
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list):
        raise TaskError(f'{path}: expected auto-circuit\'s layout {{"prompts": [{{"clean", "corrupt", "answers", "wrong_answers"}}]}}')
    keys = {"clean", "corrupt", "answers", "wrong_answers"}
    rows = []
    for number, record in enumerate(data["prompts"], 1):
        if not isinstance(record, dict):
            raise TaskError(f"{path}, prompt {number}: not an object; each prompt is {{\"clean\", \"corrupt\", \"answers\", \"wrong_answers\"}}")
        unknown = sorted(set(record) - keys)
        if unknown:
            raise TaskError(f"{path}, prompt {number}: unknown key(s) {', '.join(unknown)}; auto-circuit's keys are {', '.join(sorted(keys))}")
        rows.append(_Row(number, record.get("clean") or "", record.get("corrupt") or "", _answers(record.get("answers") or []),
                         _answers(record.get("wrong_answers") or [])))
    return rows


def _metric_of(path: Path, rows: Sequence[_Row], metric: str | None) -> str:
    named = {r.metric for r in rows if r.metric}
    if metric is not None:
        return metric
    if len(named) > 1:
        raise TaskError(f"{path}: the metric column holds {', '.join(sorted(named))}; one task has one metric: use one value")
    chosen = named.pop() if named else "logit_diff"
    if chosen not in FILE_METRICS:
        raise TaskError(f"{path}: unknown metric {chosen!r} in the metric column; use {' or '.join(FILE_METRICS)}")
    return chosen


def _check(row: _Row, tok: _Tok, info: ModelInfo, layout: str, problems: _Problems):
    """(clean ids, corrupted ids, answer ids, wrong ids) of a good row, or None after reporting the first problem."""
    for name, value in (("clean", row.clean), ("corrupted", row.corrupted)):
        if not value.strip():
            return problems(row.number, f"the {name} prompt is empty", f"write a {name} prompt")
    if not row.answers or not all(str(a) for a in row.answers):
        return problems(row.number, "no answer", "give the answer the clean prompt should get")
    if not row.wrong or not all(str(a) for a in row.wrong):
        return problems(row.number, "no wrong answer", "give the answer the corrupted prompt pushes towards")
    clean, corrupted = tok.ids(row.clean), tok.ids(row.corrupted)
    if len(clean) != len(corrupted):
        return problems(row.number, f"the clean prompt is {len(clean)} tokens and the corrupted one {len(corrupted)} for "
                        f"{info.model_id}", "patching needs prompts of the same token length: change words of the same length")
    if layout in EAP_IG_LAYOUTS:
        for column, side in zip(row.columns, (row.answers, row.wrong)):
            if not all(isinstance(a, int) for a in side):
                return problems(row.number, f"{column} {side[0]!r} is not a token id", "write the answer's token id (an integer)")
    ids = []
    for side in (row.answers, row.wrong):
        found = []
        for answer in side:
            token = _token_id(answer, tok, info)
            if isinstance(token, str):
                return problems(row.number, token, "give single-token answers (with their leading space, e.g. ' Mary')"
                                if layout not in EAP_IG_LAYOUTS else "write ids of this model's tokenizer")
            found.append(token)
        ids.append(tuple(found))
    same = sorted(set(ids[0]) & set(ids[1]))
    if same:
        text = tok.tokenizer.decode([same[0]])
        return problems(row.number, f"{text!r} (token {same[0]}) is both an answer and a wrong answer for {info.model_id}, "
                        "so the metric cannot tell the prompts apart", "give answers whose first tokens differ")
    return clean, corrupted, ids[0], ids[1]


def _check_greater_than(row: _Row, tok: _Tok, info: ModelInfo, variant: str, problems: _Problems):
    """A Greater-Than row (EAP-IG's ``clean, corrupted, label``, the label the clean start year's last two digits) as
    the built-in Greater-Than's answers: ``(YY, 0)`` over two-digit year tokens, ``(tens digit, 1)`` over digits."""
    for name, value in (("clean", row.clean), ("corrupted", row.corrupted)):
        if not value.strip():
            return problems(row.number, f"the {name} prompt is empty", f"write a {name} prompt")
    label = row.answers[0]
    if not label.isdigit() or not 0 <= int(label) <= 99:
        return problems(row.number, f"label {label!r} is not a year's last two digits (0 … 99)", "write the clean start year's last two digits")
    clean, corrupted = tok.ids(row.clean), tok.ids(row.corrupted)
    if len(clean) != len(corrupted):
        return problems(row.number, f"the clean prompt is {len(clean)} tokens and the corrupted one {len(corrupted)} for "
                        f"{info.model_id}", "patching needs prompts of the same token length: change words of the same length")
    yy = int(label)
    return clean, corrupted, ((yy, 0) if variant == "two-digit" else (yy // 10, 1)), ()


def _token_id(answer, tok: _Tok, info: ModelInfo) -> int | str:
    """The id of a one-token answer (a string, or an id to check), or a message saying what is wrong with it."""
    if isinstance(answer, int):
        vocab = len(tok.tokenizer)
        if not 0 <= answer < vocab:
            return f"token id {answer} is outside the vocabulary of {info.model_id} (0 … {vocab - 1})"
        text = tok.tokenizer.decode([answer])
        if tok.single(text) != answer:
            return f"token id {answer} decodes to {text!r}, which is not that one token of {info.model_id}"
        return answer
    token = tok.single(str(answer))
    if token is None:
        pieces = [tok.tokenizer.decode([i]) for i in tok.ids(str(answer), bos=False)]
        return f"the answer {answer!r} is {len(pieces)} tokens for {info.model_id} ({pieces})"
    return token
