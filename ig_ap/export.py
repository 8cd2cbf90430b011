"""Every attribution in a results folder as one long table: what a reader downloads beside the book.

One row per result, prompt, layer and computed component (:data:`EXPORT_COLUMNS`),
written as Parquet or CSV (atomically). The book exports exactly the results its
chapters read (``data/results.parquet`` on the site); ``python -m ig_ap.export OUT.parquet``
exports a whole results folder.

For users of EAP-IG, ``python -m ig_ap.export scores.json`` (or :func:`node_scores` of one
result) writes each result's mean score per component in EAP-IG's node names
(:data:`NODE_SCORES_FORMAT`): heads as ``"a{layer}.h{head}"``, so that
``graph.nodes[name].score = value`` takes them, and MLP neurons per ``"m{layer}"`` as a list
over the MLP's hidden units (EAP-IG's graphs have no node for a hidden unit, so these are
for reading, not for its graph). MIB's circuit track takes edge-level circuits, so it has no
layout for these node scores.
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


def _sidecars(directory, paths) -> list[Path]:
    """The results' sidecar files: every one in ``directory`` (the results cache by default), or those of ``paths``."""
    if paths is None:
        return sorted(results_directory(directory).glob("*.json"))
    return [Path(p).with_suffix(".json") for p in dict.fromkeys(paths)]


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

    frames = []
    sidecars = _sidecars(directory, paths)
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


NODE_SCORES_FORMAT = "ig_ap node scores 1"
"""The layout :func:`node_scores` gives: ``{"format", "model", "task", "variant", "seed", "n_prompts", "method",
"direction", "options", "unit", "clean_metric", "corrupted_metric", "nodes": {"a0.h0": score, ...}, "neurons":
{"m0": [score per hidden unit], ...}}``. Scores are means over prompts in the metric's units (divide by
``clean_metric − corrupted_metric``, the two runs' mean metrics, for a share of the gap); ``null`` where a component
was not computed."""


def node_scores(key: dict, tensors: dict) -> dict:
    """One result's mean score per component in EAP-IG's node names (:data:`NODE_SCORES_FORMAT`).

    ``key`` is the result's key and ``tensors`` its ``heads`` and ``neurons`` (``[prompt, layer, component]``) and
    its ``clean_metric`` and ``corrupted_metric``, as :func:`ig_ap.results.stored` gives them.
    """
    def means(scores, layer):
        values = scores[:, layer].double().nanmean(0).tolist()
        return [None if v != v else round(v, 9) for v in values]

    out = {"format": NODE_SCORES_FORMAT, "model": key.get("model"), "task": key.get("task"), "variant": key.get("variant"),
           "seed": key.get("seed"), "n_prompts": int(tensors["clean_metric"].shape[0]), "method": key.get("kernel"),
           "direction": key.get("direction"), "options": key_options(key), "unit": "the task metric's, mean over prompts",
           "clean_metric": float(tensors["clean_metric"].double().mean()),
           "corrupted_metric": float(tensors["corrupted_metric"].double().mean()), "nodes": {}, "neurons": {}}
    if tensors.get("heads") is not None:
        for layer in range(tensors["heads"].shape[1]):
            out["nodes"].update({f"a{layer}.h{h}": v for h, v in enumerate(means(tensors["heads"], layer))})
    if tensors.get("neurons") is not None:
        out["neurons"] = {f"m{layer}": means(tensors["neurons"], layer) for layer in range(tensors["neurons"].shape[1])}
    return out


def export(directory: str | Path | None, out: str | Path, paths: Sequence[str | Path] | None = None) -> Path:
    """Write :func:`export_table` to ``out``: Parquet for ``.parquet``, CSV for ``.csv``; for ``.json``, every
    result's :func:`node_scores` as ``{"results": [...]}`` (atomically); the path."""
    out = Path(out)
    if out.suffix not in (".parquet", ".csv", ".json"):
        raise ValueError(f"export writes .parquet, .csv or .json, not {out.suffix or 'a file without suffix'} ({out})")
    if out.suffix == ".json":
        found = [stored(p.with_suffix("")) for p in _sidecars(directory, paths)]
        text = json.dumps({"results": [node_scores(f[0]["key"], f[1]) for f in found
                                       if f is not None and "kernel" in f[0].get("key", {})]}, indent=1, allow_nan=False)
        write_files_atomically([out], [lambda tmp: Path(tmp).write_text(text)])
        return out
    table = export_table(directory, paths)
    writer = (lambda tmp: table.to_parquet(tmp, index=False)) if out.suffix == ".parquet" else (
        lambda tmp: table.to_csv(tmp, index=False))
    write_files_atomically([out], [writer])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m ig_ap.export [--results DIR] OUT.parquet [OUT.csv OUT.json ...]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ig_ap.export",
                                     description="Every cached attribution as one long table (Parquet, CSV), or as mean scores per component in EAP-IG node names (JSON).")
    parser.add_argument("out", nargs="+", help="files to write: .parquet, .csv and/or .json")
    parser.add_argument("--results", default=None, help="results folder (default: the results cache)")
    args = parser.parse_args(argv)
    bad = [o for o in args.out if Path(o).suffix not in (".parquet", ".csv", ".json")]
    if bad:
        print(f"error: export writes .parquet, .csv or .json files, not {', '.join(bad)}", file=sys.stderr)
        return 2
    for out in args.out:
        path = export(args.results, out)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
