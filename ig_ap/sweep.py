"""Sweeps: many attribution results at once, cut into shards that run as Ray tasks.

The idea: a *sweep* is the product models × tasks × directions × methods of one spec
(a YAML file), where a *method* is one kernel with its options (``{kernel: ap,
components: [heads]}``). Each element is one result, exactly the one that
:func:`ig_ap.results.compute` files under its key. A result is cut into *shards*: ranges
of prompts and groups of layers (every kernel attributes each prompt and each layer on
its own, so the shards of a result put together are the result). Each shard runs as a
Ray task, on a local Ray instance or on a cluster, and is written to the results cache
under its own key (the result's key plus its prompt range and layers), atomically like
every result. When all shards of a result are in the cache, :func:`merge` puts them
together and saves the whole under the result's own key, where the chapters find it.

The results cache is the only hand-off: a shard already there is never run again, so
a sweep that was killed resumes by running it again; a worker process that dies in the
middle of a shard (killed, out of memory) is retried by Ray (``max_retries``); a shard
that raises is recorded as failed (``status`` says why) and the rest go on.

Spec (YAML)::

    name: book-gpu                    # optional; the file's stem by default
    models: [gpt2]                    # names load_model takes
    tasks: [ioi, greater_than]        # or "all"
    directions: [denoising, noising]
    n_prompts: 100
    seed: 0                           # dataset seed (and the tiny models' weights)
    device: cuda                      # cpu or cuda: a task takes one GPU, or `threads` CPUs
    threads: 1                        # torch threads per CPU task
    max_retries: 3                    # Ray's retries of a task whose worker died
    shards: {prompts: 25, layers: 12} # prompts and layers per shard (layers: all by default)
    methods:
      ap: {kernel: ap, components: [heads]}
      ap_neurons: {kernel: ap, components: [neurons], neurons: null, shard_layers: 2}
      ig: {kernel: ig, context: baseline, n_steps: 50, tolerance: 0.02, directions: [denoising]}

A method's keys other than ``kernel``, ``tasks``, ``directions`` (a subset of the
spec's) and ``shard_layers`` (its own layers per shard) are the kernel's options, with
the names and values :func:`ig_ap.results.compute` takes. IG with a ``tolerance`` chooses
its steps per layer from all prompts, so its shards split layers only, never prompts.

Command line (a bad spec fails with one line before Ray starts)::

    python -m ig_ap.sweep run SPEC.yaml [--address ADDRESS] [--workers N] [--results DIR] [--set KEY=VALUE ...]
    python -m ig_ap.sweep status SPEC.yaml
    python -m ig_ap.sweep merge SPEC.yaml

On this project's machines, Ray runs inside a private network namespace (see the README):
``unshare -rn sh -c 'ip link set lo up && exec .venv/bin/python -m ig_ap.sweep run ...'``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from tqdm.auto import tqdm

from ig_ap import results
from ig_ap.attribution import Attribution, AttributionError, check_components, check_direction
from ig_ap.models import EMBEDDED, TINY_MODELS, UnknownModelError, load_model, model_info, resolve_hub_name
from ig_ap.storage import write_files_atomically
from ig_ap.tasks import TaskError, make_dataset, parse_tasks

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "sweeps"
"""The specs that come with the package (``sweeps/book-gpu.yaml``: the book's gpu profile)."""

SPEC_KEYS = ("name", "models", "tasks", "directions", "n_prompts", "seed", "device", "threads", "max_retries", "shards",
             "methods")
METHOD_KEYS = ("kernel", "tasks", "directions", "shard_layers")
"""A method's keys that are not kernel options."""

CRASH_ONCE = "IG_AP_SWEEP_CRASH_ONCE"
"""Test hook: when this variable names a file that does not exist, the first shard to finish its
computation creates the file and ends its worker process before saving (a worker dying mid-shard)."""


class SpecError(ValueError):
    """A sweep spec that cannot run."""


# --------------------------------------------------------------------------- the spec


@dataclass
class Method:
    """One kernel with its options, and the part of the sweep it runs on."""

    name: str
    kernel: str
    options: dict[str, Any]
    tasks: list[str]
    directions: list[str]
    shard_layers: int | None


@dataclass
class Spec:
    """A checked sweep spec (:func:`load_spec`)."""

    name: str
    models: list[str]
    tasks: list[str]
    directions: list[str]
    n_prompts: int
    seed: int
    device: str
    threads: int
    max_retries: int
    prompts_per_shard: int
    layers_per_shard: int | None
    methods: list[Method]
    path: Path | None = None


def load_spec(spec: str | Path | dict, *, overrides: Sequence[str] = ()) -> Spec:
    """Read and check a spec (a YAML path, or the same as a dict); one line per problem, before anything runs.

    ``overrides``: ``"KEY=VALUE"`` strings (VALUE in YAML): a spec key (``n_prompts=4``,
    ``models=[tiny-gpt2]``, ``shards={prompts: 2}``) or a kernel option, set in every
    method that has it (``n_steps=4``).
    """
    path = None
    if not isinstance(spec, dict):
        path = Path(spec)
        if not path.is_file():
            raise SpecError(f"no sweep spec at {path}; give the path of a YAML file (see {SPECS}/ for examples)")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise SpecError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(spec, dict):
            raise SpecError(f"{path} must hold a mapping of spec keys ({', '.join(SPEC_KEYS)})")
    raw = json.loads(json.dumps(spec))  # a copy; YAML gives plain values
    raw.setdefault("name", path.stem if path else "sweep")
    for text in overrides:
        _override(raw, text)
    return _check(raw, path)


def _override(raw: dict, text: str) -> None:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SpecError(f"override {text!r} must read KEY=VALUE (e.g. n_prompts=4)")
    value = yaml.safe_load(value)
    if key in SPEC_KEYS:
        raw[key] = value
        return
    methods = [m for m in (raw.get("methods") or {}).values() if isinstance(m, dict) and key in m]
    if not methods:
        raise SpecError(f"override {key!r} is neither a spec key ({', '.join(SPEC_KEYS)}) nor an option of any method")
    for method in methods:
        method[key] = value


SET_BY_SWEEP = ("progress", "device")
"""Speed options (:data:`~ig_ap.attribution.SPEED_OPTIONS`) that the sweep sets for every shard; a method may set the others."""


def _check(raw: dict, path: Path | None) -> Spec:
    """The spec ``raw`` (read from ``path``) checked key by key; :class:`SpecError` in one line naming the file."""
    where = f"{path}: " if path else ""

    def fail(message: str):
        raise SpecError(where + message)

    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        fail(f"unknown spec key(s) {', '.join(unknown)}; a spec has {', '.join(SPEC_KEYS)}")
    for needed in ("models", "tasks", "n_prompts", "methods"):
        if needed not in raw:
            fail(f"the spec needs {needed!r}")
    models = _check_models(raw["models"], fail)
    try:
        tasks = [t.value for t in parse_tasks(raw["tasks"])]
        directions = [check_direction(d) for d in raw.get("directions", ["denoising", "noising"])]
    except (TaskError, AttributionError, TypeError) as error:
        fail(str(error))
    n_prompts = _positive("n_prompts", raw["n_prompts"], fail)
    seed, device, threads, max_retries = _check_run(raw, fail)
    shards = raw.get("shards") or {}
    if not isinstance(shards, dict) or set(shards) - {"prompts", "layers"}:
        fail(f"shards must be a mapping with 'prompts' and/or 'layers', got {shards!r}")
    prompts_per_shard = _positive("shards.prompts", shards.get("prompts", n_prompts), fail)
    layers_per_shard = None if shards.get("layers") is None else _positive("shards.layers", shards["layers"], fail)
    if not isinstance(raw["methods"], dict) or not raw["methods"]:
        fail("methods must be a mapping of names to {kernel: ..., options...}")
    methods = [_check_method(str(name), entry, tasks, directions, layers_per_shard, fail) for name, entry in raw["methods"].items()]
    return Spec(str(raw["name"]), models, tasks, directions, n_prompts, seed, device, threads, max_retries,
                prompts_per_shard, layers_per_shard, methods, path)


def _positive(name: str, value, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(f"{name} must be a positive int, got {value!r}")
    return value


def _check_models(raw, fail) -> list[str]:
    """Model names: the embedded one, a tiny one, or a name the hub resolver knows."""
    models = raw if isinstance(raw, list) else [raw]
    if not models:
        fail("models must name at least one model")
    for name in models:
        if not isinstance(name, str) or not name:
            fail(f"model names must be strings, got {name!r}")
        if name != EMBEDDED and name not in TINY_MODELS:
            try:
                resolve_hub_name(name)
            except UnknownModelError as error:
                fail(str(error))
    return models


def _check_run(raw: dict, fail) -> tuple[int, str, int, int]:
    """How the shards run: seed, device, threads per worker and retries."""
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        fail(f"seed must be an int, got {seed!r}")
    device = raw.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        fail(f"device must be 'cpu' or 'cuda', got {device!r}")
    threads = _positive("threads", raw.get("threads", 1), fail)
    max_retries = raw.get("max_retries", 3)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        fail(f"max_retries must be an int >= 0, got {max_retries!r}")
    return seed, device, threads, max_retries


def _check_method(name: str, entry, tasks: list[str], directions: list[str], layers_per_shard: int | None, fail) -> "Method":
    """One method: a known kernel with options it takes, and tasks and directions the spec holds."""
    if not isinstance(entry, dict) or "kernel" not in entry:
        fail(f"method {name!r} must be a mapping with a 'kernel' ({', '.join(results.KERNELS)})")
    options = {k: v for k, v in entry.items() if k not in METHOD_KEYS}
    for speed_only in SET_BY_SWEEP:
        if speed_only in options:
            fail(f"method {name!r}: {speed_only!r} is set by the sweep, not by a method")
    try:
        results.check_options(entry["kernel"], options)
        if "components" in options:
            check_components(options["components"])
        method_tasks = tasks if "tasks" not in entry else [t.value for t in parse_tasks(entry["tasks"])]
        method_directions = [check_direction(d) for d in entry.get("directions", directions)]
    except (ValueError, TypeError) as error:
        fail(f"method {name!r}: {error}")
    outside = sorted(set(method_tasks) - set(tasks)) + sorted(set(method_directions) - set(directions))
    if outside:
        fail(f"method {name!r} names {', '.join(outside)}, which the spec's tasks/directions do not hold")
    chosen = options.get("layers")
    if chosen is not None and (not isinstance(chosen, list) or not chosen
                               or any(isinstance(l, bool) or not isinstance(l, int) for l in chosen)):
        fail(f"method {name!r}: layers must be a non-empty list of layer numbers (or left out: all), got {chosen!r}")
    shard_layers = entry.get("shard_layers", layers_per_shard)
    if shard_layers is not None:
        _positive(f"method {name!r}: shard_layers", shard_layers, fail)
    return Method(name, entry["kernel"], options, method_tasks, method_directions, shard_layers)


# --------------------------------------------------------------------------- the plan


@dataclass
class Shard:
    """One Ray task: a method on a range of prompts and a group of layers of one result."""

    result: "Result"
    prompts: tuple[int, int]
    layers: list[int]
    key: dict

    @property
    def name(self) -> str:
        return results.result_name(self.key)

    def path(self, directory: Path) -> Path:
        """Where the shard is saved: ``shards/`` of the results folder (the merged result goes in the folder itself)."""
        return directory / "shards" / self.name

    def __str__(self) -> str:
        a, b = self.prompts
        return f"{self.result} prompts {a}-{b - 1} layers {self.layers[0]}-{self.layers[-1]}"


@dataclass
class Result:
    """One result of the sweep (what :func:`ig_ap.results.compute` files under ``key``), and its shards."""

    model: str
    task: str
    direction: str
    method: Method
    key: dict
    dataset: Any  # ig_ap.tasks.TaskDataset
    shards: list[Shard] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.model} {self.task} {self.method.name} {self.direction}"

    def path(self, directory: Path) -> Path:
        return directory / results.result_name(self.key)


@dataclass
class Plan:
    """Every result of a spec with its shards, keyed against one results folder."""

    spec: Spec
    directory: Path
    results: list[Result]

    @property
    def shards(self) -> list[Shard]:
        return [s for r in self.results for s in r.shards]


def plan(spec: Spec, directory: str | Path | None = None) -> Plan:
    """The results and shards of ``spec`` (loads each model on the CPU once, for its tokenizer and shape)."""
    directory = Path(directory) if directory is not None else results._directory(None)
    planned = []
    for name in spec.models:
        model = load_model(name, device="cpu", seed=spec.seed)
        info = model_info(model)
        datasets = {task: make_dataset(task, model, n=spec.n_prompts, seed=spec.seed) for task in spec.tasks}
        for method in spec.methods:
            for task in method.tasks:
                for direction in method.directions:
                    key = results.compute_key(model, datasets[task], method.kernel, direction, **method.options)
                    result = Result(name, task, direction, method, key, datasets[task])
                    result.shards = _shards(spec, method, result, info.n_layers)
                    planned.append(result)
        del model
    return Plan(spec, directory, planned)


def _shards(spec: Spec, method: Method, result: Result, n_layers: int) -> list[Shard]:
    layers = list(range(n_layers)) if method.options.get("layers") is None else sorted(set(method.options["layers"]))
    if not 0 <= layers[0] <= layers[-1] < n_layers:
        raise SpecError(f"method {method.name!r}: layers {layers} are not all layers of {result.model} (0 … {n_layers - 1})")
    # IG to a tolerance doubles a layer's steps until every prompt of the batch meets it: shard its layers only.
    whole = method.kernel == "ig" and method.options.get("tolerance") is not None
    step = spec.n_prompts if whole else spec.prompts_per_shard
    per = method.shard_layers or len(layers)
    shards = []
    for start in range(0, spec.n_prompts, step):
        prompts = (start, min(start + step, spec.n_prompts))
        for first in range(0, len(layers), per):
            group = layers[first:first + per]
            key = {**result.key, "shard_prompts": list(prompts), "shard_layers": group}
            shards.append(Shard(result, prompts, group, key))
    return shards


def is_done(path: Path, key: dict) -> bool:
    """Whether a complete result for ``key`` is at ``path`` (files present, hash matching, same key)."""
    return results.find(path, key) is not None


# --------------------------------------------------------------------------- one shard


@dataclass
class ShardWork:
    """What a worker needs for one shard: no model, no dataset, only names, the prompts' tokens and the key."""

    model: str
    seed: int
    device: str
    threads: int
    kernel: str
    direction: str
    options: dict
    layers: list[int]
    batch: Any  # ig_ap.tasks.Batch of the shard's prompts
    key: dict
    path: str


def shard_work(spec: Spec, shard: Shard, directory: Path) -> ShardWork:
    """The :class:`ShardWork` of ``shard`` (the spec's model seed, device and threads; the shard's layers replace ``layers``)."""
    result = shard.result
    options = {k: v for k, v in result.method.options.items() if k != "layers"}
    return ShardWork(result.model, spec.seed, spec.device, spec.threads, result.method.kernel, result.direction, options,
                     shard.layers, result.dataset.batch(range(*shard.prompts)), shard.key, str(shard.path(directory)))


@functools.lru_cache(maxsize=2)
def _worker_model(name: str, device: str, seed: int):
    """The model, loaded once per worker process (Ray reuses its workers across tasks)."""
    return load_model(name, device=device, seed=seed)


def execute_shard(work: ShardWork) -> float:
    """Compute one shard and save it under its key (skipped when already there); the seconds it took.

    A plain function: Ray runs it as a task, and one process can run it in a loop.
    """
    path = Path(work.path)
    if is_done(path, work.key):
        return 0.0
    if work.device == "cpu":
        torch.set_num_threads(work.threads)
    model = _worker_model(work.model, work.device, work.seed)
    attribution = results.KERNELS[work.kernel](model, work.batch, direction=work.direction, layers=work.layers,
                                               progress=False, **work.options)
    marker = os.environ.get(CRASH_ONCE)
    if marker and not Path(marker).exists():  # the test hook: die mid-shard, once
        Path(marker).touch()
        os._exit(1)
    results.save(attribution, path, work.key)
    return attribution.seconds


# --------------------------------------------------------------------------- merging


def merge_shards(parts: Sequence[tuple[Shard, Attribution]], n_prompts: int) -> Attribution:
    """Put the shards of one result together: each fills its prompts and layers (the rest stays NaN)."""
    first = parts[0][1]

    def filled(get, shape_of) -> torch.Tensor | None:
        if get(first) is None:
            return None
        out = torch.full(shape_of(get(first)), float("nan"), dtype=get(first).dtype)
        for shard, attribution in parts:
            a, b = shard.prompts
            out[a:b, shard.layers] = get(attribution)[:, shard.layers]
        return out

    whole = lambda t: (n_prompts,) + tuple(t.shape[1:])  # noqa: E731
    metrics = {}
    for name in ("clean_metric", "corrupted_metric"):
        metrics[name] = torch.full((n_prompts,), float("nan"))
        for shard, attribution in parts:
            metrics[name][slice(*shard.prompts)] = getattr(attribution, name)
    completeness = None
    if first.completeness:
        completeness = {}
        for kind, table in first.completeness.items():
            completeness[kind] = {part: filled(lambda x, k=kind, p=part: x.completeness[k][p], whole)
                                  for part in table if part != "steps"}
            steps = torch.full_like(table["steps"], float("nan"))
            for shard, attribution in parts:  # steps per layer; prompt shards of one layer used the same
                steps[shard.layers] = torch.maximum(steps[shard.layers].nan_to_num(0), attribution.completeness[kind]["steps"][shard.layers])
            completeness[kind]["steps"] = steps
    profile = None
    if first.path_profile:
        profile = {kind: filled(lambda x, k=kind: x.path_profile[k], whole) for kind in first.path_profile}
    layers = sorted({layer for shard, _ in parts for layer in shard.layers})
    meta = {**first.meta, "n_prompts": n_prompts, "layers": layers, "shards": len(parts),
            "rows_per_pass": max((a.meta.get("rows_per_pass") or 0 for _, a in parts), default=None)}
    if "shared_prefix" in meta:
        meta["shared_prefix"] = min(a.meta["shared_prefix"] for _, a in parts)
    return Attribution(first.method, first.direction, filled(lambda x: x.heads, whole), filled(lambda x: x.neurons, whole),
                       metrics["clean_metric"], metrics["corrupted_metric"], meta, completeness, profile,
                       sum(a.seconds for _, a in parts))


def merge(plan_: Plan) -> list[Result]:
    """Merge every result whose shards are all in the cache and that is not merged yet; the results merged."""
    merged = []
    for result in plan_.results:
        where = plan_.directory
        if is_done(result.path(where), result.key):
            continue
        parts = [(s, results.find(s.path(where), s.key)) for s in result.shards]  # each shard read once
        if any(attribution is None for _, attribution in parts):
            continue
        results.save(merge_shards(parts, len(result.dataset)), result.path(where), result.key)
        merged.append(result)
    return merged


# --------------------------------------------------------------------------- status


def _failure_path(directory: Path, shard: Shard) -> Path:
    return directory / "shards" / "failed" / f"{shard.name}.json"


def _record_failure(directory: Path, shard: Shard, error: BaseException) -> None:
    text = json.dumps({"shard": str(shard), "error": f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}",
                       "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    write_files_atomically([_failure_path(directory, shard)], [lambda tmp: tmp.write_text(text)])


@dataclass
class Status:
    """Where a sweep stands: shards done, failed (with why) and pending; results merged; an ETA."""

    done: list[Shard]
    failed: list[tuple[Shard, str]]
    pending: list[Shard]
    merged: int
    total_results: int
    seconds_per_shard: dict[str, float]  # measured mean, by method

    def eta(self, workers: int) -> float | None:
        """Seconds left for the pending and failed shards on ``workers`` workers (None if a method has no measured shard)."""
        left = self.pending + [s for s, _ in self.failed]
        if any(s.result.method.name not in self.seconds_per_shard for s in left):
            return None
        return sum(self.seconds_per_shard[s.result.method.name] for s in left) / max(1, workers)

    def report(self, workers: int) -> str:
        lines = [f"{len(self.done)} of {len(self.done) + len(self.failed) + len(self.pending)} shards done, "
                 f"{len(self.pending)} pending, {len(self.failed)} failed; {self.merged} of {self.total_results} results merged"]
        for method, seconds in sorted(self.seconds_per_shard.items()):
            lines.append(f"  {method}: {seconds:.1f} s per shard (measured mean)")
        for shard, why in self.failed[:10]:
            lines.append(f"  failed: {shard}: {why}")
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more failed shards")
        eta = self.eta(workers)
        if self.pending or self.failed:
            lines.append(f"ETA on {workers} worker(s): " + (f"{eta / 60:.1f} min" if eta is not None else
                                                            "unknown until one shard of each method has run"))
        return "\n".join(lines)


def status(plan_: Plan) -> Status:
    """Read the state of every shard of ``plan_`` from the cache."""
    done, failed, pending, times = [], [], [], {}
    merged = {id(r) for r in plan_.results if is_done(r.path(plan_.directory), r.key)}
    for shard in plan_.shards:
        found = results.find(shard.path(plan_.directory), shard.key)
        if found is not None:
            done.append(shard)
            times.setdefault(shard.result.method.name, []).append(found.seconds)
        elif id(shard.result) in merged:  # merged, and its shards cleaned away
            done.append(shard)
        elif _failure_path(plan_.directory, shard).exists():
            failed.append((shard, json.loads(_failure_path(plan_.directory, shard).read_text())["error"]))
        else:
            pending.append(shard)
    return Status(done, failed, pending, len(merged), len(plan_.results), {m: sum(t) / len(t) for m, t in times.items()})


# --------------------------------------------------------------------------- running


@dataclass
class Report:
    """What :func:`run` did: the shards it ran, those that failed, the results it merged."""

    ran: list[Shard]
    failed: list[tuple[Shard, str]]
    merged: list[Result]
    seconds: float


def run(plan_: Plan, *, address: str | None = None, workers: int | None = None, progress: bool = True,
        on_shard: Callable[[Shard], None] | None = None) -> Report:
    """Run the shards of ``plan_`` that are not in the cache as Ray tasks, then merge what is complete.

    ``address``: a Ray cluster (``ray start --head`` prints it); ``None`` starts a local
    Ray instance with ``workers`` × ``threads`` CPUs (or uses the one already started in
    this process). ``workers``: at most this many shards in flight (default: as many as
    the cluster's resources run at once). ``on_shard(shard)`` is called as each shard
    lands. Ctrl-C (or an exception from ``on_shard``) cancels the shards in flight;
    everything saved stays, and the next run goes on from there.
    """
    import ray  # only a sweep needs Ray

    spec, started = plan_.spec, time.perf_counter()
    where = plan_.directory
    todo = [s for r in plan_.results if not is_done(r.path(where), r.key) for s in r.shards if not is_done(s.path(where), s.key)]
    ran: list[Shard] = []
    failed: list[tuple[Shard, str]] = []
    if todo:
        own = not ray.is_initialized()
        if own:
            local = {} if address else {"num_cpus": (workers or os.cpu_count() or 1) * spec.threads}
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
        resources = {"num_gpus": 1, "num_cpus": 1} if spec.device == "cuda" else {"num_cpus": spec.threads}
        task = ray.remote(execute_shard).options(max_retries=spec.max_retries, **resources)
        limit = workers or len(todo)
        queue, flying = list(todo), {}
        bar = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="shard", disable=not progress)
        try:
            while queue or flying:
                while queue and len(flying) < limit:
                    shard = queue.pop(0)
                    flying[task.remote(shard_work(spec, shard, plan_.directory))] = shard
                (ready,), _ = ray.wait(list(flying), num_returns=1)
                shard = flying.pop(ready)
                try:
                    ray.get(ready)
                except (ray.exceptions.RayError, Exception) as error:  # after Ray's retries: record, go on
                    cause = getattr(error, "cause", None) or error
                    _record_failure(plan_.directory, shard, cause)
                    failed.append((shard, f"{type(cause).__name__}: {cause}"))
                else:
                    _failure_path(plan_.directory, shard).unlink(missing_ok=True)
                    ran.append(shard)
                    if on_shard is not None:
                        on_shard(shard)
                bar.update(1)
        except BaseException:
            for ref in flying:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
            if own:
                ray.shutdown()
    return Report(ran, failed, merge(plan_), time.perf_counter() - started)


# --------------------------------------------------------------------------- specs on disk


def specs_producing(key: dict, folder: Path = SPECS) -> list[str]:
    """The specs under ``folder`` with a method, task and direction whose result has ``key`` (models by id not checked)."""
    options = results.key_options(key)
    found = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError:
            continue
        for method in spec.methods:
            if (method.kernel == key["kernel"] and key["direction"] in method.directions and key["task"] in method.tasks
                    and results.keyed_options(method.options) == options and spec.n_prompts == key["n"] and spec.seed == key["seed"]):
                found.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
                break
    return found


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ig_ap.sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the missing shards on Ray, then merge"), ("status", "shards done, pending, failed; ETA"),
                       ("merge", "merge the results whose shards are all done")):
        command = sub.add_parser(name, help=text)
        command.add_argument("spec", help="the sweep spec (YAML)")
        command.add_argument("--results", default=None, help="results folder (default: the results cache)")
        command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec key or option")
        command.add_argument("--workers", type=int, default=None, help="shards in flight at once (default: the CPUs or GPUs)")
        if name == "run":
            command.add_argument("--address", default=None, help="a Ray cluster's address (default: start Ray locally)")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec, overrides=args.set)
        if args.workers is not None and args.workers < 1:
            raise SpecError(f"--workers must be at least 1, got {args.workers}")
        planned = plan(spec, args.results)
    except (SpecError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    workers = args.workers or os.cpu_count() or 1
    if args.command == "status":
        print(f"sweep {spec.name} ({planned.directory}):")
        print(status(planned).report(workers))
    elif args.command == "merge":
        merged = merge(planned)
        print(f"merged {len(merged)} result(s); {status(planned).report(workers)}")
    else:
        report = run(planned, address=args.address, workers=args.workers)
        print(f"ran {len(report.ran)} shard(s) in {report.seconds:.1f} s, {len(report.failed)} failed; "
              f"merged {len(report.merged)} result(s)")
        print(status(planned).report(workers))
        return 1 if report.failed else 0
    return 0


if __name__ == "__main__":  # run the module's own main, so that Ray pickles ig_ap.sweep's functions, not __main__'s
    from ig_ap.sweep import main as _main

    sys.exit(_main())
