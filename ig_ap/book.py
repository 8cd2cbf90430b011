"""Run the chapters with papermill and compile the book with Jupyter Book.

``python -m ig_ap.book build`` (what ``make book`` calls):

1. reads the chapters from ``_toc.yml`` (every entry whose file is a notebook in ``book/``);
2. executes each with papermill into ``_build/executed/``, with the parameters of the
   chosen profile (``cpu``: the embedded model on the CPU; ``gpu``: GPT-2 small at the
   original notebooks' scale on CUDA) overridden by ``-p KEY VALUE``; only the
   parameters a chapter declares are passed to it. A chapter whose notebook, parameters
   and ``ig_ap`` sources are unchanged since its last successful run is not run again.
   The first failing chapter stops the build with its error;
3. stages the sources, the executed chapters and ``plotly.min.js`` (served locally, see
   :mod:`ig_ap.plots`) in ``_build/src`` and runs ``jupyter-book build`` on it, which
   writes the site to ``_build/html``.

A chapter's first cell calls :func:`open_chapter` with its parameters (``open_chapter(globals())``):
it checks them (so that ``papermill book/<chapter>.ipynb out.ipynb -p n_prompts abc`` fails
at once with one line that says what is wrong), loads the model and returns a
:class:`Chapter`, which owns where the chapter's results are read and written
(:meth:`Chapter.compute`, :meth:`Chapter.cached`) and where its figures' data go
(:meth:`Chapter.show`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ig_ap
from ig_ap import results
from ig_ap.attribution import SPEED_OPTIONS, Attribution
from ig_ap.export import export
from ig_ap.findings import Findings, findings_page
from ig_ap.ig import MAX_STEPS
from ig_ap.models import EMBEDDED, ModelInfo, ModelUnavailableError, UnknownModelError, load_model, model_info
from ig_ap.plots import Page, plotly_js_path, use_offline_renderer
from ig_ap.sweep import specs_producing
from ig_ap.tasks import IOI_CORRUPTIONS, Task, TaskError, parse_tasks

ROOT = Path(__file__).resolve().parents[1]
"""The repository (where ``_toc.yml`` and ``book/`` live)."""

GPU_MEMORY_MB = 32768
"""The gpu profile's memory budget per kernel pass (MiB)."""

PROFILES: dict[str, dict[str, Any]] = {
    # The default: the embedded model on a 2-core CPU, sized for a cold build of about 20
    # minutes at 150 GFLOP/s (measured: see README, "Build profiles and times"). Every figure
    # is drawn, at the smallest sizes its intervals allow: chapter 2 takes 4 Greater-Than
    # prompts, with its controls (the zero baseline and the control pairing): the embedded
    # model solves all 4; chapters 1 and 3-6 study IOI, and chapter 2 on IOI as well cost 2.5
    # of the 20 minutes (`-p tasks ioi,greater_than`, or `all`: the model solves 3 of
    # Gender-Bias's 4 and 2 of Capital-Country's, intervals too wide to read, or none);
    # chapters 3, 4 and 6 pick heads on half of 8 IOI prompts and test them on the other half
    # (chapters 4 and 6 read chapter 3's attributions from the cache; chapter 6 patches the pairs
    # of heads in the fewest layers holding 99% of the selection prompts' squared IG − AP, 9
    # of 30 on IOI, holding 98% of it on the held-out prompts, at 26% of the cost of every
    # layer's pairs); chapter 5 does the same
    # on 8. One prompt pair in chapter 1 affords more neurons, and 8 points (one per segment of
    # its path profile) where the other chapters start at 4. AP of neurons runs
    # on a seeded random sample of `neurons` per layer plus the top `neurons` of each ranking.
    # A layer starts at 4 Gauss-Legendre points: on the embedded model most layers'
    # completeness error is then about 1e-3 of the gap or less (1e-6 at 12 points), far under
    # the tolerance, and a head's attribution moves by at most 0.006 of the gap against 12
    # points (IOI, 5 prompts). A layer IG cannot bring under the tolerance stops at 32 points
    # and is flagged on its page: refining Capital-Country's layers 0-1 to 64 cost as much as
    # the rest of that task's IG. The `gpu` profile runs everything at the original scale.
    "cpu": {
        "model": EMBEDDED, "device": "cpu", "seed": 0, "n_prompts": 4, "ig_steps": 4, "neurons": 16,
        "chapters": {"00_model": {"n_prompts": 50}, "01_background": {"ig_steps": 8, "neurons": 16, "ig_max_steps": 32},
                     "02_aligned_baselines": {"tasks": "greater_than", "n_prompts": 4, "n_prompts_neurons": 4,
                                              "neurons": 4, "ig_max_steps": 32, "control_tasks": "greater_than"},
                     "03_latent_components": {"n_prompts": 8, "neurons": 4, "ig_max_steps": 32},
                     "04_and_or_toy_models": {"n_prompts": 8, "ig_max_steps": 32},
                     "05_head_patching": {"n_prompts": 8},
                     "06_why_they_disagree": {"n_prompts": 8, "ig_max_steps": 32, "neurons": 4, "pair_coverage": 0.99}},
    },
    # The original notebooks' scale: GPT-2 small, 100 prompts, 50 IG steps, all neurons.
    # The kernels size their passes from memory_mb (rows = component × prompt or step ×
    # prompt): 32 GiB lets one pass hold every head of a layer, or dozens of IG steps, for
    # 100 GPT-2 prompts, where the CPU default of 1 GiB would run one step per pass.
    "gpu": {"model": "gpt2", "device": "cuda", "seed": 0, "n_prompts": 100, "n_prompts_neurons": 100, "ig_steps": 50, "neurons": "all",
            "internal_batch_size": None, "memory_mb": GPU_MEMORY_MB},
}
"""Parameters per profile; ``chapters`` holds per-chapter overrides (by notebook stem)."""


def profile_parameters(profile: str, chapter: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters ``chapter`` runs with under ``profile``: the profile's, its chapter's, then ``overrides``."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    base = {k: v for k, v in PROFILES[profile].items() if k != "chapters"}
    return {**base, **PROFILES[profile].get("chapters", {}).get(chapter, {}), **(overrides or {})}

PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "device": (str, type(None)),
    "seed": (int,),
    "prompt": (str,),
    "clean_prompt": (str,),
    "corrupted_prompt": (str,),
    "answer": (str,),
    "distractor": (str,),
    "top_k": (int,),
    "n_prompts": (int,),
    "n_prompts_neurons": (int,),
    "min_gap": (float, int),
    "n_resamples": (int,),
    "asymmetry_threshold": (float, int),
    "min_effect": (float, int),
    "ig_steps": (int,),
    "ig_tolerance": (float, int, type(None)),
    "ig_max_steps": (int,),
    "internal_batch_size": (int, type(None)),
    "memory_mb": (int, float, type(None)),
    "tasks": (str, list),
    "control_tasks": (str, list),
    "task": (str, type(None)),
    "neurons": (str, int),
    "hidden": (int,),
    "name_movers": (str,),
    "negative_name_movers": (str,),
    "backup_name_movers": (str,),
    "toy_seeds": (int,),
    "results": (str, type(None)),
    "corruption": (str,),
    "compare_corruption": (str,),
    "s_inhibition_layers": (int,),
    "backup_min_share": (float,),
    "pair_coverage": (float, int),
}
"""The type every chapter parameter must have (``None`` allowed where listed)."""


class ParameterError(TypeError):
    """A chapter parameter has the wrong type or value."""


def check_parameters(**values: Any) -> None:
    """Check chapter parameters against :data:`PARAMETER_TYPES`; raise one clear line if one is wrong.

    Called in each chapter's first cell after the ``parameters`` cell, e.g.
    ``check_parameters(model=model, n_prompts=n_prompts)``.
    """
    for key, value in values.items():
        if key not in PARAMETER_TYPES:
            raise ParameterError(f"unknown chapter parameter {key!r}; known: {', '.join(sorted(PARAMETER_TYPES))}")
        types = PARAMETER_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise ParameterError(
                f"parameter {key} must be {names}, got {value!r} ({type(value).__name__}); "
                f"pass it as `-p {key} <{types[0].__name__}>`"
            )
        if key in {"n_prompts", "n_prompts_neurons", "n_resamples", "ig_steps", "ig_max_steps", "internal_batch_size", "top_k", "hidden",
                   "toy_seeds", "s_inhibition_layers"} and value is not None and value < 1:
            raise ParameterError(f"parameter {key} must be at least 1, got {value}")
        if key == "ig_tolerance" and value is not None and value <= 0:
            raise ParameterError(f"parameter ig_tolerance must be positive (a share of the gap) or None, got {value}")
        if key == "min_gap" and not 0 <= value < 1:
            raise ParameterError(f"parameter min_gap must be a share of the median gap in [0, 1), got {value}")
        if key in ("corruption", "compare_corruption") and value not in IOI_CORRUPTIONS:
            raise ParameterError(f"parameter {key} must be an IOI corruption ({', '.join(IOI_CORRUPTIONS)}), got {value!r}")
        if key == "backup_min_share" and not 0 < value < 1:
            raise ParameterError(f"parameter backup_min_share must be a share in (0, 1), got {value}")
        if key == "pair_coverage" and not 0 < value <= 1:
            raise ParameterError(f"parameter pair_coverage must be a share in (0, 1] (1: every layer), got {value}")
        if key == "memory_mb" and value is not None and value <= 0:
            raise ParameterError(f"parameter memory_mb must be positive, got {value}")
        if key == "results" and value is not None and not Path(value).expanduser().is_dir():
            raise ParameterError(f"parameter results must be a folder of sweep results (python -m ig_ap.sweep run SPEC "
                                 f"--results DIR), and {value!r} is not one")
        if key in ("task", "tasks", "control_tasks") and value is not None:
            try:
                parsed = parse_tasks(value)
            except TaskError as error:
                raise ParameterError(f"parameter {key}: {error}") from None
            if key == "task" and len(parsed) != 1:
                raise ParameterError(f"parameter task names one task (a built-in name or a task file), got {value!r}")
        if key == "neurons" and (value != "all" if isinstance(value, str) else value < 1):
            raise ParameterError(f"parameter neurons must be 'all' or a number of neurons per layer (>= 1), got {value!r}")


PAGE_OUTPUT = "IG_AP_PAGE_OUTPUT"
"""Environment variable, set by :func:`execute_chapter` and read by :func:`open_chapter` only (both here): the
folder ``.../data/<chapter>`` of the page being executed. Its figures' CSVs go into it, and the list of the
results the chapter read into ``<folder>.results`` (exported with the book)."""


@dataclass
class Chapter:
    """An open chapter: its model and checked parameters, where its results are read and written, and its page.

    ``results``: the folder attributions are read from and written to (a sweep's results
    when the chapter has a ``results`` parameter, then ``read_only``: a missing one is an
    error naming the sweep spec that produces it, never a computation); ``cache``: where
    other cached computations (:meth:`cached`) go; ``log``: a file listing every
    attribution the chapter read (the book exports exactly those); ``page``: the page's
    figures (:class:`ig_ap.plots.Page`).
    """

    model: Any  # the TransformerBridge
    info: ModelInfo
    parameters: dict[str, Any]
    tasks: list[Task] | None = None  # parsed from the ``tasks`` parameter, when the chapter has one
    results: Path = field(default_factory=lambda: results.results_directory())
    read_only: bool = False
    cache: Path = field(default_factory=lambda: results.results_directory())
    log: Path | None = None
    page: Page = field(default_factory=Page)
    findings: Findings = field(default_factory=Findings)

    @property
    def speed(self) -> dict[str, Any]:
        """The options that change only how fast a result is computed (:data:`~ig_ap.attribution.SPEED_OPTIONS`), from the
        chapter's parameters; no progress bars on a page."""
        return {**{k: self.parameters[k] for k in SPEED_OPTIONS if k in self.parameters}, "progress": False}

    @property
    def quadrature(self) -> dict[str, Any]:
        """IG's points, completeness tolerance and most points, from the ``ig_steps``, ``ig_tolerance`` and
        ``ig_max_steps`` parameters (the last left out at the kernel's default, :data:`ig_ap.ig.MAX_STEPS`, so that
        the results keyed without it, a sweep's among them, are found)."""
        quadrature = {"n_steps": self.parameters["ig_steps"], "tolerance": self.parameters.get("ig_tolerance")}
        most = self.parameters.get("ig_max_steps", MAX_STEPS)
        return quadrature if most == MAX_STEPS else {**quadrature, "max_steps": most}

    @property
    def stats(self) -> dict[str, Any]:
        """The resamples and seed of the statistics that resample (top-k overlaps), from the ``n_resamples`` and ``seed`` parameters."""
        return {"n_resamples": self.parameters.get("n_resamples", 1000), "seed": self.parameters.get("seed", 0)}

    def compute(self, dataset, kernel: str, direction: str = "denoising", **options) -> Attribution:
        """:func:`ig_ap.results.compute` in this chapter's results folder, with its speed options (:attr:`speed`)."""
        try:
            result = results.compute(self.model, dataset, kernel, direction, directory=self.results,
                                     read_only=self.read_only, **{**self.speed, **options})
        except results.MissingResultError as error:
            raise results.MissingResultError(results.missing_message(error.key, error.directory, specs_producing(error.key)),
                                             error.key, error.directory) from None
        self._read(kernel, dataset, direction, options)
        return result

    def compute_ap_neurons(self, dataset, direction: str, neurons, **options) -> Attribution:
        """AP of neurons (all, or those in a mask or dict of masks: :func:`ig_ap.results.compute_ap_neurons`) here."""
        subset = results.neuron_subset(neurons)
        return self.compute(dataset, "ap", direction, components=("neurons",), neurons=subset, **options)

    def _read(self, kernel: str, dataset, direction: str, options: dict) -> None:
        if self.log is not None:
            key = results.compute_key(self.model, dataset, kernel, direction, **options)
            with open(self.log, "a") as log:
                log.write(str(self.results / results.result_name(key)) + "\n")

    def cached(self, function: Callable[..., Any], dataset, **options) -> Any:
        """``function(model, dataset.batch(), **options)`` on every prompt of ``dataset``, from :attr:`cache` when the
        model, the prompts, the options and the code of ``function``'s module are unchanged.

        ``function`` returns an object with ``to_dict()`` (tensors) and a ``from_dict`` class
        method, named as its return annotation (:class:`ig_ap.heads.SetEffects`,
        :class:`ig_ap.analysis.Patched`, ...).
        """
        kind = typing.get_type_hints(function)["return"]
        module = function.__module__.rsplit(".", 1)[-1]
        value = results.memo(self.model, dataset, function.__name__, lambda: function(self.model, dataset.batch(), **options).to_dict(),
                             directory=self.cache, modules=(module,), **options)
        return kind.from_dict(value)

    def built_with(self, *names: str) -> str:
        """The "Built with" line (:func:`built_with`) naming the parameters ``names``."""
        return built_with(self.info, **{k: self.parameters[k] for k in names})

    def show(self, fig, name: str, caption: str) -> None:
        """Show a numbered, captioned figure with its data (:meth:`ig_ap.plots.Page.show`)."""
        self.page.show(fig, name, caption)

    def not_drawn(self, name: str, reason: str) -> None:
        """Say that the figure ``name`` is not drawn and why (:meth:`ig_ap.plots.Page.not_drawn`)."""
        self.page.not_drawn(name, reason)


def open_chapter(namespace: Mapping[str, Any] | None = None, *, show: bool | Sequence[str] = True, **parameters: Any) -> Chapter:
    """Open a chapter: check its parameters, render figures offline, load the model, say what the page is built with.

    Call it in the cell after the ``parameters`` cell as ``open_chapter(globals())``: the
    chapter's parameters are the names of ``namespace`` that are chapter parameters
    (:data:`PARAMETER_TYPES`), so each value is typed once, in the parameters cell.
    Keyword ``parameters`` are added (a chapter opened from code). A wrong one stops the
    chapter at once with one line (:func:`check_parameters`), before the model loads.
    ``show``: display the "Built with" line (:func:`built_with`) with the parameters
    other than ``model``, ``device``, ``seed`` and ``results`` (True), with those named
    only (a sequence of names), or not at all (False).
    """
    parameters = {**{k: v for k, v in (namespace or {}).items() if k in PARAMETER_TYPES}, **parameters}
    check_parameters(**parameters)
    tasks = parse_tasks(parameters["tasks"]) if "tasks" in parameters else None
    use_offline_renderer()
    model = load_model(parameters.get("model", EMBEDDED), device=parameters.get("device"), seed=parameters.get("seed", 0))
    info = model_info(model)
    page_output = os.environ.get(PAGE_OUTPUT)  # set by the book runner: this page's data folder
    source = parameters.get("results")
    chapter = Chapter(model, info, parameters, tasks,
                      results=results.results_directory(None if source is None else Path(source).expanduser()),
                      read_only=source is not None,
                      cache=results.results_directory(),
                      log=Path(page_output).with_suffix(".results") if page_output else None,
                      page=Page(page_output))
    chapter.findings = Findings(chapter.page, Path(page_output).name if page_output else "", info.model_id)
    import pandas as pd

    pd.set_option("display.max_colwidth", None)  # a table's cells in full (pandas cuts them at 50 characters)
    if show:
        from IPython.display import Markdown, display  # only where a chapter runs

        names = [k for k in parameters if k not in ("model", "device", "seed", "results")] if show is True else list(show)
        display(Markdown(built_with(info, **{k: parameters[k] for k in names})))
        if source:
            display(Markdown(f"*Attributions read from the sweep results in* `{source}` (nothing recomputed)."))
    return chapter


def built_with(info, **parameters: Any) -> str:
    """One Markdown line stating the model, device and parameters a page was built with."""
    shown = ", ".join(f"`{k}={v!r}`" for k, v in parameters.items())
    return (f"*Built with* **{info.model_id}** ({info.n_layers} layers × {info.n_heads} heads, "
            f"{info.d_mlp} neurons per layer) on `{info.device}`" + (f", {shown}." if shown else "."))


# --------------------------------------------------------------------------- chapters


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks listed in ``_toc.yml``, in book order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("root", "chapters", "parts", "sections"):
                if key == "root" and isinstance(node.get(key), str):
                    files.append(node[key])
                elif key in node and key != "root":
                    walk(node[key])
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").is_file()]


def chapter_parameters(notebook: Path) -> dict[str, Any]:
    """The parameters a chapter declares in its ``parameters`` cell, with their defaults."""
    import papermill

    return {k: v["default"] for k, v in papermill.inspect_notebook(str(notebook)).items()}


def _source_key(notebook: Path, parameters: dict[str, Any]) -> str:
    """Hash of everything that changes an executed chapter: notebook, parameters (a task file's content among them),
    package sources."""
    from ig_ap.task_files import is_task_file

    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    for key in ("task", "tasks"):
        named = parameters.get(key)
        for name in (named.split(",") if isinstance(named, str) else named or []):
            if is_task_file(name) and Path(str(name).strip()).expanduser().is_file():
                digest.update(Path(str(name).strip()).expanduser().read_bytes())
    for path in sorted(Path(ig_ap.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def execute_chapter(notebook: Path, out_dir: Path, parameters: dict[str, Any], force: bool = False) -> Path:
    """Execute one chapter with papermill into ``out_dir`` (skipped when nothing it depends on changed)."""
    import papermill

    declared = chapter_parameters(notebook)
    passed = {k: v for k, v in parameters.items() if k in declared}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    stamp = out_dir / f"{notebook.stem}.key"
    key = _source_key(notebook, passed)
    if not force and target.is_file() and stamp.is_file() and stamp.read_text() == key:
        print(f"  {notebook.stem}: unchanged, reusing {target.relative_to(out_dir.parent.parent)}")
        return target
    partial = out_dir / f".{notebook.stem}.running.ipynb"
    data = out_dir / "data" / notebook.stem  # each figure's CSV (Chapter.show), copied next to the page
    shutil.rmtree(data, ignore_errors=True)
    started = time.perf_counter()
    used = out_dir / "data" / f"{notebook.stem}.results"  # the results the chapter reads, for the book's export
    used.parent.mkdir(parents=True, exist_ok=True)
    used.unlink(missing_ok=True)
    previous = os.environ.get(PAGE_OUTPUT)
    os.environ[PAGE_OUTPUT] = str(data)  # the kernel inherits it; open_chapter reads it
    try:
        papermill.execute_notebook(
            str(notebook), str(partial), parameters=passed, cwd=str(notebook.parent),
            kernel_name="python3", progress_bar=True, request_save_on_cell_execute=False,
        )
    except papermill.PapermillExecutionError as err:
        message = f"{err.ename}: {err.evalue}".splitlines()[0]
        raise ChapterFailed(
            f"chapter {notebook.stem} failed in cell {err.exec_count}: {message} "
            f"(the executed copy is at {partial})"
        ) from None
    finally:
        if previous is None:
            os.environ.pop(PAGE_OUTPUT, None)
        else:
            os.environ[PAGE_OUTPUT] = previous
    partial.replace(target)
    stamp.write_text(key)
    print(f"  {notebook.stem}: executed in {time.perf_counter() - started:.1f} s")
    return target


class ChapterFailed(RuntimeError):
    """A chapter raised while papermill executed it."""


# --------------------------------------------------------------------------- the book


def stage(root: Path, executed: list[Path], src: Path, task_book: bool = False, profile: str = "") -> Path:
    """Assemble the book sources (config, pages, executed chapters, local plotly.js) in ``src``; ``task_book``: the
    chapters' cells for a book on a task file (:func:`build_task_book` then writes its own contents and title page).

    The Findings page (:data:`FINDINGS_PAGE`) is written here from the executed chapters'
    claims (:func:`ig_ap.findings.findings_page`); its values are glued from the chapters."""
    if src.exists():
        shutil.rmtree(src)
    (src / "_static").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copy2(root / name, src / name)
    for path in (root / "book").rglob("*"):
        if path.is_file() and path.suffix != ".ipynb" and ".ipynb_checkpoints" not in path.parts:
            dest = src / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    for notebook in executed:
        _show_parameters_once(notebook, src / "book" / notebook.name, task_book)
    titles = {**_toc_titles(root / "_toc.yml"), **({k: v[1] for k, v in TASK_CHAPTERS.items()} if task_book else {})}
    (src / FINDINGS_PAGE).write_text(findings_page(executed, titles, profile=profile))
    if (root / "_static").is_dir():
        shutil.copytree(root / "_static", src / "_static", dirs_exist_ok=True)
    shutil.copy2(plotly_js_path(), src / "_static" / "plotly.min.js")
    write_coverage_table(src / "book" / "data" / COVERAGE_TABLE)
    return src


FINDINGS_PAGE = "book/findings.md"
"""The Findings page, written by :func:`stage` (the table of contents lists it after the introduction)."""


def _toc_titles(toc: Path) -> dict[str, str]:
    """Each chapter's title in the table of contents ``toc``, by notebook stem."""
    import yaml

    entries = yaml.safe_load(toc.read_text()).get("chapters", [])
    return {Path(e["file"]).name: e["title"] for e in entries if isinstance(e, dict) and "title" in e}


COVERAGE_TABLE = "coverage.csv"
"""The methods page's table of measured interval coverage (:func:`ig_ap.analysis.coverage_table`), written at build time."""


def write_coverage_table(path: Path, n_trials: int = 1000) -> Path:
    """The coverage simulation of the book's interval methods as the CSV the methods page shows (percentages)."""
    from ig_ap.analysis import coverage_table

    table = coverage_table(n_trials=n_trials)
    sizes = [c for c in table.columns if c.startswith("n = ")]
    table[sizes] = (100 * table[sizes]).round(1)
    table = table.rename(columns={c: f"{c} (%)" for c in sizes})
    table["Monte Carlo s.e. (points)"] = round(100 * table.attrs["monte_carlo_se"], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def build(
    profile: str = "cpu",
    only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    root: Path = ROOT,
    out: Path | None = None,
    force: bool = False,
) -> Path:
    """Execute the chapters and build the HTML book in ``out`` (default ``_build``); returns ``out/html/index.html``.

    ``out`` holds ``executed/`` (the executed chapters), ``src/`` (the staged sources) and
    ``html/`` (the site).
    """
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    out = Path(out or root / "_build").resolve()
    notebooks = chapters(root)
    started = time.perf_counter()
    executed = _execute_chapters(notebooks, profile, only, overrides, out, force)
    _compile(stage(root, executed, out / "src", profile=profile), out)
    _drop_thebe(out / "html")
    _collect_data(executed, out)
    manifest = {"profile": profile, "overrides": overrides or {}, "pages": _pages_key(root),
                "chapters": {n.stem: (out / "executed" / f"{n.stem}.key").read_text() for n in notebooks}}
    (out / "html" / BUILD_MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    index = out / "html" / "index.html"
    print(f"Book built in {time.perf_counter() - started:.1f} s: {index}")
    return index


# --------------------------------------------------------------------------- a book on your task


TASK_CHAPTERS: dict[str, tuple[str, str]] = {
    "00_model": ("tasks", "The model and its task"),
    "01_background": ("task", "1. Background: IG and AP on one prompt pair"),
    "02_aligned_baselines": ("tasks", "2. Aligned baselines"),
    "03_latent_components": ("tasks", "3. Latent components: both directions"),
    "06_why_they_disagree": ("tasks", "6. Why IG and AP disagree"),
}
"""The chapters that apply to any task: the parameter each takes a task file by, and its title in a book on a task
file. Chapters 4 (the AND/OR toy networks, checked on the built-in tasks) and 5 (IOI's name movers) are about the
built-in tasks and are left out of it."""

TASK_PAGES = ("book/methods", "book/bibliography")
"""The pages a book on a task file has after its chapters."""

TASK_PROMPTS = {"cpu": 20, "gpu": 100}
"""A book on a task file runs chapters 2, 3 and 6 on every row of the file, or a seeded sample of this many (per profile;
``-p n_prompts N`` overrides it): one task affords as many prompts as the built-in book spends on four."""


def build_task_book(
    task: str | Path,
    model: str | None = None,
    profile: str = "cpu",
    overrides: dict[str, Any] | None = None,
    root: Path = ROOT,
    out: Path | None = None,
    force: bool = False,
) -> Path:
    """Build the chapters that apply to any task (:data:`TASK_CHAPTERS`) on the task file ``task``; returns the site's
    ``index.html``.

    The file and the model are checked first, before any chapter runs: every row (one line
    naming the row and the fix, :func:`ig_ap.task_files.load_task_file`), and that the
    model solves at least one pair (chapter 1 runs on the first it solves). The book goes
    to ``out`` (default ``_build/task-<file stem>``), its title page naming the file, its
    content hash, the layout, the metric, the model and the rows kept; the contents say
    which chapters are left out and why. ``model``: a name or a checkpoint folder (the
    profile's model by default); ``overrides``: chapter parameters, as ``-p KEY VALUE``.
    """
    from ig_ap.tasks import make_dataset, solved_pair

    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    path = Path(task).expanduser().resolve()
    overrides = {**(overrides or {}), **({"model": str(model)} if model else {})}
    check_parameters(**overrides, task=str(path))
    base = profile_parameters(profile, "", overrides)
    bridge = load_model(base["model"], device=base.get("device"), seed=base.get("seed", 0))
    dataset = make_dataset(path, bridge)  # every row checked, before any chapter runs
    pair = solved_pair(bridge, path, seed=base.get("seed", 0))
    info = model_info(bridge)
    del bridge  # each chapter loads its own
    first = {"prompt": pair.clean_prompts[0], "answer": "", "distractor": ""}  # chapter 0's prompt: chapter 1's pair's
    if pair.candidates is None:  # its first answer and first wrong answer (a Greater-Than layout has years instead)
        ids = pair.answers[0].tolist()
        first.update(answer=info.tokenizer.decode([ids[0]]), distractor=info.tokenizer.decode([ids[len(ids) // 2]]))
    n_prompts = min(len(dataset), overrides.get("n_prompts", TASK_PROMPTS.get(profile, len(dataset))))
    out = Path(out or root / "_build" / f"task-{path.stem}").resolve()
    notebooks = [n for n in chapters(root) if n.stem in TASK_CHAPTERS]
    started = time.perf_counter()
    executed = []
    for i, notebook in enumerate(notebooks, 1):
        parameter = TASK_CHAPTERS[notebook.stem][0]
        sized = {"n_prompts": n_prompts} if notebook.stem in ("02_aligned_baselines", "03_latent_components", "06_why_they_disagree") else \
            first if notebook.stem == "00_model" else {}
        if notebook.stem == "02_aligned_baselines":
            sized["control_tasks"] = "all"  # the book's one task gets its controls
        parameters = profile_parameters(profile, notebook.stem, {**sized, **overrides, parameter: str(path)})
        print(f"[{i}/{len(notebooks)}] {notebook.stem} on {path.name} ({profile} profile)", flush=True)
        executed.append(execute_chapter(notebook, out / "executed", parameters, force=force))
    src = stage(root, executed, out / "src", task_book=True, profile=profile)
    _write_task_contents(src, notebooks)
    (src / "book" / "intro.md").write_text(task_title_page(dataset, pair, info, profile, n_prompts, notebooks, root))
    _compile(src, out)
    _drop_thebe(out / "html")
    _collect_data(executed, out)
    manifest = {"profile": profile, "overrides": overrides, "task": str(path), "sha256": dataset.task.sha256,
                "chapters": {n.stem: (out / "executed" / f"{n.stem}.key").read_text() for n in notebooks}}
    (out / "html" / BUILD_MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    index = out / "html" / "index.html"
    print(f"Book on {path.name} built in {time.perf_counter() - started:.1f} s: {index}")
    return index


def _write_task_contents(src: Path, notebooks: list[Path]) -> None:
    """The table of contents of a book on a task file: its title page, the chapters that apply, the methods and references."""
    import yaml

    toc = {"format": "jb-book", "root": "book/intro",
           "chapters": [{"file": FINDINGS_PAGE.removesuffix(".md"), "title": "Findings"}]
           + [{"file": f"book/{n.stem}", "title": TASK_CHAPTERS[n.stem][1]} for n in notebooks]
           + [{"file": page} for page in TASK_PAGES]}
    (src / "_toc.yml").write_text("# Written by ig_ap.book.build_task_book\n" + yaml.safe_dump(toc, sort_keys=False))


def task_title_page(dataset, pair, info: ModelInfo, profile: str, n_prompts: int, notebooks: list[Path], root: Path = ROOT) -> str:
    """The title page of a book on a task file (Markdown): the file, its hash, layout and metric, the model, the rows kept."""
    from ig_ap.tasks import metric_name

    extra, task = dataset.extra, dataset.task
    dropped = extra["dropped"]
    listed = ", ".join(f"row {d['row']} ({d['problem']})" for d in dropped)
    kept = f"{len(dataset)} of {extra['rows']} rows kept" + (f"; dropped: {listed}" if dropped else "")
    rows = {
        "task file": f"`{extra['path']}`",
        "SHA-256 of its bytes": f"`{task.sha256}` (results are cached under `{task.value}`)",
        "layout": extra["layout"],
        "metric": metric_name(task),
        "rows": kept,
        "model": f"{info.model_id} (`{info.hf_name}`): {info.n_layers} layers × {info.n_heads} heads, {info.d_mlp} neurons per layer",
        "profile": f"`{profile}`; chapters 2, 3 and 6 on {n_prompts} of the rows",
        "chapter 1's pair": f"row {extra['row_numbers'][_row_of(dataset, pair)]}: {pair.clean_prompts[0]!r} / {pair.corrupted_prompts[0]!r}",
        "built": f"{time.strftime('%Y-%m-%d')} with ig-ap {ig_ap.__version__}",
    }
    contents = "\n".join(f"- [{TASK_CHAPTERS[n.stem][1]}]({n.stem})" for n in notebooks)
    table = "\n".join(f"| {k} | {v.replace('|', '&#124;')} |" for k, v in rows.items())
    return f"""# IG versus AP on {task.title}

This book runs the chapters of ig-ap that apply to any task on one file of prompt pairs:
where integrated gradients (IG) and activation patching (AP) agree about which attention
heads and MLP neurons carry out the task, and where they do not. Every row of the file was
checked before any chapter ran.

| | |
|---|---|
{table}

## Contents

{contents}
- [Methods](methods): how each number is computed and checked, and the intervals' coverage.
- [References](bibliography)

Chapters 4 (AND/OR toy networks) and 5 (linear-combination head patching, direct logit
attribution and path patching of IOI's name movers) are about the book's built-in tasks, so
they are left out here; `make book` builds the whole book on the built-in tasks.

Rebuild this book with `python -m ig_ap.book build --task {extra['path']}` (add `--model NAME|PATH`
for another model, `-p KEY VALUE` for a chapter parameter); rerun one chapter with
`papermill book/02_aligned_baselines.ipynb out.ipynb -p tasks {extra['path']}`.
"""


def _row_of(dataset, pair) -> int:
    """The index in ``dataset`` of the one pair in ``pair``."""
    return next(i for i, (c, k) in enumerate(zip(dataset.clean_prompts, dataset.corrupted_prompts))
                if c == pair.clean_prompts[0] and k == pair.corrupted_prompts[0])


def _execute_chapters(notebooks: list[Path], profile: str, only: list[str] | None, overrides: dict[str, Any] | None,
                      out: Path, force: bool) -> list[Path]:
    """Execute every chapter (those in ``only``, if given; the others must have run before); their executed copies."""
    if only:
        unknown = set(only) - {n.stem for n in notebooks}
        if unknown:
            raise ParameterError(
                f"unknown chapter(s) {', '.join(sorted(unknown))}; chapters: {', '.join(n.stem for n in notebooks)}"
            )
    executed = []
    for i, notebook in enumerate(notebooks, 1):
        target = out / "executed" / notebook.name
        if only and notebook.stem not in only:
            if not target.is_file():
                raise ChapterFailed(f"chapter {notebook.stem} has never been executed; build it once without --only")
            executed.append(target)
            continue
        print(f"[{i}/{len(notebooks)}] {notebook.stem} ({profile} profile)", flush=True)
        parameters = profile_parameters(profile, notebook.stem, overrides)
        executed.append(execute_chapter(notebook, out / "executed", parameters, force=force))
    return executed


def _compile(src: Path, out: Path) -> None:
    """Run Jupyter Book on the staged sources ``src`` and put the site in ``out/html``; an unresolved reference fails."""
    print("Compiling the book with Jupyter Book ...", flush=True)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(src), "--path-output", str(_jupyter_book_output(out))]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise ChapterFailed(f"jupyter-book build failed (exit {result.returncode}); its output is above")
    problems = [line for line in (result.stdout + result.stderr).splitlines() if any(p in line for p in BUILD_ERRORS)]
    if problems:
        sys.stderr.write("\n".join(problems) + "\n")
        raise ChapterFailed(f"the book has {len(problems)} unresolved reference(s), the first: {_plain_line(problems[0])}")
    site = _jupyter_book_output(out) / "_build" / "html"
    if site != out / "html":  # move the finished site into place
        shutil.rmtree(out / "html", ignore_errors=True)
        site.replace(out / "html")


def _collect_data(executed: list[Path], out: Path) -> None:
    """Each figure's CSV next to its page, and every attribution the chapters read as one table (the methods page links it)."""
    used = []
    for notebook in executed:
        data = notebook.parent / "data" / notebook.stem
        if data.is_dir():
            shutil.copytree(data, out / "html" / "book" / "data" / notebook.stem, dirs_exist_ok=True)
        log = notebook.parent / "data" / f"{notebook.stem}.results"
        used += log.read_text().split() if log.is_file() else []
    export(None, out / "html" / "data" / RESULTS_EXPORT, paths=used)


RESULTS_EXPORT = "results.parquet"
"""The site's export of every attribution its chapters read (:func:`ig_ap.export.export_table`), in ``data/``."""

BUILD_MANIFEST = ".ig_ap-build.json"
"""Written into the site by :func:`build`: what it was built from, so that :func:`publish` can tell it is current."""


def _pages_key(root: Path) -> str:
    """Hash of the book's sources other than the chapters: configuration, table of contents, bibliography, pages."""
    digest = hashlib.sha256()
    paths = [root / "_config.yml", root / "_toc.yml", root / "references.bib", *sorted((root / "book").glob("*.md")),
             *sorted((root / "_static").glob("*"))]
    for path in paths:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


class NotCurrent(RuntimeError):
    """The built site is missing, incomplete, or older than its sources."""


def check_current(out: Path | None = None, root: Path = ROOT) -> dict[str, Any]:
    """The manifest of the site in ``out/html`` if it is complete and built from the current sources, else :class:`NotCurrent`."""
    out = Path(out or root / "_build")
    manifest_path = out / "html" / BUILD_MANIFEST
    if not (out / "html" / "index.html").is_file() or not manifest_path.is_file():
        raise NotCurrent(f"no complete book in {out / 'html'}; build it first (make book)")
    manifest = json.loads(manifest_path.read_text())
    if manifest["pages"] != _pages_key(root):
        raise NotCurrent("the book's pages, configuration or bibliography changed since it was built; run make book again")
    for notebook in chapters(root):
        passed = {k: v for k, v in profile_parameters(manifest["profile"], notebook.stem, manifest["overrides"]).items()
                  if k in chapter_parameters(notebook)}
        if manifest["chapters"].get(notebook.stem) != _source_key(notebook, passed):
            raise NotCurrent(f"chapter {notebook.stem} changed since the book was built (or was never built); run make book again")
        if not (out / "html" / "book" / f"{notebook.stem}.html").is_file():
            raise NotCurrent(f"the site has no page for chapter {notebook.stem}; run make book again")
    return manifest


def publish(remote: str = "origin", out: Path | None = None, root: Path = ROOT, branch: str = "gh-pages",
            repository: Path | None = None) -> str:
    """Push the built site to ``branch`` of ``remote`` with ghp-import (Jupyter Book 1's way), after :func:`check_current`.

    ``remote``: a remote's name or a repository URL or path. ``repository``: the git
    repository whose ``branch`` ghp-import writes before pushing (this one by default).
    Returns the commit pushed.
    """
    out = Path(out or root / "_build")
    manifest = check_current(out, root)
    repository = Path(repository or root)
    ghp = Path(sys.executable).parent / "ghp-import"
    message = f"Publish the book ({manifest['profile']} profile) from {_head(repository)}"
    command = [str(ghp) if ghp.exists() else "ghp-import", "--no-jekyll", "--push", "--force", "--remote", remote,
               "--branch", branch, "--message", message, str((out / "html").resolve())]
    result = subprocess.run(command, cwd=repository, capture_output=True, text=True)
    if result.returncode != 0:
        raise ChapterFailed(f"ghp-import could not publish to {remote}: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return subprocess.run(["git", "rev-parse", branch], cwd=repository, capture_output=True, text=True).stdout.strip()


def _head(repository: Path) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repository, capture_output=True, text=True)
    return head.stdout.strip() or "an unversioned tree"


BUILD_ERRORS = ("could not find bibtex key", "Glue reference", "[mystnb.glue]", "undefined label", "unknown document",
                "reference target not found", "cross-reference target not found")
"""Sphinx warnings that fail the build: a citation, figure reference or link that resolves to nothing."""


_THEBE = re.compile(r'\s*<script>const THEBE_JS_URL = [^<]*</script>|\s*<script async="async" src="[^"]*sphinx-thebe\.js[^"]*"></script>')


def _drop_thebe(site: Path) -> None:
    """Remove sphinx-thebe's scripts from every page.

    Jupyter Book 1 loads sphinx-thebe even with ``launch_buttons.thebe: false``, and its
    inline script is emitted twice, so every page raised "Identifier 'THEBE_JS_URL' has
    already been declared" in the console. The book has no live code cells (and runs
    offline), so thebe has nothing to do: its scripts go.
    """
    for page in site.rglob("*.html"):
        text = page.read_text()
        cleaned = _THEBE.sub("", text)
        if cleaned != text:
            page.write_text(cleaned)


def _plain_line(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line).strip()


BUILT_IN_ONLY, TASK_FILE_ONLY = "builtin-tasks", "task-file"
"""Cell tags: a cell about the built-in tasks only (left out of a book on a task file), or about a task file only (left
out of the book on the built-in tasks). Both run; the tag decides which one the page shows."""


SHOW_INPUT = "show-input"
"""Cell tag: a code cell whose code is the point, shown open on the page; every other code cell is folded."""


def _show_parameters_once(executed: Path, staged: Path, task_book: bool = False) -> None:
    """Copy an executed chapter for Jupyter Book, leaving out its defaults cell where papermill injected the values used,
    and the cells for the other kind of book (:data:`BUILT_IN_ONLY`, :data:`TASK_FILE_ONLY`), with its code folded.

    The injected cell (tagged ``injected-parameters``) holds the parameters this build ran
    with; the defaults cell above it would show other values. Every code cell is folded
    behind Jupyter Book's toggle (``hide-input``: its outputs stay in view, the reader can
    open the code), except those tagged :data:`SHOW_INPUT`; the chapters themselves are not
    changed, so papermill runs them as before.
    """
    notebook = json.loads(executed.read_text())
    injected = any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in notebook["cells"])
    other = BUILT_IN_ONLY if task_book else TASK_FILE_ONLY
    for cell in notebook["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if (("parameters" in tags and injected) or other in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
        if (cell["cell_type"] == "code" and SHOW_INPUT not in tags
                and not {"remove-cell", "remove-input", "hide-input", "hide-cell"} & set(tags)):
            tags.append("hide-input")
    staged.write_text(json.dumps(notebook, indent=1, ensure_ascii=False))


def _jupyter_book_output(out: Path) -> Path:
    """The ``--path-output`` for Jupyter Book, which always writes to ``<path-output>/_build/html``.

    For ``out`` named ``_build`` that is ``out.parent``, and the site lands in ``out/html``
    directly; otherwise it is ``out/.jupyter-book`` and :func:`build` moves the site from
    there to ``out/html``.
    """
    return out.parent if out.name == "_build" else out / ".jupyter-book"


def _parse_value(text: str) -> Any:
    """Parse a ``-p`` value the way papermill does: int, float, bool, None, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ig_ap.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute the chapters and build the HTML book into _build/html")
    b.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    b.add_argument("--only", action="append", metavar="CHAPTER", help="run only this chapter (repeatable)")
    b.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    b.add_argument("--force", action="store_true", help="re-execute chapters even when nothing changed")
    b.add_argument("--task", metavar="FILE", help="build the chapters that apply to any task on this task file "
                   "(.csv, .jsonl, .json) into _build/task-<stem>")
    b.add_argument("--model", metavar="NAME|PATH", help="the model: a name or a checkpoint folder (with --task; else -p model)")
    b.add_argument("--out", metavar="DIR", help="where the book goes (default _build, or _build/task-<stem> with --task)")
    sub.add_parser("chapters", help="list the chapters and their parameters")
    pub = sub.add_parser("publish", help="push the built site to a gh-pages branch (after checking it is current)")
    pub.add_argument("--remote", default="origin", help="a remote's name, or a repository URL or path (default: origin)")
    pub.add_argument("--branch", default="gh-pages")
    args = parser.parse_args(argv)
    try:
        if args.command == "chapters":
            for notebook in chapters():
                print(notebook.stem, chapter_parameters(notebook))
            return 0
        if args.command == "publish":
            commit = publish(args.remote, branch=args.branch)
            print(f"published {ROOT / '_build' / 'html'} to {args.branch} of {args.remote} ({commit[:12]})")
            return 0
        overrides = {k: _parse_value(v) for k, v in args.parameter}
        if args.model:
            overrides["model"] = args.model
        check_parameters(**overrides)
        out = Path(args.out).expanduser() if args.out else None
        if args.task:
            if args.only:
                raise ParameterError("--only builds chapters of the book on the built-in tasks; leave it out with --task")
            build_task_book(args.task, profile=args.profile, overrides=overrides, out=out, force=args.force)
        else:
            build(args.profile, args.only, overrides, out=out, force=args.force)
    except (ParameterError, ChapterFailed, NotCurrent, TaskError, UnknownModelError, ModelUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
