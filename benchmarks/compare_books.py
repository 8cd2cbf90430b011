"""Compare every printed and drawn number of two builds of the book (a refactor must change none).

    .venv/bin/python benchmarks/compare_books.py BEFORE/_build AFTER/_build [--rtol 1e-4]

For each chapter, every number in every output of the executed notebooks (text, tables,
Markdown, the plotly figures' data) is extracted in order and compared between the two
builds: printed numbers must be equal as printed, a figure's numbers equal within
``--rtol`` (its CSV, ``executed/data/<chapter>/*.csv``, is compared the same way). Lines
that report time, paths or progress bars are left out. Prints one line per difference and
a count per chapter; exits 1 if any number differs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

NUMBER = re.compile(r"[-−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
TIMES = re.compile(r"\(s\)|seconds per|time \(s")
SKIP = re.compile(r"executed in|seconds|\d+(?:\.\d+)? ?s\b|it/s|s/it|/tmp/|/work/|/root/|cache|\d{4}-\d{2}-\d{2}", re.I)


def _printed(notebook: Path) -> list[tuple[str, str]]:
    """(where, text) of every text output of the executed notebook, in order."""
    cells = json.loads(notebook.read_text())["cells"]
    out = []
    for index, cell in enumerate(cells):
        for k, output in enumerate(cell.get("outputs", [])):
            texts = [output.get("text", "")] if output.get("output_type") == "stream" else [
                v for m, v in output.get("data", {}).items() if m in ("text/plain", "text/markdown", "text/html")
                and not ("Plotly.newPlot" in "".join(v) if isinstance(v, list) else "Plotly.newPlot" in v)]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                if TIMES.search(text):  # a table of timings: seconds differ from run to run
                    continue
                out += [(f"cell {index} output {k}", line) for line in text.splitlines() if not SKIP.search(line)]
    return out


def _numbers(text: str) -> list[str]:
    text = re.sub(r"<[^>]*>", " ", text)  # HTML tags and their attributes (a styled table's ids are random)
    return [n.replace("−", "-") for n in NUMBER.findall(text)]


def _close(a: str, b: str, rtol: float) -> bool:
    x, y = float(a), float(b)
    return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= rtol * max(1.0, abs(x), abs(y))


def compare(before: Path, after: Path, rtol: float) -> int:
    differences = 0
    for notebook in sorted((before / "executed").glob("*.ipynb")):
        other = after / "executed" / notebook.name
        if not other.is_file():
            print(f"{notebook.stem}: not in {after}")
            differences += 1
            continue
        counted, here = 0, 0
        a, b = _printed(notebook), _printed(other)
        a_numbers = [(w, n, line) for w, line in a for n in _numbers(line)]
        b_numbers = [(w, n, line) for w, line in b for n in _numbers(line)]
        if len(a_numbers) != len(b_numbers):
            print(f"{notebook.stem}: {len(a_numbers)} printed numbers before, {len(b_numbers)} after")
            here += 1
        for (w, x, line), (_, y, other_line) in zip(a_numbers, b_numbers):
            counted += 1
            if x != y:
                here += 1
                print(f"{notebook.stem} {w}: {x} -> {y}\n    before: {line.strip()[:160]}\n    after:  {other_line.strip()[:160]}")
        drawn = 0
        for table in sorted((before / "executed" / "data" / notebook.stem).glob("*.csv")):
            twin = after / "executed" / "data" / notebook.stem / table.name
            if not twin.is_file():
                print(f"{notebook.stem}: figure data {table.name} missing after")
                here += 1
                continue
            x_values, y_values = _numbers(table.read_text()), _numbers(twin.read_text())
            if len(x_values) != len(y_values):
                print(f"{notebook.stem} {table.name}: {len(x_values)} numbers before, {len(y_values)} after")
                here += 1
            bad = [(x, y) for x, y in zip(x_values, y_values) if not _close(x, y, rtol)]
            drawn += len(x_values)
            if bad:
                here += 1
                print(f"{notebook.stem} {table.name}: {len(bad)} of {len(x_values)} drawn numbers differ, e.g. {bad[:3]}")
        print(f"{notebook.stem}: {counted} printed and {drawn} drawn numbers compared, {here} difference(s)")
        differences += here
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="a build folder (with executed/)")
    parser.add_argument("after", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance for drawn numbers")
    args = parser.parse_args(argv)
    return 1 if compare(args.before, args.after, args.rtol) else 0


if __name__ == "__main__":
    sys.exit(main())
