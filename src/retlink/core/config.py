"""The config machinery every loader shares: strict pydantic models, YAML files whose relative
paths are relative to the file, and one ConfigError naming every bad key.

Every model forbids unknown keys, so a typo in a YAML file is an error that names the key instead
of a silently ignored setting. The agent's schema is `retlink.core.schema` (its sections) and
`retlink.agent.config` (the whole config, presets, `load_config`).
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from retlink.core.errors import ConfigError
from retlink.core.paths import DATA_ENV, cache_dir, data_dir

PATH_KEYS = {"path", "entities", "cache_dir", "head", "exact_head", "image_weights"}
#: `decision.head`'s name for the head the package ships (`retlink.agent.decision.head_file`)
GENERIC_HEAD = "generic"
#: `decision.head`'s default: the shipped head where the KB's embedders are the ones it was
#: fitted for, else no head (`retlink.agent.backends.load_head`)
AUTO_HEAD = "auto"
#: path keys whose value may instead be one of these names (left as written, not resolved)
NAMED_PATHS = {"head": {GENERIC_HEAD, AUTO_HEAD}}
#: names in run configs become file and folder names and JSONL keys: keep them boring
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


_ModelT = TypeVar("_ModelT", bound=BaseModel)

#: a path field: `~` expands also where the config came as a dict or object rather than a file
#: (a file's paths went through `resolve_path` already, see `read_yaml`)
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]


class StrictModel(BaseModel):
    """The base of every configuration model: an unknown key is an error that names it (a typo
    never silently falls back to a default), and a loaded config cannot be changed in place."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def key_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('pipelines', 1, 'overrides', 'reasonr') -> 'pipelines[1].overrides.reasonr'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def validation_lines(err: ValidationError, prefix: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(key path, message) of each error, under `prefix` (where the validated value sits)."""
    return [
        ((*prefix, *e["loc"]), "unknown key" if e["type"] == "extra_forbidden" else e["msg"])
        for e in err.errors()
    ]


def config_error(source: str, problems: list[tuple[tuple[Any, ...], str]]) -> ConfigError:
    """One ConfigError naming the file and, one line each, every bad key path."""
    lines = [f"invalid configuration ({source}):"]
    lines += [f"  {key_path(loc)}: {msg}" for loc, msg in problems]
    return ConfigError("\n".join(lines))


def validate_config(model: type[_ModelT], data: Any, origin: str) -> _ModelT:
    """`model.model_validate(data)`, a validation error turned into a ConfigError with one line
    per bad key (every config loader of the project goes through here)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise config_error(origin, validation_lines(e)) from None


def read_yaml(path: Path, path_keys: frozenset[str] | set[str] = PATH_KEYS) -> dict[str, Any]:
    """A YAML mapping with every value under a key in `path_keys` resolved (`resolve_path`): the
    one path mechanism of every config file (agent and eval configs alike)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ConfigError(f"config file {path} nests too deeply to be a config") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    # Relative paths in a config file are relative to the file, not to the working directory.
    return resolve_paths(data, path.parent, path_keys)


def resolve_path(value: str, base: Path) -> str:
    """`$RETLINK_CACHE`, `$RETLINK_DATA` and `~` expand; a relative path is relative to the
    config file. `$RETLINK_DATA` (where the published datasets are) has no default: a path that
    names it while it is unset is a ConfigError saying what to set, at load (so `--dry-run` says
    it), rather than a missing-folder error from a loader mid-run."""
    value = value.replace("$RETLINK_CACHE", str(cache_dir())).replace("${RETLINK_CACHE}", str(cache_dir()))
    for token in (f"${{{DATA_ENV}}}", f"${DATA_ENV}"):
        if token in value:
            data = data_dir()
            if data is None:
                raise ConfigError(
                    f"{value!r} reads the environment variable {DATA_ENV}, which is not set: set it to the "
                    f"folder that holds the datasets (e.g. `export {DATA_ENV}=/data/mel`, with wikimel/, "
                    "richpediamel/, wikidiverse/, wikiperson/, m3el/ in it), or write the path into the config"
                )
            value = value.replace(token, str(data))
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def resolve_paths(data: dict[str, Any], base: Path, keys: frozenset[str] | set[str] = PATH_KEYS) -> dict[str, Any]:
    """Every value under a key in `keys`, at any depth, resolved (`resolve_path`)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = resolve_paths(value, base, keys)
        elif isinstance(value, list):  # a list under a path key is a list of paths
            out[key] = [
                resolve_paths(v, base, keys) if isinstance(v, dict)
                else resolve_path(v, base) if key in keys and isinstance(v, str) else v
                for v in value
            ]
        elif key in keys and isinstance(value, str) and value not in NAMED_PATHS.get(key, ()):
            out[key] = resolve_path(value, base)
        else:
            out[key] = value
    return out


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` merged into a copy of `base`, recursing into dicts (lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def init_hints(classes: list[type]) -> tuple[dict[str, Any], set[str]]:
    """Type hints and names of the keyword parameters of the classes' `__init__`s (MRO included):
    what a config may pass to a class it names (an attack, a dataset loader), checked when the
    config loads rather than when the run reaches it."""
    import typing

    hints: dict[str, Any] = {}
    names: set[str] = set()
    for klass in reversed([k for c in classes for k in c.__mro__ if k is not object]):
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        try:
            found = typing.get_type_hints(init)
        except Exception:  # an annotation that does not resolve: checked by the dry build only
            found = {}
        hints.update({n: h for n, h in found.items() if n in params})
    return hints, names - {"self"}
