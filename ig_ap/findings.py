"""A book's findings: each chapter's answer and its claims, recorded where they are computed, gathered on one page.

A chapter states what it found in three places, all from the values it computed on the
page (nothing typed in):

- its **answer**, two or three sentences at the top of the page (``{glue:md}`answer```),
  recorded with :meth:`Findings.answer`; the book's introduction glues every chapter's
  answer from the chapter (``{glue}`02_aligned_baselines.ipynb::answer```);
- its **claims**, each with the number behind it and the figure that shows it, recorded
  with :meth:`Findings.claim` and listed under "What this shows" by :meth:`Findings.show`;
- the claims marked ``headline``, which :func:`findings_page` gathers from every executed
  chapter into the book's Findings page: one table whose values are glued from the
  chapters (``{glue:text}`02_aligned_baselines.ipynb::finding-ioi-r:s```), so that the page
  changes when a chapter's value does.

Each claim is glued twice: its value as ``finding-<key>`` (what other pages glue), and the
whole claim as JSON text as ``claim-<key>`` (what :func:`findings_page` reads to write the
page's rows).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

GLUE_PREFIX = "finding-"
"""Glue name of a claim's value: ``finding-<key>``."""

CLAIM_PREFIX = "claim-"
"""Glue name of the whole claim, as JSON text (what the Findings page reads): ``claim-<key>``."""

ANSWER = "answer"
"""Glue name of a chapter's answer (Markdown on its own page, HTML on other pages)."""


@dataclass
class Claim:
    """One claim of a chapter: what holds (``text``, Markdown), the number behind it (``value``), where it is shown.

    ``figure``: the name of the figure on the chapter's page that shows it, ``figure_number``
    its number there; ``scale``: what the value is measured on ("4 IOI prompts",
    "5 seeds"); ``headline``: whether the book's Findings page lists it.
    """

    key: str
    text: str
    value: str
    figure: str | None = None
    figure_number: int | None = None
    scale: str = ""
    headline: bool = False
    chapter: str = ""
    model: str = ""


class _Plain:
    """Glued as this text exactly (``text/plain``; a ``str`` would be glued with its quotes)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Answer:
    """A chapter's answer: Markdown on its own page (``{glue:md}``), inline HTML where another page glues it."""

    def __init__(self, markdown: str):
        self.markdown = markdown

    def __repr__(self) -> str:
        return self.markdown

    def _repr_markdown_(self) -> str:
        return self.markdown

    def _repr_html_(self) -> str:
        return inline_html(self.markdown)


def inline_html(markdown: str) -> str:
    """``markdown`` (one paragraph: links, emphasis, code) as inline HTML."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").renderInline(markdown)


def value_text(value: Any) -> str:
    """A claim's value as the page prints it: an :class:`~ig_ap.analysis.Interval` as ``value [low, high]``, a float
    with two decimals, anything else as ``str``."""
    if hasattr(value, "format") and hasattr(value, "low"):
        return value.format()
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


@dataclass
class Findings:
    """A chapter's answer and claims. ``page``: the chapter's :class:`~ig_ap.plots.Page` (figure numbers);
    ``chapter``: the notebook's name; ``model``: the model the page is built on."""

    page: Any = None
    chapter: str = ""
    model: str = ""
    claims: list[Claim] = field(default_factory=list)

    def claim(self, key: str, text: str, value: Any, figure: str | None = None, scale: str = "",
              headline: bool = False) -> Claim:
        """Record (and glue as ``finding-<key>``) that ``text`` holds, with ``value`` the number behind it.

        ``key``: letters, digits and ``-``, unique on the page; ``figure``: the name of a figure
        already shown on this page (:meth:`ig_ap.plots.Page.show`) that shows the claim;
        ``headline``: list it on the book's Findings page.
        """
        from myst_nb import glue

        if not re.fullmatch(r"[a-z0-9-]+", key):
            raise ValueError(f"claim key {key!r} must be lower-case letters, digits and '-'")
        if any(c.key == key for c in self.claims):
            raise ValueError(f"claim key {key!r} is used twice on this page")
        number = None
        if figure is not None:
            numbers = getattr(self.page, "numbers", {})
            if figure not in numbers:
                raise ValueError(f"figure {figure!r} is not shown on this page (yet): show it before the claim it supports")
            number = numbers[figure]
        claim = Claim(key, text, value_text(value), figure, number, scale, headline, self.chapter, self.model)
        self.claims.append(claim)
        glue(GLUE_PREFIX + key, _Plain(claim.value), display=False)
        glue(CLAIM_PREFIX + key, _Plain(json.dumps(asdict(claim), ensure_ascii=False)), display=False)
        return claim

    def answer(self, markdown: str) -> None:
        """Glue the chapter's answer (two or three sentences of Markdown) as ``answer``."""
        from myst_nb import glue

        glue(ANSWER, _Answer(markdown), display=False)

    def markdown(self) -> str:
        """The claims as a Markdown list: each claim, its value in bold, a link to its figure."""
        lines = []
        for c in self.claims:
            figure = f" ([Figure {c.figure_number}](#{c.figure}))" if c.figure else ""
            scale = f" ({c.scale})" if c.scale else ""
            lines.append(f"- {c.text}: **{c.value}**{scale}{figure}.")
        return "\n".join(lines)

    def show(self, details: str = "") -> None:
        """Display the claims as a list ("What this shows"), and ``details`` (Markdown) folded under "In detail"."""
        from IPython.display import Markdown, display

        text = self.markdown()
        if details:
            text += f"\n\n<details class=\"findings-details\"><summary>In detail</summary>\n\n{details}\n\n</details>\n"
        display(Markdown(text))


# --------------------------------------------------------------------------- the Findings page


def read_claims(notebook: Path) -> list[Claim]:
    """The claims an executed chapter glued (:meth:`Findings.claim`), in page order."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    claims = []
    for cell in cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name", "")
            text = next((v for k, v in output.get("data", {}).items() if k.endswith("text/plain")), None)
            if name.startswith(CLAIM_PREFIX) and text is not None:
                claims.append(Claim(**json.loads(text if isinstance(text, str) else "".join(text))))
    return claims


def has_answer(notebook: Path) -> bool:
    """Whether an executed chapter glued its answer."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    return any(o.get("metadata", {}).get("scrapbook", {}).get("name") == ANSWER
               for cell in cells for o in cell.get("outputs", []))


def _cell(text: str) -> str:
    """Markdown-table-safe text."""
    return text.replace("|", "\\|").replace("\n", " ")


def findings_page(executed: list[Path], titles: dict[str, str], built: date | None = None, profile: str = "") -> str:
    """The Findings page (MyST Markdown): every chapter's answer, then one table of the headline claims.

    ``executed``: the executed chapters, in book order; ``titles``: each chapter's title by
    notebook stem. Every value is a ``{glue:text}`` reference into its chapter, never
    written here; each row links to the chapter's figure that shows it.
    """
    built = built or date.today()
    claims = {nb.stem: read_claims(nb) for nb in executed}
    models = sorted({c.model for cs in claims.values() for c in cs if c.model})
    lines = ["# Findings", "",
             f"What this book found, chapter by chapter, on **{', '.join(models) or 'the model each chapter names'}**"
             + (f" (`{profile}` profile)" if profile else "") + f", built on {built.isoformat()}. "
             "Each value comes from the chapter's own computation on the page it links to: a mean over prompts "
             "(or seeds) with its 95% interval where the chapter has one, at the scale the row names. "
             "Each row links to the figure that shows it.", ""]
    answered = [nb for nb in executed if has_answer(nb)]
    if answered:
        lines += ["## In short", ""]
        lines += [f"- **[{titles.get(nb.stem, nb.stem)}]({nb.stem})**: {{glue}}`{nb.stem}.ipynb::{ANSWER}`" for nb in answered]
        lines.append("")
    rows = [(nb.stem, c) for nb in executed for c in claims[nb.stem] if c.headline]
    if rows:
        lines += ["## Headline results", "", "| Finding | Value | Measured on | Shown in |", "|---|---|---|---|"]
        for stem, c in rows:
            number = stem.split("_")[0]
            where = f"ch. {int(number)}" if number.isdigit() else _cell(titles.get(stem, stem))
            shown = (f'<a href="{stem}.html#{html.escape(c.figure)}">{where}, Figure {c.figure_number}</a>'
                     if c.figure else f"[{where}]({stem})")
            value = f"{{glue:text}}`{stem}.ipynb::{GLUE_PREFIX}{c.key}:s`"
            lines.append(f"| {_cell(c.text)} | {value} | {_cell(c.scale)} | {shown} |")
        lines.append("")
    return "\n".join(lines)
