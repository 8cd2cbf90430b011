"""Every attribution in a results folder as one long table: what a reader downloads beside the book.

One row per result, prompt, layer and computed component (:data:`EXPORT_COLUMNS`),
written as Parquet or CSV (atomically). The book exports exactly the results its
chapters read (``data/results.parquet`` on the site); ``python -m ig_ap.export OUT.parquet``
exports a whole results folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from ig_ap.results import key_options, results_directory, stored
from ig_ap.storage import write_files_atomically

EXPORT_COLUMNS = ("model", "task", "variant", "seed", "n", "direction", "method", "options", "prompt", "layer", "kind",
                  "component", "score", "clean_metric", "corrupted_metric")
"""The long-form table :func:`export_table` gives: one row per prompt and computed component of every result."""


def export_table(directory: str | Path | None = None, paths: Sequence[str | Path] | None = None):
    """Every attribution result in ``directory`` as one long ``pandas.DataFrame`` (:data:`EXPORT_COLUMNS`).

    One row per result, prompt, layer and computed component (NaN, i.e. not computed, is
    left out); ``score`` is in the metric's units (divide by ``clean_metric −
    corrupted_metric`` for the normalised score); ``method`` is the kernel (``ap``, ``ig``,
    ``atp``) and ``options`` the rest of its key as JSON. Sweep shards (in ``shards/``)
    and :func:`memo` tensors are not attribution results and are left out. ``paths``:
    only these results (stems, as a chapter's results log lists them, :class:`ig_ap.book.Chapter`) instead of the folder's.
    """
    import pandas as pd

    directory = results_directory(directory)
    frames = []
    sidecars = sorted(directory.glob("*.json")) if paths is None else [Path(p).with_suffix(".json") for p in dict.fromkeys(paths)]
    for sidecar_path in sidecars:
        found = stored(sidecar_path.with_suffix(""))
        if found is None or "kernel" not in found[0].get("key", {}):
            continue
        key, tensors = found[0]["key"], found[1]
        options = key_options(key)
        for kind in ("heads", "neurons"):
            if kind not in tensors:
                continue
            scores = tensors[kind]
            prompt, layer, component = (~scores.isnan()).nonzero(as_tuple=True)
            frames.append(pd.DataFrame({
                "model": key["model"], "task": key["task"], "variant": key["variant"], "seed": key["seed"], "n": key["n"],
                "direction": key["direction"], "method": key["kernel"], "options": json.dumps(options, sort_keys=True),
                "prompt": prompt.numpy(), "layer": layer.numpy(), "kind": kind, "component": component.numpy(),
                "score": scores[prompt, layer, component].numpy(),
                "clean_metric": tensors["clean_metric"][prompt].numpy(),
                "corrupted_metric": tensors["corrupted_metric"][prompt].numpy()}))
    if not frames:
        return pd.DataFrame({c: [] for c in EXPORT_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(EXPORT_COLUMNS)]


def export(directory: str | Path | None, out: str | Path, paths: Sequence[str | Path] | None = None) -> Path:
    """Write :func:`export_table` to ``out``: Parquet for ``.parquet``, CSV for ``.csv`` (atomically); the path."""
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"export writes .parquet or .csv, not {out.suffix or 'a file without suffix'} ({out})")
    table = export_table(directory, paths)
    writer = (lambda tmp: table.to_parquet(tmp, index=False)) if out.suffix == ".parquet" else (
        lambda tmp: table.to_csv(tmp, index=False))
    write_files_atomically([out], [writer])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m ig_ap.export [--results DIR] OUT.parquet [OUT.csv ...]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ig_ap.export",
                                     description="Every cached attribution as one long table (Parquet and/or CSV).")
    parser.add_argument("out", nargs="+", help="files to write: .parquet and/or .csv")
    parser.add_argument("--results", default=None, help="results folder (default: the results cache)")
    args = parser.parse_args(argv)
    bad = [o for o in args.out if Path(o).suffix not in (".parquet", ".csv")]
    if bad:
        print(f"error: export writes .parquet or .csv files, not {', '.join(bad)}", file=sys.stderr)
        return 2
    for out in args.out:
        path = export(args.results, out)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
