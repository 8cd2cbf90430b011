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
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

import ig_ap
from ig_ap.attribution import Attribution
from ig_ap.models import file_sha256


class ResultKeyError(ValueError):
    """A stored result was computed with other inputs than the ones asked for."""


COMPUTING_MODULES = ("models", "tasks", "attribution", "replay", "patching", "ig", "atp")
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
    readable = "-".join(str(key[k]) for k in ("model", "task", "method", "direction") if k in key)
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
    """Tensors and their JSON sidecar (with the tensors' SHA-256), each written to a temporary and renamed, JSON last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors_path, sidecar_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    fd, tmp_tensors = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".safetensors.tmp", dir=path.parent)
    os.close(fd)
    fd, tmp_sidecar = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".json.tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_tensors)
        Path(tmp_sidecar).write_text(json.dumps({**sidecar, "sha256": file_sha256(Path(tmp_tensors))}, indent=1))
        os.replace(tmp_tensors, tensors_path)
        os.replace(tmp_sidecar, sidecar_path)  # last: until it is in place, nothing loads
    finally:
        for tmp in (tmp_tensors, tmp_sidecar):
            if os.path.exists(tmp):
                os.remove(tmp)
    return sidecar_path


def _read(path: Path):
    """(sidecar, tensors) when both are present and consistent, else None."""
    tensors_path, sidecar_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    try:
        sidecar = json.loads(sidecar_path.read_text())
        if file_sha256(tensors_path) != sidecar["sha256"]:
            return None
        return sidecar, load_file(str(tensors_path))
    except (OSError, ValueError, KeyError):
        return None


def load(path: str | Path, key: dict) -> Attribution:
    """Read the result at ``path``; :class:`ResultKeyError` if it was stored under another key."""
    path = Path(path)
    found = _read(path)
    if found is None:
        raise FileNotFoundError(f"no complete result at {path} (.json and .safetensors with matching hash)")
    sidecar, tensors = found
    if _key_text(sidecar["key"]) != _key_text(key):
        changed = sorted(k for k in set(key) | set(sidecar["key"]) if key.get(k) != sidecar["key"].get(k))
        raise ResultKeyError(f"the result at {path} was computed with other {', '.join(changed)}; recompute it instead of reusing it")
    return _unflatten(tensors, sidecar)


def cached(directory: str | Path, key: dict, compute: Callable[[], Attribution]) -> Attribution:
    """The result for ``key`` from ``directory`` if stored there, else ``compute()``, saved before it is returned."""
    path = Path(directory) / result_name(key)
    if _read(path) is not None:
        return load(path, key)
    result = compute()
    save(result, path, key)
    return result


_NOT_IN_KEY = {"progress", "internal_batch_size", "memory_mb", "device"}  # change speed, not numbers


def compute(model, dataset, method: str, direction: str = "denoising", *, directory: str | Path | None = None, **options) -> Attribution:
    """Run one kernel on all of a dataset's prompts, or load the result from the cache.

    ``method``: ``"ap"``, ``"ig"`` or ``"atp"``; ``options`` go to the kernel
    (``components``, ``n_steps``, ``layers``, ...) and, except those that change only the
    speed, into the key with the model, task, variant, seed and size of the dataset.
    ``directory`` defaults to ``cache_dir()/results``.
    """
    from ig_ap.atp import attribution_patching
    from ig_ap.ig import integrated_gradients
    from ig_ap.patching import activation_patching

    kernels = {"ap": activation_patching, "ig": integrated_gradients, "atp": attribution_patching}
    if method not in kernels:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(kernels)}")
    def plain(v):
        if torch.is_tensor(v):
            return v.tolist()
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return list(v) if isinstance(v, tuple) else v

    keyed = {k: plain(v) for k, v in options.items() if k not in _NOT_IN_KEY}
    key = _dataset_key(model, dataset, method=method, direction=direction, **keyed)
    return cached(_directory(directory), key, lambda: kernels[method](model, dataset.batch(), direction=direction, **options))


def _dataset_key(model, dataset, **fields) -> dict:
    """:func:`result_key` of a computation on ``dataset`` with ``model``: model, task, variant, seed, size, ``fields``."""
    from ig_ap.models import model_info

    return result_key(model=model_info(model).model_id, task=dataset.task.value, variant=dataset.variant,
                      seed=dataset.seed, n=len(dataset), **fields)


def _directory(directory: str | Path | None) -> Path:
    """The results folder: ``directory``, else ``cache_dir()/results``."""
    from ig_ap.models import cache_dir

    return Path(directory) if directory is not None else cache_dir() / "results"


def memo(model, dataset, name: str, compute: Callable[[], torch.Tensor], *, directory: str | Path | None = None,
         modules: tuple[str, ...] = (), **options) -> torch.Tensor:
    """A tensor that ``compute()`` gives for ``dataset`` on ``model``, from the cache when its key matches.

    For computations that are not attribution kernels (``ig_ap.heads.path_patching``, ...):
    the key holds the model, the dataset (task, variant, seed, size), ``name``, the
    ``options`` (plain JSON) and, besides the computing modules' hash that every key has,
    a hash of each module named in ``modules`` (e.g. ``("heads",)``), so changed code
    never reuses old numbers. Written atomically like every result.
    """
    extra = {f"code_{m}": code_hash((m,)) for m in modules}
    key = _dataset_key(model, dataset, method=name, **extra, **options)
    path = _directory(directory) / result_name(key)
    found = _read(path)
    if found is not None and _key_text(found[0]["key"]) == _key_text(key):
        return found[1]["value"]
    value = compute()
    _write(path, {"value": value.detach().cpu().contiguous()}, {"key": key, "method": name})
    return value
