"""The chapter runner and the built book: chapters execute on a tiny model, pages render offline."""

import re
import shutil
import subprocess
import sys
import tempfile

import nbformat
import pytest

from ig_ap import book

TINY = {"model": "tiny-gpt2", "device": "cpu", "n_prompts": 2, "ig_steps": 4, "neurons": 4}
"""The smallest parameters: every chapter runs in seconds on the tiny model."""


def test_check_parameters_rejects_wrong_types_in_one_line():
    book.check_parameters(model="gpt2", n_prompts=4, device=None, tasks=["ioi"])
    book.check_parameters(neurons="all")
    book.check_parameters(neurons=8)
    for bad in [dict(n_prompts="abc"), dict(n_prompts=2.5), dict(n_prompts=True), dict(device=3), dict(n_prompts=0),
                dict(neurons="some"), dict(neurons=0)]:
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
    with pytest.raises(book.ParameterError, match="unknown profile"):
        book.profile_parameters("tpu", "00_model")


def test_parse_value_matches_papermill():
    assert book._parse_value("8") == 8 and book._parse_value("0.5") == 0.5
    assert book._parse_value("None") is None and book._parse_value("gpt2") == "gpt2"


def test_chapters_come_from_the_toc_and_declare_their_parameters():
    notebooks = book.chapters()
    assert [n.stem[:2] for n in notebooks] == ["00", "01", "02", "03", "04", "05"]
    for notebook in notebooks:
        declared = book.chapter_parameters(notebook)
        assert {"model", "device", "seed"} <= set(declared), notebook
        assert set(declared) <= set(book.PARAMETER_TYPES), notebook


def test_a_wrong_parameter_stops_the_chapter_with_a_clear_error(tmp_path):
    notebook = book.chapters()[0]
    with pytest.raises(book.ChapterFailed, match="ParameterError: parameter top_k must be int"):
        book.execute_chapter(notebook, tmp_path, {**TINY, "top_k": "ten"})
    assert not (tmp_path / notebook.name).exists(), "a failed chapter must not leave an executed copy"


def test_an_unknown_model_stops_the_chapter_with_a_clear_error(tmp_path):
    with pytest.raises(book.ChapterFailed, match="UnknownModelError: unknown model 'nope'"):
        book.execute_chapter(book.chapters()[0], tmp_path, {**TINY, "model": "nope"})


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "site"  # not named _build: the site must still land in out/html
    index = book.build(overrides=TINY, out=out)
    return out, index


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


def _rendered_dom(url: str) -> str:
    """The DOM of a page after its scripts ran, in headless Chromium with every outside host unresolvable."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=10000", "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


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


def test_every_figure_on_every_page_is_drawn_offline(served_book):
    html_dir, base = served_book
    pages = sorted(p.relative_to(html_dir).as_posix() for p in (html_dir / "book").glob("*.html"))
    assert pages
    total = 0
    for page in pages:
        source = (html_dir / page).read_text()
        expected = source.count("Plotly.newPlot(")
        dom = _rendered_dom(f"{base}/{page}")
        drawn = len(re.findall(r'<svg[^>]*class="main-svg"', dom))
        # each drawn plotly figure has two main-svg layers (the plot and its overlay)
        assert drawn >= 2 * expected, f"{page}: {expected} figures, {drawn // 2} drawn"
        total += expected
    assert total >= 1


def test_pages_fetch_nothing_from_outside(built_book):
    out, _ = built_book
    for page in (out / "html").rglob("*.html"):
        text = page.read_text()
        for tag in re.findall(r"<(?:script|link|img|iframe)[^>]*>", text):
            assert not re.search(r'(src|href)="(https?:)?//', tag), f"{page.name}: {tag}"
