"""Output folders a command writes: checked before any work, replaced without loss.

The rule (issue 32): a tool never deletes what it did not create. A folder retlink builds (a
KB, a MATE set, a benchmark dataset) carries a marker file naming its kind; an existing
`--out` is replaced only when it carries that marker (or is an older build of the same kind,
recognised by `legacy`), and anything else there is refused with a ConfigError (exit 2).
A leftover partial build is removed only when it carries the marker too.

`check_out_dir` also refuses, before models load, an `--out` that cannot be written: a path
under a file, on a read-only or virtual file system (`/proc`), or a file where a folder must be.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from retlink.core.errors import ConfigError

log = logging.getLogger(__name__)

#: the marker file in every folder retlink builds: JSON {"kind": ...}
MARKER = ".retlink-folder"


def absolute(path: str | Path) -> Path:
    """`path` made absolute and normalised (`.`, `..` resolved lexically, `~` expanded), so a
    folder always has a name (`Path('.').name` is empty) and a sibling."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(path.anchor or "/")


def check_out_dir(path: str | Path, what: str = "--out") -> Path:
    """The absolute folder `path` if a command can create or fill it; a ConfigError otherwise.

    Probed, not guessed from permission bits (root passes every `os.access` check, and `/proc`
    refuses a mkdir whatever its mode says): a temporary folder is made and removed in the
    nearest existing ancestor. Nothing the user owns is touched."""
    target = absolute(path)
    if target.parent == target:
        raise ConfigError(f"{what} {path}: the file system root cannot be an output folder")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder; pick another path")
    base = _nearest_existing(target)
    if not base.is_dir():
        raise ConfigError(f"{what} {path} is under {base}, which is a file, not a folder")
    try:  # in the folder itself, or where it will be created
        probe = tempfile.mkdtemp(prefix=".retlink-probe-", dir=base)
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write in {base} ({e.strerror or e})") from None
    os.rmdir(probe)
    return target


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` as one retlink made (of `kind`): only marked folders are ever replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"kind": kind}) + "\n")


def marked(folder: Path, kind: str) -> bool:
    """True when `folder` carries the marker of `kind`."""
    try:
        found = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("kind") == kind


def ours(folder: Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> bool:
    """True when `folder` is a retlink folder of `kind`: marked, or recognised by `legacy`
    (folders built before the marker existed)."""
    return folder.is_dir() and (marked(folder, kind) or bool(legacy and legacy(folder)))


def check_replaceable(
    path: Path, kind: str, what: str = "--out", legacy: Callable[[Path], bool] | None = None
) -> None:
    """A ConfigError unless `path` is absent or a folder of `kind` that retlink built."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise ConfigError(f"{what} {path} exists and is not a folder; retlink replaces only a {kind} folder it built")
    if not ours(path, kind, legacy):
        raise ConfigError(
            f"{what} {path} exists and is not a {kind} folder retlink built (no {MARKER} marker); "
            "it is left alone: pick a new path or remove it yourself"
        )


def check_partial(work: Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> None:
    """A ConfigError unless `work` is absent or an unfinished `kind` build of retlink: marked, or
    recognised by `legacy` (a partial build from before the marker)."""
    if not work.exists() and not work.is_symlink():
        return
    if work.is_symlink() or not ours(work, kind, legacy):
        raise ConfigError(
            f"{work} exists and is not an unfinished {kind} build of retlink (no {MARKER} marker); "
            "it is left alone: move it away or remove it yourself"
        )


def remove_partial(work: Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> None:
    """Remove a leftover partial build, only when it is one (`check_partial`)."""
    check_partial(work, kind, legacy)
    if work.exists():
        shutil.rmtree(work)


def swap_into_place(work: Path, path: Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> None:
    """Rename the finished `work` folder to `path`. An existing `path` must be a `kind` folder
    retlink built: it is first renamed to a fresh, unique sibling (never a name the user may
    use) and removed only after the new one is in place."""
    check_replaceable(path, kind, legacy=legacy)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
        path.rename(old)
    work.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
