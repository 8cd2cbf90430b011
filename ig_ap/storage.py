"""Files on disk: the cache folder, content hashes, and writes that never leave half a file.

Both caches of the package go through here: the embedded model's float32 weights
(:mod:`ig_ap.models`) and the results cache (:mod:`ig_ap.results`). Everything is written
under a temporary name in the target's own folder and renamed into place, so a reader
sees either the old complete file (or none) or the new complete one, never a part of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence


def cache_dir() -> Path:
    """Folder for the package's caches: ``$IG_AP_CACHE``, else ``$XDG_CACHE_HOME/ig_ap``, else ``~/.cache/ig_ap``."""
    if os.environ.get("IG_AP_CACHE"):
        return Path(os.environ["IG_AP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ig_ap"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """Write a folder under a temporary name next to ``target``; rename it into place on success.

    If another process put ``target`` in place first, its copy is kept and this one dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)


def write_files_atomically(targets: Sequence[Path], writers: Sequence[Callable[[Path], None]]) -> None:
    """Write each of ``targets`` with its writer (``writer(temporary_path)``), then rename them into place in order.

    All temporaries are written before the first rename, so a failure while writing
    leaves every target as it was; the renames run in the order given (put the file that
    makes the others valid last). No temporary is left behind, whatever happens.
    """
    temporaries = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            temporaries.append(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        for tmp, writer in zip(temporaries, writers):
            writer(tmp)
            os.chmod(tmp, 0o666 & ~umask)  # as a file created in place would be (mkstemp makes it private)
        for tmp, target in zip(temporaries, targets):
            os.replace(tmp, target)
    finally:
        for tmp in temporaries:
            if tmp.exists():
                tmp.unlink()
