"""The cold CPU book's time at 150 GFLOP/s: every chapter timed and scaled by the matmul rate measured beside it.

The target (README, "Build profiles and times"): ``make book`` from a fresh clone, results and
model caches empty, in at most 20 minutes on a machine whose fp32 matmul rate
(``kernels.matmul_rate``) is 150 GFLOP/s. These machines' rate moves by a third within one
build, so one rate measured before and one after a build places it only to about ±2
minutes. This script clones the repository (its committed ``HEAD``), times ``make setup`` in
the clone (a fresh virtual environment), then measures the rate right before and right after
each chapter and scales that chapter's time by the mean of the two; setting up and Jupyter
Book, which run no large matmuls, are reported as measured. Nothing is shared with the
repository's own ``.venv``, ``_build`` or caches.

    .venv/bin/python benchmarks/cold_book.py                  # about 17 minutes on 2 cores
    .venv/bin/python benchmarks/cold_book.py --venv .venv     # copy this venv: setup not timed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATE = 150.0  # GFLOP/s
TARGET_MINUTES = 20.0


def _rate() -> float:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kernels import matmul_rate

    return matmul_rate(torch.device("cpu"))


def chapters(out: Path) -> int:
    """In the clone's environment: each chapter of the cpu profile, cold, between two rate measurements; then Jupyter
    Book. Writes ``out/timings.json``."""
    from ig_ap import book

    rows, executed = [], []
    for notebook in book.chapters():
        before = _rate()
        started = time.perf_counter()
        executed.append(book.execute_chapter(notebook, out / "executed", book.profile_parameters("cpu", notebook.stem)))
        seconds = time.perf_counter() - started
        rows.append({"chapter": notebook.stem, "seconds": seconds, "rate before": before, "rate after": _rate()})
        print(json.dumps(rows[-1]), flush=True)
    started = time.perf_counter()
    book.build(out=out)  # every chapter is up to date: this stages and compiles the site
    timings = {"chapters": rows, "compile": time.perf_counter() - started}
    (out / "timings.json").write_text(json.dumps(timings, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, help="copy this virtual environment instead of `make setup` (setup not timed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone (its _build holds the book)")
    parser.add_argument("--chapters-only", type=Path, help=argparse.SUPPRESS)  # the part run inside the clone
    args = parser.parse_args(argv)
    if args.chapters_only:
        return chapters(args.chapters_only)

    work = Path(tempfile.mkdtemp(prefix="cold-book-"))
    clone, cache = work / "repo", work / "cache"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "IG_AP_CACHE": str(cache)}
    started = time.perf_counter()
    if args.venv:
        shutil.copytree(args.venv, clone / ".venv", symlinks=True)
        subprocess.run(["make", "-C", str(clone), "setup"], check=True, env=env, stdout=subprocess.DEVNULL)
        setup = None
    else:
        subprocess.run(["make", "-C", str(clone), "setup"], check=True, env=env, stdout=subprocess.DEVNULL)
        setup = time.perf_counter() - started
    out = clone / "_build"
    subprocess.run([str(clone / ".venv" / "bin" / "python"), str(clone / "benchmarks" / "cold_book.py"), "--chapters-only", str(out)],
                   check=True, env=env, cwd=clone)
    timings = json.loads((out / "timings.json").read_text())

    print(f"\nCold CPU book of {subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}"
          f" (clone in {work}); each chapter scaled to {TARGET_RATE:g} GFLOP/s by the mean rate before and after it\n")
    print("| step | seconds | GFLOP/s before, after | seconds at 150 GFLOP/s |")
    print("| --- | --- | --- | --- |")
    print(f"| setup (`make setup`, a fresh venv) | {'not timed (venv copied)' if setup is None else f'{setup:.0f}'} | – | "
          f"{'–' if setup is None else f'{setup:.0f} (as measured)'} |")
    scaled_total = 0.0
    for row in timings["chapters"]:
        rate = (row["rate before"] + row["rate after"]) / 2
        scaled = row["seconds"] * rate / TARGET_RATE
        scaled_total += scaled
        print(f"| {row['chapter']} | {row['seconds']:.0f} | {row['rate before']:.0f}, {row['rate after']:.0f} | {scaled:.0f} |")
    print(f"| Jupyter Book (staging, compiling) | {timings['compile']:.0f} | – | {timings['compile']:.0f} (as measured) |")
    total = scaled_total + timings["compile"] + (setup or 0.0)
    measured = sum(r["seconds"] for r in timings["chapters"]) + timings["compile"] + (setup or 0.0)
    print(f"\nchapters: {sum(r['seconds'] for r in timings['chapters']):.0f} s measured, {scaled_total:.0f} s at "
          f"{TARGET_RATE:g} GFLOP/s; in all {measured / 60:.1f} min measured, {total / 60:.1f} min at {TARGET_RATE:g} GFLOP/s "
          f"({'within' if total <= TARGET_MINUTES * 60 else 'over'} the {TARGET_MINUTES:g}-minute target"
          + ("" if setup is not None else "; setup not included") + ")")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
