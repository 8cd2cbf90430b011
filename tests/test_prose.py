"""No figure is typed into the book's prose.

The rule (stated in book/methods.md, "Numbers in the text"): a decimal number in a Markdown
cell of a chapter or in a page of book/ is a *typed-in figure* unless

- it is written as code (in backticks): a setting or a parameter value, not a measurement;
- its paragraph cites its source: a bibliography role (``{cite}``) or an author-year
  reference such as "(Wang et al. 2023)";
- it is in a table whose preceding paragraph names the script that measured it, in
  backticks (``benchmarks/...``): a measurement made outside the book, with its command.

Everything else a page states as a number is printed by code or glued from a computed value.
"""

import json
import re

from ig_ap.book import ROOT

NUMBER = re.compile(r"(?<![\w.`])[-−]?\d+\.\d+(?![\w`])")
CITATION = re.compile(r"\{cite[^}]*\}|\([A-Z][A-Za-z-]+( et al\.| and [A-Z][A-Za-z-]+)?,? \d{4}[a-z]?\)")
MEASURED_BY = re.compile(r"`(?:\.venv/bin/python )?benchmarks/[\w./-]+")


def typed_figures(text: str) -> list[str]:
    """The paragraphs of Markdown ``text`` that state a decimal figure with no source (see the module's rule)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    found, previous = [], ""
    for paragraph in re.split(r"\n\s*\n", text):
        prose = re.sub(r"`[^`]*`", "", paragraph)
        numbers = NUMBER.findall(prose)
        is_table = paragraph.lstrip().startswith("|")
        sourced = CITATION.search(paragraph) or (is_table and (MEASURED_BY.search(previous) or CITATION.search(previous)))
        if numbers and not sourced:
            found.append(f"{', '.join(numbers[:4])} in {paragraph.strip()[:80]!r}")
        previous = paragraph
    return found


def _markdown_sources():
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{path.name} cell {i}", "".join(cell["source"])
    for path in sorted((ROOT / "book").glob("*.md")):
        yield path.name, path.read_text()


def test_no_figure_is_typed_into_the_book():
    offenders = [f"{where}: {hit}" for where, text in _markdown_sources() for hit in typed_figures(text)]
    assert not offenders, "figures typed into prose (print or glue them, or cite their source):\n" + "\n".join(offenders)


def test_the_rule_catches_a_typed_figure_and_lets_sourced_ones_pass():
    assert typed_figures("IG and AP agree with r = 0.93 on IOI.")
    assert typed_figures("| task | r |\n| --- | --- |\n| IOI | 0.93 |")
    assert not typed_figures("The threshold is `0.5`; r = {glue:text}`r_ioi:.2f`.")
    assert not typed_figures("Mean |r| is about 0.8 on GPT-2 small (Hanna et al. 2024).")
    assert not typed_figures("Measured with `benchmarks/kernels.py`:\n\n| kernel | time |\n| --- | --- |\n| AP | 19.7 s |")
    assert typed_figures("Measured by hand:\n\n| kernel | time |\n| --- | --- |\n| AP | 19.7 s |")
