"""The on-disk cache of attribution results, keyed by everything that changes them.

A result is stored as two files side by side: ``NAME.safetensors`` (every tensor of the
:class:`~ig_ap.attribution.Attribution`, nested dictionaries flattened to dotted names)
and ``NAME.json`` (the key, the result's metadata, and the SHA-256 of the tensors file).
Both are written under temporary names and renamed into place, the JSON last, and a
result loads only when the JSON's hash matches the tensors file: an interrupted or
damaged write leaves nothing that loads.

The *key* is a flat dictionary of everything the numbers depend on (model, task,
dataset seed and size, method, direction, IG steps, ..., and the package version and a
hash of its source files, which :func:`result_key` adds). :func:`load` with a different key is an error, never a
silent reuse; :func:`cached` files each key under its own name (a readable prefix and a
hash of the key), so a changed parameter simply misses and is computed.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

import ig_ap
from ig_ap.atp import atp_star, attribution_patching
from ig_ap.attribution import SPEED_OPTIONS, Attribution
from ig_ap.ig import integrated_gradients
from ig_ap.models import model_info
from ig_ap.analysis import random_per_layer, top_per_layer
from ig_ap.patching import activation_patching
from ig_ap.storage import cache_dir, file_sha256, write_files_atomically


class ResultKeyError(ValueError):
    """A stored result was computed with other inputs than the ones asked for."""


COMPUTING_MODULES = ("models", "tasks", "words", "attribution", "replay", "patching", "ig", "atp")
"""The modules whose code decides the numbers of a result (figures and the runner do not)."""


@functools.lru_cache(maxsize=None)
def code_hash(modules: tuple[str, ...] = COMPUTING_MODULES) -> str:
    """Hash of the modules that compute results: a result computed by other code is another result."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update((Path(ig_ap.__file__).parent / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


def result_key(**fields: Any) -> dict[str, Any]:
    """A cache key: the given fields (JSON values) plus the package version and a hash of its code."""
    key = {k: fields[k] for k in sorted(fields)}
    key.setdefault("ig_ap_version", ig_ap.__version__)
    key.setdefault("ig_ap_code", code_hash())
    json.dumps(key)  # a key must be plain JSON: fail here, not when writing
    return key


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def result_name(key: dict) -> str:
    """File name stem for ``key``: its readable fields, then 12 hex digits of its hash."""
    readable = "-".join(str(key[k]) for k in ("model", "task", "kernel", "name", "direction") if k in key)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", readable)[:80] or "result"
    return f"{readable}-{hashlib.sha256(_key_text(key).encode()).hexdigest()[:12]}"


def _flatten(attribution: Attribution) -> dict[str, torch.Tensor]:
    tensors = {"clean_metric": attribution.clean_metric, "corrupted_metric": attribution.corrupted_metric}
    for kind in ("heads", "neurons"):
        if getattr(attribution, kind) is not None:
            tensors[kind] = getattr(attribution, kind)
    for kind, parts in (attribution.completeness or {}).items():
        for part, value in parts.items():
            tensors[f"completeness.{kind}.{part}"] = value
    for kind, value in (attribution.path_profile or {}).items():
        tensors[f"path_profile.{kind}"] = value
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _unflatten(tensors: dict[str, torch.Tensor], info: dict) -> Attribution:
    completeness: dict = {}
    profile: dict = {}
    for name, value in tensors.items():
        if name.startswith("completeness."):
            _, kind, part = name.split(".")
            completeness.setdefault(kind, {})[part] = value
        elif name.startswith("path_profile."):
            profile[name.split(".", 1)[1]] = value
    return Attribution(
        method=info["method"],
        direction=info["direction"],
        heads=tensors.get("heads"),
        neurons=tensors.get("neurons"),
        clean_metric=tensors["clean_metric"],
        corrupted_metric=tensors["corrupted_metric"],
        meta=info.get("meta", {}),
        completeness=completeness or None,
        path_profile=profile or None,
        seconds=info.get("seconds", 0.0),
    )


def save(attribution: Attribution, path: str | Path, key: dict) -> Path:
    """Write ``attribution`` to ``path`` (a stem: ``.safetensors`` and ``.json`` are added), atomically."""
    return _write(Path(path), _flatten(attribution), {
        "key": key,
        "method": attribution.method,
        "direction": attribution.direction,
        "meta": json.loads(json.dumps(attribution.meta, default=str)),
        "seconds": attribution.seconds,
    })


def _write(path: Path, tensors: dict[str, torch.Tensor], sidecar: dict) -> Path:
    """Tensors and their JSON sidecar (with the tensors' SHA-256), written to temporaries and renamed, JSON last."""
    tensors_path, sidecar_path = path.with_suffix(".safetensors"), path.with_suffix(".json")

    def write_tensors(tmp: Path) -> None:
        save_file(tensors, str(tmp))
        sidecar["sha256"] = file_sha256(tmp)

    def write_sidecar(tmp: Path) -> None:
        tmp.write_text(json.dumps(sidecar, indent=1))

    # The JSON is renamed last: until it is in place (with the hash of these tensors), nothing loads.
    write_files_atomically([tensors_path, sidecar_path], [write_tensors, write_sidecar])
    return sidecar_path


def stored(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """(sidecar, tensors) of the result at ``path`` (a stem) when both files are present and consistent, else None."""
    path = Path(path)
    tensors_path, sidecar_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    try:
        sidecar = json.loads(sidecar_path.read_text())
        if file_sha256(tensors_path) != sidecar["sha256"]:
            return None
        return sidecar, load_file(str(tensors_path))
    except (OSError, ValueError, KeyError):
        return None


def _matching(path: Path, key: dict):
    """(sidecar, tensors) of the complete result at ``path`` if it was stored under ``key``, else None (read and hashed once)."""
    found = stored(path)
    return found if found is not None and _key_text(found[0]["key"]) == _key_text(key) else None


def find(path: str | Path, key: dict) -> Attribution | None:
    """The result at ``path`` if it is complete and was stored under ``key``, else None (never an error)."""
    found = _matching(Path(path), key)
    return None if found is None else _unflatten(found[1], found[0])


def load(path: str | Path, key: dict) -> Attribution:
    """Read the result at ``path``; :class:`ResultKeyError` if it was stored under another key."""
    path = Path(path)
    found = stored(path)
    if found is None:
        raise FileNotFoundError(f"no complete result at {path} (.json and .safetensors with matching hash)")
    return _checked(path, key, *found)


def _checked(path: Path, key: dict, sidecar: dict, tensors: dict[str, torch.Tensor]) -> Attribution:
    if _key_text(sidecar["key"]) != _key_text(key):
        changed = sorted(k for k in set(key) | set(sidecar["key"]) if key.get(k) != sidecar["key"].get(k))
        raise ResultKeyError(f"the result at {path} was computed with other {', '.join(changed)}; recompute it instead of reusing it")
    return _unflatten(tensors, sidecar)


def cached(directory: str | Path, key: dict, compute: Callable[[], Attribution]) -> Attribution:
    """The result for ``key`` from ``directory`` if stored there, else ``compute()``, saved before it is returned."""
    path = Path(directory) / result_name(key)
    found = stored(path)  # read and hashed once
    if found is not None:
        return _checked(path, key, *found)
    result = compute()
    save(result, path, key)
    return result


KERNELS: dict[str, Callable[..., Attribution]] = {
    "ap": activation_patching,
    "ig": integrated_gradients,
    "atp": attribution_patching,
    "atp*": atp_star,
}
"""The attribution kernels by short name."""



def _plain(value):
    """An option as plain JSON (tensors and tuples as lists, dictionary keys as strings)."""
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(x) for k, x in value.items()}
    return [_plain(x) for x in value] if isinstance(value, (tuple, list)) else value


class MissingResultError(FileNotFoundError):
    """A result that :func:`compute` was asked to read only (``read_only=True``) is not there.

    ``key`` and ``directory`` say which and where; :func:`missing_message` turns them into one line.
    """

    def __init__(self, message: str, key: dict | None = None, directory: Path | None = None):
        super().__init__(message)
        self.key, self.directory = key, directory


def check_options(kernel: str, options: dict) -> None:
    """One line if ``kernel`` is unknown or takes none of an option in ``options`` (before any work)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    if "metric" in options:
        raise ValueError("compute keys results by their inputs, and a custom metric has no key; "
                         "call the kernel directly (e.g. ig_ap.integrated_gradients(model, batch, metric=...))")
    accepted = [p for p in inspect.signature(KERNELS[kernel]).parameters if p not in ("model", "batch", "metric", "direction")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"kernel {kernel!r} takes no option {', '.join(unknown)}; its options: {', '.join(accepted)}")


def compute_key(model, dataset, kernel: str, direction: str = "denoising", **options) -> dict:
    """The key :func:`compute` files this result under (what a sweep's merged shards are saved as)."""
    check_options(kernel, options)
    return _dataset_key(model, dataset, kernel=kernel, direction=direction, **keyed_options(options))


def keyed_options(options: dict) -> dict:
    """The options that go into a key, as plain JSON: all but those that change only the speed
    (:data:`~ig_ap.attribution.SPEED_OPTIONS`)."""
    return {k: _plain(v) for k, v in options.items() if k not in SPEED_OPTIONS}


def compute(model, dataset, kernel: str, direction: str = "denoising", *, directory: str | Path | None = None,
            read_only: bool = False, **options) -> Attribution:
    """Run one kernel on all of a dataset's prompts, or load the result from the cache.

    ``kernel``: ``"ap"``, ``"ig"``, ``"atp"`` or ``"atp*"`` (:data:`KERNELS`); every other keyword goes
    to the kernel unchanged (``components``, ``n_steps``, ``method``, ``layers``, ...) and,
    except those that change only the speed (:data:`~ig_ap.attribution.SPEED_OPTIONS`),
    into the key with the model, task, variant, seed and size of the dataset
    (:func:`compute_key`). ``directory``: where results are read and written
    (``cache_dir()/results`` by default). ``read_only``: a result that is not there is a
    :class:`MissingResultError` instead of a computation, so that a book built from a
    cluster's sweep never starts a long run by accident.
    """
    key = compute_key(model, dataset, kernel, direction, **options)
    directory = results_directory(directory)
    if read_only:
        result = find(directory / result_name(key), key)
        if result is None:
            raise MissingResultError(missing_message(key, directory), key, directory)
        return result
    return cached(directory, key, lambda: KERNELS[kernel](model, dataset.batch(), direction=direction, **options))


def missing_message(key: dict, directory: Path, specs: Sequence[str] = ()) -> str:
    """One line: which result is missing from ``directory``, and how to produce it (the first of ``specs``, the sweep
    specs that hold it, or else the method a spec would need)."""
    options = key_options(key)
    what = (f"{key['kernel']} {key['direction']} of {key['model']} on {key['task']} ({key['variant']}, "
            f"{key['n']} prompts, seed {key['seed']}) with {json.dumps(options) if options else 'default options'}")
    how = (f"`python -m ig_ap.sweep run {specs[0]} --results {directory}` produces it" if specs else
           f"no known sweep spec holds it: add a method {{kernel: {key['kernel']}, "
           f"{', '.join(f'{k}: {json.dumps(v)}' for k, v in options.items())}}} to a spec and run it")
    return f"no result for {what} in {directory}; {how}"


def neuron_subsets(ranked_by, k: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The neurons the chapters patch on a CPU: ``{"random": mask, "top": mask}``, each ``[layer, d_mlp]``.

    ``random``: a seeded uniform sample of ``k`` neurons per layer, the unbiased set on
    which the headline agreement is measured. ``top``: the union over the attributions in
    ``ranked_by`` (IG, AtP, ...) of each one's ``k`` neurons per layer with the largest mean
    |score|, a set *selected* by those methods (agreement on it is biased upward, and the
    chapters label it so). :func:`compute_ap_neurons` patches their union.
    """
    first = ranked_by[0].neurons
    top = torch.zeros(first.shape[1:], dtype=torch.bool)
    for attribution in ranked_by:
        top |= top_per_layer(attribution.neurons, k)
    return {"random": random_per_layer(first.shape[1], first.shape[2], k, seed), "top": top}


def neuron_subset(neurons) -> dict[int, list[int]] | None:
    """The ``neurons=`` option of AP for ``"all"`` (None), a ``[layer, d_mlp]`` mask, or a dict of masks (their union)."""
    if isinstance(neurons, str) and neurons == "all":
        return None
    if isinstance(neurons, dict):
        neurons = torch.stack(list(neurons.values())).any(dim=0)
    return {layer: row.nonzero().flatten().tolist() for layer, row in enumerate(torch.as_tensor(neurons, dtype=torch.bool))}


def compute_ap_neurons(model, dataset, direction: str, neurons, **options) -> Attribution:
    """AP of neurons: all of them (``neurons="all"``), or those in a ``[layer, d_mlp]`` mask (or the union of a dict of masks).

    The rest are NaN. On a CPU the chapters pass :func:`neuron_subsets` (a random sample
    and the top neurons of other methods). ``options`` as :func:`compute`.
    """
    return compute(model, dataset, "ap", direction, components=("neurons",), neurons=neuron_subset(neurons), **options)


_DATASET_FIELDS = ("model", "task", "variant", "seed", "n")


def key_options(key: dict) -> dict:
    """The kernel options in a :func:`compute_key` (what is left without the dataset, kernel, direction and code fields)."""
    return {k: v for k, v in key.items() if k not in _DATASET_FIELDS + ("kernel", "direction", "ig_ap_version", "ig_ap_code")}


def _dataset_key(model, dataset, **fields) -> dict:
    """:func:`result_key` of a computation on ``dataset`` with ``model``: model, task, variant, seed, size, ``fields``."""
    return result_key(model=model_info(model).model_id, task=dataset.task.value, variant=dataset.variant,
                      seed=dataset.seed, n=len(dataset), **fields)


def results_directory(directory: str | Path | None = None) -> Path:
    """The results folder: ``directory``, else ``cache_dir()/results``."""
    return Path(directory) if directory is not None else cache_dir() / "results"


def memo(model, dataset, name: str, compute: Callable[[], torch.Tensor], *, directory: str | Path | None = None,
         modules: tuple[str, ...] = (), **options) -> torch.Tensor | dict[str, torch.Tensor]:
    """A tensor (or a dict of tensors) that ``compute()`` gives for ``dataset`` on ``model``, from the cache when its key matches.

    For computations that are not attribution kernels (``ig_ap.heads.path_patching``, ...):
    the key holds the model, the dataset (task, variant, seed, size), ``name``, the
    ``options`` (plain JSON) and, besides the computing modules' hash that every key has,
    a hash of each module named in ``modules`` (e.g. ``("heads",)``), so changed code
    never reuses old numbers. Written atomically like every result.
    """
    extra = {f"code_{m}": code_hash((m,)) for m in modules}
    key = _dataset_key(model, dataset, name=name, **extra, **{k: _plain(v) for k, v in options.items()})
    path = results_directory(directory) / result_name(key)
    found = _matching(path, key)
    if found is not None:
        tensors = found[1]
        return tensors["value"] if "value" in tensors else {k.removeprefix("value."): v for k, v in tensors.items()}
    value = compute()
    plain = lambda t: t.detach().cpu().contiguous()  # noqa: E731
    _write(path, {f"value.{k}": plain(v) for k, v in value.items()} if isinstance(value, dict) else {"value": plain(value)},
           {"key": key, "name": name})
    return value
