"""The chapter runner and the built book: chapters execute on a tiny model, pages render offline."""

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pandas as pd
import pytest

from ig_ap import book, findings

from conftest import TINY


def test_check_parameters_rejects_wrong_types_in_one_line():
    book.check_parameters(model="gpt2", n_prompts=4, device=None, tasks=["ioi"])
    book.check_parameters(neurons="all")
    book.check_parameters(neurons=8)
    book.check_parameters(pair_coverage=1, top_k=3)
    for bad in [dict(n_prompts="abc"), dict(n_prompts=2.5), dict(n_prompts=True), dict(device=3), dict(n_prompts=0),
                dict(neurons="some"), dict(neurons=0), dict(control_tasks="nope"), dict(control_tasks=3),
                dict(pair_coverage=0.0), dict(pair_coverage=1.5), dict(pair_coverage="all")]:
        with pytest.raises(book.ParameterError) as err:
            book.check_parameters(**bad)
        assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)
    with pytest.raises(book.ParameterError, match="unknown chapter parameter"):
        book.check_parameters(n_promts=3)


def test_profiles_give_each_chapter_its_parameters():
    cpu = book.profile_parameters("cpu", "02_aligned_baselines")
    assert cpu["model"] == "smollm2-135m" and cpu["device"] == "cpu" and "chapters" not in cpu
    assert book.profile_parameters("cpu", "01_background")["neurons"] != cpu["neurons"]  # a per-chapter override
    assert book.profile_parameters("cpu", "01_background", {"neurons": 3})["neurons"] == 3  # -p wins
    gpu = book.profile_parameters("gpu", "02_aligned_baselines")
    assert (gpu["model"], gpu["device"], gpu["n_prompts"], gpu["ig_steps"], gpu["neurons"]) == ("gpt2", "cuda", 100, 50, "all")
    for name in book.PROFILES:
        for notebook in book.chapters():
            values = book.profile_parameters(name, notebook.stem)
            book.check_parameters(**{k: v for k, v in values.items() if k in book.chapter_parameters(notebook)})
        # chapter 6 reads chapter 3's IG and AP of neurons from the cache: the same prompts, points and neurons
        shared = ("n_prompts", "ig_steps", "ig_max_steps", "neurons", "seed", "model")
        three, six = (book.profile_parameters(name, stem) for stem in ("03_latent_components", "06_why_they_disagree"))
        assert {k: three.get(k) for k in shared} == {k: six.get(k) for k in shared}, name
    with pytest.raises(book.ParameterError, match="unknown profile"):
        book.profile_parameters("tpu", "00_model")


def test_parse_value_matches_papermill():
    assert book._parse_value("8") == 8 and book._parse_value("0.5") == 0.5
    assert book._parse_value("None") is None and book._parse_value("gpt2") == "gpt2"


def test_chapters_come_from_the_toc_and_declare_their_parameters():
    notebooks = book.chapters()
    assert [n.stem[:2] for n in notebooks] == ["00", "01", "02", "03", "04", "05", "06"]
    for notebook in notebooks:
        declared = book.chapter_parameters(notebook)
        assert {"model", "device", "seed"} <= set(declared), notebook
        assert set(declared) <= set(book.PARAMETER_TYPES), notebook
        cells = json.loads(notebook.read_text())["cells"]
        ids = [cell.get("id") for cell in cells]
        assert None not in ids and len(set(ids)) == len(ids), f"{notebook.name}: every cell needs its own id (nbformat 4.5)"


def test_a_wrong_parameter_stops_the_chapter_with_a_clear_error(tmp_path):
    notebook = book.chapters()[0]
    with pytest.raises(book.ChapterFailed, match="ParameterError: parameter top_k must be int"):
        book.execute_chapter(notebook, tmp_path, {**TINY, "top_k": "ten"})
    assert not (tmp_path / notebook.name).exists(), "a failed chapter must not leave an executed copy"


def test_an_unknown_model_stops_the_chapter_with_a_clear_error(tmp_path):
    with pytest.raises(book.ChapterFailed, match="UnknownModelError: unknown model 'nope'"):
        book.execute_chapter(book.chapters()[0], tmp_path, {**TINY, "model": "nope"})




def test_the_site_is_built_where_build_says(built_book):
    out, index = built_book
    assert index == out.resolve() / "html" / "index.html" and index.is_file()
    assert not (out.parent / "_build").exists(), "the book was built beside `out` instead of inside it"


def test_every_chapter_executes_on_a_tiny_model(built_book):
    out, _ = built_book
    for notebook in book.chapters():
        executed = nbformat.read(out / "executed" / notebook.name, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, notebook.stem
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "tiny-gpt2" in injected[0].source


def test_unchanged_chapters_are_not_executed_again(built_book, capsys):
    out, _ = built_book
    notebook = book.chapters()[0]
    book.execute_chapter(notebook, out / "executed", book.profile_parameters("cpu", notebook.stem, TINY))
    assert "unchanged" in capsys.readouterr().out


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package; install it by hand")


def _rendered(url: str, width: int = 1280) -> tuple[str, list[str]]:
    """The DOM of a page after its scripts ran, and its console messages, in headless Chromium (outside hosts unresolvable)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--enable-logging=stderr", "--v=0", f"--window-size={width},900",
                "--virtual-time-budget=10000", "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    console = re.findall(r":CONSOLE[^\]]*\] (.*)", result.stderr)
    return result.stdout, console


CONSOLE_ERROR = re.compile(r"Uncaught|Error\b|Failed to load|Refused to|net::ERR")
"""A console message that is an error: an exception, a failed or refused load."""


@pytest.fixture(scope="module")
def served_book(built_book):
    out, _ = built_book
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(out / "html")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
    port = int(re.search(r"port (\d+)", line).group(1))
    yield out / "html", f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait()


def test_every_page_loads_without_console_errors_and_draws_every_figure_offline(served_book):
    html_dir, base = served_book
    pages = sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html") if "_static" not in p.parts)
    assert "book/bibliography.html" in pages and "search.html" in pages
    total = 0
    for page in pages:
        source = (html_dir / page).read_text()
        expected = source.count("Plotly.newPlot(")
        dom, console = _rendered(f"{base}/{page}")
        errors = [line for line in console if CONSOLE_ERROR.search(line)]
        assert not errors, f"{page}: {errors}"
        drawn = len(re.findall(r'<svg[^>]*class="main-svg"', dom))
        # each drawn plotly figure has two main-svg layers (the plot and its overlay)
        assert drawn >= 2 * expected, f"{page}: {expected} figures, {drawn // 2} drawn"
        total += expected
    assert total >= 20


def test_search_works_offline(served_book):
    _, base = served_book
    dom, console = _rendered(f"{base}/search.html?q=integrated")
    results = re.findall(r'<ul class="search">(.*?)</ul>', dom, re.S)
    assert results and results[0].count("<li") >= 3, "no search results for 'integrated'"
    assert not [line for line in console if CONSOLE_ERROR.search(line)]


def test_every_internal_and_download_link_resolves(built_book):
    out, _ = built_book
    html_dir = out / "html"
    ids: dict[Path, set[str]] = {}
    checked = 0
    for page in html_dir.rglob("*.html"):
        if "_static" in page.relative_to(html_dir).parts:
            continue  # the theme's template fragments, not pages
        text = page.read_text()
        for target in re.findall(r'(?:href|src)="([^"]+)"', text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # another site, mailto:, data: (and no page may load one: see below)
            path, _, fragment = target.partition("#")
            resolved = page if not path else (page.parent / unquote(path.split("?")[0])).resolve()
            assert resolved.is_file(), f"{page.relative_to(html_dir)}: {target} resolves to nothing"
            if fragment and resolved.suffix == ".html":
                if resolved not in ids:
                    ids[resolved] = set(re.findall(r'\sid="([^"]+)"', resolved.read_text()))
                assert fragment in ids[resolved], f"{page.relative_to(html_dir)}: no #{fragment} in {resolved.name}"
            checked += 1
    assert checked > 100


def test_figures_are_numbered_captioned_and_come_with_their_data(built_book):
    out, _ = built_book
    for notebook in book.chapters():
        page = (out / "html" / "book" / f"{notebook.stem}.html").read_text()
        figures = page.count("Plotly.newPlot(")
        numbers = [int(n) for n in re.findall(r'class="figure-caption" id="fig-[^"]+"><strong>Figure (\d+)\.</strong>', page)]
        assert numbers == list(range(1, figures + 1)), notebook.stem  # every figure captioned, numbered in order
        for csv in re.findall(r'href="(data/[^"]+\.csv)" download', page):
            table = pd.read_csv(out / "html" / "book" / csv)
            assert len(table) and {"trace", "x", "y"} <= set(table.columns), csv
        assert len(re.findall(r'href="data/[^"]+\.csv" download', page)) == figures
        # the text refers to figures by number, through links that resolve (checked above)
        if figures:
            assert re.search(r'<a href="#fig-[^"]+">Figure \d+</a>', page), notebook.stem


def test_the_site_exports_every_attribution_its_chapters_read(built_book):
    out, _ = built_book
    table = pd.read_parquet(out / "html" / "data" / book.RESULTS_EXPORT)
    assert set(table.model) == {"tiny-gpt2-s0"} and {"ap", "ig", "atp"} <= set(table.method)
    tasks = book.profile_parameters("cpu", "02_aligned_baselines")["tasks"].split(",")
    assert set(table.task) == set(tasks) | {"ioi"} and "ioi" not in tasks  # chapter 2's task, and the other chapters' IOI
    assert table.score.notna().all() and len(table) > 1000
    methods = (out / "html" / "book" / "methods.html").read_text()
    assert f'href="../data/{book.RESULTS_EXPORT}"' in methods


def test_parameters_show_once_and_plumbing_hides_behind_a_toggle(built_book):
    out, _ = built_book
    for notebook in book.chapters():
        page = (out / "html" / "book" / f"{notebook.stem}.html").read_text()
        assert page.count("tag_injected-parameters") == 1, notebook.stem  # the values this build used
        assert "tag_parameters" not in page, notebook.stem  # not the defaults as well
        assert "tag_hide-input" in page and '<details class="admonition hide above-input">' in page, notebook.stem
        # every code cell is folded behind its toggle (its outputs stay in view), unless its code is the point
        cells = re.findall(r'<div class="cell( [^"]*)?"', page)
        assert len(cells) >= 5, notebook.stem
        open_code = [c for c in cells if "tag_hide-input" not in c and f"tag_{book.SHOW_INPUT}" not in c]
        assert not open_code, (notebook.stem, open_code)
        assert page.count('<details class="admonition hide above-input">') >= len(cells) - page.count(f"tag_{book.SHOW_INPUT}")


def test_staging_folds_code_cells_and_leaves_the_chapter_alone(tmp_path):
    """The staged copy folds each code cell (hide-input) but those tagged show-input, keeps markdown as it is, leaves out
    the defaults cell where papermill injected the values; the executed chapter is not changed."""
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(x)"),
        nbformat.v4.new_code_cell("api_call()", metadata={"tags": [book.SHOW_INPUT]}),
        nbformat.v4.new_code_cell("hidden()", metadata={"tags": ["remove-input"]}),
    ])
    executed, staged = tmp_path / "executed.ipynb", tmp_path / "staged.ipynb"
    nbformat.write(notebook, executed)
    before = executed.read_text()
    book._show_parameters_once(executed, staged)
    tags = [c.get("metadata", {}).get("tags", []) for c in json.loads(staged.read_text())["cells"]]
    assert tags == [[], ["parameters", "remove-cell"], ["injected-parameters", "hide-input"], ["hide-input"], [book.SHOW_INPUT],
                    ["remove-input"]]
    assert executed.read_text() == before


def test_citations_resolve_to_the_bibliography(built_book):
    out, _ = built_book
    bibliography = (out / "html" / "book" / "bibliography.html").read_text()
    texts = [p.read_text() for p in (book.ROOT / "book").glob("*.md")]
    texts += [c.source for n in book.chapters() for c in nbformat.read(n, as_version=4).cells if c.cell_type == "markdown"]
    cited = {group for text in texts for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", text)}
    keys = {k.strip() for group in cited for k in group.split(",")}
    assert len(keys) >= 10
    entries = re.findall(r'<div class="citation" id="id\d+" role="doc-biblioentry">', bibliography)
    assert len(entries) == len(keys)  # every cited work listed, nothing uncited


def test_an_unknown_citation_fails_the_build(tmp_path):
    root = tmp_path / "root"
    (root / "book").mkdir(parents=True)
    for name in ("_config.yml", "references.bib"):
        shutil.copy2(book.ROOT / name, root / name)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (root / "book" / "intro.md").write_text("# Intro\n\nAs shown by {cite:p}`nobody2099unknown`.\n")
    with pytest.raises(book.ChapterFailed, match='could not find bibtex key "nobody2099unknown"'):
        book.build(root=root, out=tmp_path / "site")


def test_pages_fetch_nothing_from_outside(built_book):
    out, _ = built_book
    for page in (out / "html").rglob("*.html"):
        text = page.read_text()
        for tag in re.findall(r"<(?:script|link|img|iframe)[^>]*>", text):
            assert not re.search(r'(src|href)="(https?:)?//', tag), f"{page.name}: {tag}"


def test_chapter_4_reads_chapter_3s_attributions_instead_of_computing_its_own(built_book):
    """Chapter 4 compares chapter 3's heads: under the cpu profile it must ask for exactly the results chapter 3 made
    (a quadrature option passed differently would key, and compute, them again)."""
    out, _ = built_book
    used = {stem: set((out / "executed" / "data" / f"{stem}.results").read_text().split())
            for stem in ("03_latent_components", "04_and_or_toy_models")}
    assert used["04_and_or_toy_models"], "chapter 4 logged no result"
    assert used["04_and_or_toy_models"] <= used["03_latent_components"], used["04_and_or_toy_models"] - used["03_latent_components"]


# --------------------------------------------------------------------------- a book on a task file


@pytest.fixture(scope="module")
def task_book(tmp_path_factory):
    """The book on six rows of the shipped example file, built on the tiny model: (out, index, the file)."""
    root = tmp_path_factory.mktemp("task")
    rows = (book.ROOT / "examples" / "opposites.csv").read_text().splitlines()[:7]
    path = root / "six_opposites.csv"
    path.write_text("\n".join(rows) + "\n")
    overrides = {k: v for k, v in TINY.items() if k != "n_prompts"}
    index = book.build_task_book(path, overrides={**overrides, "n_resamples": 50}, out=root / "site")
    return root / "site", index, path


def test_a_task_book_has_the_chapters_for_any_task_and_a_title_page_naming_the_file(task_book):
    import hashlib

    out, index, path = task_book
    html = out / "html"
    assert index == html / "index.html"
    title = (html / "book" / "intro.html").read_text()  # index.html sends the reader there
    for shown in (str(path), hashlib.sha256(path.read_bytes()).hexdigest(), "tiny-gpt2-s0", "6 of 6 rows kept", "logit difference"):
        assert shown in title, shown
    assert "Chapters 4 (AND/OR toy networks) and 5" in title and "left out" in title
    pages = {p.stem for p in (html / "book").glob("*.html")}
    assert set(book.TASK_CHAPTERS) | {"methods", "bibliography"} <= pages
    assert not pages & {"04_and_or_toy_models", "05_head_patching"}
    model_page = (html / "book" / "00_model.html").read_text()
    assert "The task<a class=\"headerlink\"" in model_page and "The four tasks" not in model_page  # the task book's cells, not the built-in ones
    assert "six_opposites" in model_page
    for stem in ("02_aligned_baselines", "03_latent_components"):
        page = (html / "book" / f"{stem}.html").read_text()
        assert "six_opposites" in page and "Chapter 5&#8217;s name movers" not in page, stem
        executed = (out / "executed" / f"{stem}.ipynb").read_text()
        assert "n_prompts = 6" in executed, stem  # every row: fewer than the profile's cap
    table = pd.read_parquet(html / "data" / book.RESULTS_EXPORT)
    assert set(table.task) == {f"file-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"}


def test_chapter_2_runs_its_controls_on_the_tasks_of_control_tasks_only(built_book, tmp_path):
    """Chapter 2's controls (zero baseline, control pairing) run on the tasks of control_tasks only: the page says so and
    its zero-baseline figure has those alone; the other tasks still get every other comparison. The built-in tasks it
    leaves out of the page altogether are named there. The cpu profile runs chapter 2 on Greater-Than, controls included."""
    out, _ = built_book
    cpu = book.profile_parameters("cpu", "02_aligned_baselines")
    assert cpu["tasks"] == cpu["control_tasks"] == "greater_than"
    page = (out / "html" / "book" / "02_aligned_baselines.html").read_text()
    assert "Built-in tasks not on this page: IOI, Gender-Bias, Capital-Country" in page
    figure = pd.read_csv(out / "html" / "book" / "data" / "02_aligned_baselines" / "fig-zero-baseline.csv")
    assert set(figure.x) == {"Greater-Than"}, figure
    # two tasks, the controls on one
    notebook = next(n for n in book.chapters() if n.stem == "02_aligned_baselines")
    executed = book.execute_chapter(notebook, tmp_path / "executed", book.profile_parameters(
        "cpu", notebook.stem, {**TINY, "tasks": "ioi,greater_than", "control_tasks": "ioi", "n_resamples": 50}))
    text = "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     for c in json.loads(executed.read_text())["cells"] for o in c.get("outputs", []))
    assert "The controls ran on IOI only" in text, text[-3000:]
    data = tmp_path / "executed" / "data" / "02_aligned_baselines"
    assert set(pd.read_csv(data / "fig-zero-baseline.csv").x) == {"IOI"}
    assert set(pd.read_csv(data / "fig-correlation.csv").x) == {"IOI", "Greater-Than"}


def test_the_built_in_book_shows_its_own_cells_not_the_task_books(built_book):
    out, _ = built_book
    page = (out / "html" / "book" / "00_model.html").read_text()
    assert "The four tasks<a class=\"headerlink\"" in page and "The task<a class" not in page


def test_every_page_of_a_task_book_loads_without_console_errors(task_book):
    out, _, _ = task_book
    html_dir = out / "html"
    server = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(html_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = int(re.search(r"port (\d+)", server.stdout.readline()).group(1))
        pages = ["index.html"] + [f"book/{p.name}" for p in sorted((html_dir / "book").glob("*.html"))]
        drawn_total = 0
        for page in pages:
            dom, console = _rendered(f"http://127.0.0.1:{port}/{page}")
            assert not [line for line in console if CONSOLE_ERROR.search(line)], page
            expected = (html_dir / page).read_text().count("Plotly.newPlot(")
            drawn = len(re.findall(r'<svg[^>]*class="main-svg"', dom)) // 2
            assert drawn >= expected, f"{page}: {expected} figures, {drawn} drawn"
            drawn_total += drawn
        assert drawn_total >= 10
    finally:
        server.terminate()
        server.wait()


def test_a_bad_task_file_stops_the_task_book_before_any_chapter_runs(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("clean,corrupted,answer,wrong\nThe opposite of hot is,The opposite of extraordinarily big is, cold, small\n")
    code = book.main(["build", "--task", str(path), "--model", "tiny-gpt2", "-p", "device", "cpu", "--out", str(tmp_path / "site")])
    error = capsys.readouterr().err.strip()
    assert code == 1 and error.startswith("error: ") and "bad.csv, row 1" in error and "\n" not in error
    assert not (tmp_path / "site").exists()
    code = book.main(["build", "--task", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "site")])
    assert code == 1 and "no such task file" in capsys.readouterr().err


def test_an_edited_task_file_runs_its_chapters_again(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("clean,corrupted,answer,wrong\nThe opposite of hot is,The opposite of big is, cold, small\n")
    notebook = book.ROOT / "book" / "02_aligned_baselines.ipynb"
    before = book._source_key(notebook, {"tasks": str(path)})
    path.write_text(path.read_text() + "The opposite of up is,The opposite of in is, down, out\n")
    assert book._source_key(notebook, {"tasks": str(path)}) != before  # same path, new rows: not the old page


def test_the_findings_page_glues_every_headline_value_from_its_chapter(built_book):
    out, _ = built_book
    page = (out / "html" / "book" / "findings.html").read_text()
    executed = [out / "executed" / n.name for n in book.chapters()]
    rows = 0
    for notebook in executed:
        for claim in findings.read_claims(notebook):
            assert claim.chapter == notebook.stem and claim.model == "tiny-gpt2-s0"
            if claim.headline:
                rows += 1
                assert html.escape(claim.value, quote=False) in page, (notebook.stem, claim.key, claim.value)
                if claim.figure:  # the row links to the figure on its chapter's page
                    assert f'href="{notebook.stem}.html#{claim.figure}"' in page
    assert rows >= 10 and page.count("<tr") == rows + 1 and "ch. 2, Figure" in page
    source = (out / "src" / book.FINDINGS_PAGE).read_text()
    assert "{glue:text}`" in source and not re.search(r"\d\.\d\d \[", source)  # every value glued, none written in
    intro = (out / "html" / "book" / "intro.html").read_text()
    for notebook in executed:  # every chapter's answer, glued from the chapter, on the introduction
        assert findings.has_answer(notebook), notebook.stem
    assert intro.count('class="output text_html"') >= len(executed)


def test_changing_a_chapters_value_changes_the_findings_page(built_book, tmp_path):
    """Compile the book again with one glued value of chapter 2 changed: the Findings page shows the new value."""
    out, _ = built_book
    executed = []
    for notebook in book.chapters():
        copy = tmp_path / "executed" / notebook.name
        copy.parent.mkdir(exist_ok=True)
        shutil.copy2(out / "executed" / notebook.name, copy)
        executed.append(copy)
    chapter = tmp_path / "executed" / "02_aligned_baselines.ipynb"
    claim = next(c for c in findings.read_claims(chapter) if c.headline)
    nb = json.loads(chapter.read_text())
    changed = 0
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == findings.GLUE_PREFIX + claim.key:
                for mime in output["data"]:
                    if mime.endswith("text/plain"):
                        output["data"][mime] = "-7.654 [-8.765, -6.543]"
                        changed += 1
    assert changed == 1
    chapter.write_text(json.dumps(nb))
    book._compile(book.stage(book.ROOT, executed, tmp_path / "src"), tmp_path)
    page = (tmp_path / "html" / "book" / "findings.html").read_text()
    assert "-7.654 [-8.765, -6.543]" in page
    assert "-7.654" not in (out / "html" / "book" / "findings.html").read_text()


PHONE = 390
"""A phone's width in CSS pixels (the pages are checked at it)."""


@pytest.fixture(scope="module")
def probed_book(built_book):
    """The built site served with ``tests/browser/fit_probe.html`` beside it (same origin): the probe loads a page in an
    iframe of a given width and reports what does not fit."""
    import functools
    import http.server
    import threading

    out, _ = built_book
    probe = (Path(__file__).parent / "browser" / "fit_probe.html").read_bytes()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/__fit_probe.html"):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(probe)))
                self.end_headers()
                self.wfile.write(probe)
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(out / "html")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out / "html", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _fit_problems(base: str, page: str, width: int) -> dict:
    dom, console = _rendered(f"{base}/__fit_probe.html?page=/{page}&width={width}", width=width + 40)
    found = re.search(r'<pre id="result">([^<]*)</pre>', dom)
    assert found and found.group(1) != "pending", f"{page}: the probe did not finish"
    return json.loads(html.unescape(found.group(1)))


def test_every_page_fits_a_phone(probed_book):
    """At 390 px no figure is wider than its container, every heatmap keeps its colour bar, no legend entry or tick
    label is cut, and wide tables scroll inside their box."""
    html_dir, base = probed_book
    pages = sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                   if "_static" not in p.parts and p.name not in ("search.html", "genindex.html"))
    figures = 0
    for page in pages:
        result = _fit_problems(base, page, PHONE)
        assert not result["problems"], f"{page} at {PHONE} px: {result['problems']}"
        figures += result["figures"]
    assert figures >= 20


def test_the_probe_finds_a_figure_that_does_not_fit(probed_book):
    """The phone check can fail: a page whose figures are given a fixed width of 900 px is reported at 390 px."""
    html_dir, base = probed_book
    page = "book/02_aligned_baselines.html"
    text = (html_dir / page).read_text()
    assert text.count("</body>") == 1
    fixed = ('<script>window.addEventListener("load", () => document.querySelectorAll(".js-plotly-plot")'
             '.forEach(p => Plotly.relayout(p, {width: 900, autosize: false})));</script>')
    broken = html_dir / "book" / "_unfit.html"
    broken.write_text(text.replace("</body>", fixed + "</body>"))
    try:
        result = _fit_problems(base, "book/_unfit.html", PHONE)
    finally:
        broken.unlink()
    assert any("wide" in p or "past its container" in p for p in result["problems"]), result
    # a figure squeezed by its height: the plot area is reported
    squeezed = ('<script>window.addEventListener("load", () => setTimeout(() => document.querySelectorAll(".js-plotly-plot")'
                '.forEach(p => Plotly.relayout(p, {height: 200})), 1500));</script>')
    broken.write_text(text.replace("</body>", squeezed + "</body>"))
    try:
        result = _fit_problems(base, "book/_unfit.html", PHONE)
    finally:
        broken.unlink()
    assert any("plot area" in p for p in result["problems"]), result
