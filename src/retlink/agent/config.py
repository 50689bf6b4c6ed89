"""The agent's whole configuration, its presets and `load_config`.

`load_config` accepts a path, a preset name (`src/retlink/agent/presets/<name>.yaml`), a dict or
a config object; every preset but `default` is an overlay on `default.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retlink.core.config import StrictModel, deep_merge, read_yaml, validate_config
from retlink.core.errors import ConfigError
from retlink.core.schema import (
    CaptionerConfig,
    CaptionRouteConfig,
    CheckpointerConfig,
    DecisionConfig,
    DefenceConfig,
    EmbedderConfig,
    EnhancerConfig,
    KBConfig,
    LimitsConfig,
    ReasonerConfig,
    SearchConfig,
    SummaryConfig,
)

PRESET_DIR = Path(__file__).resolve().parent / "presets"


class RetlinkConfig(StrictModel):
    """The whole configuration. Defaults are the embedded offline default."""

    kb: KBConfig = KBConfig()
    captioner: CaptionerConfig = CaptionerConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    search: SearchConfig = SearchConfig()
    enhancer: EnhancerConfig = EnhancerConfig()
    reasoner: ReasonerConfig = ReasonerConfig()
    limits: LimitsConfig = LimitsConfig()
    caption_route: CaptionRouteConfig = CaptionRouteConfig()
    defence: DefenceConfig = DefenceConfig()
    decision: DecisionConfig = DecisionConfig()
    checkpointer: CheckpointerConfig = CheckpointerConfig()
    #: modality summarisation: the image as text in the text query and the reasoner's prompt (off)
    summary: SummaryConfig = SummaryConfig()
    device: str = "cpu"


def load_config(source: str | Path | dict[str, Any] | RetlinkConfig | None = None) -> RetlinkConfig:
    """Build a validated config from a YAML path, a preset name, a dict, or None (the default).

    Raises ConfigError with one line per bad key.
    """
    if source is None:
        source = "default"
    if isinstance(source, RetlinkConfig):
        return source
    if isinstance(source, dict):
        data, origin = source, "dict"
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            return validate_config(RetlinkConfig, preset_data(str(source)), f"preset {source!r}")
        if path.suffix == ".yaml" and path.resolve().parent == PRESET_DIR.resolve():  # a preset by its path
            return validate_config(RetlinkConfig, preset_data(path.stem), str(path))
        data, origin = read_yaml(path), str(path)
    return validate_config(RetlinkConfig, data, origin)


def preset_data(name: str) -> dict[str, Any]:
    """A preset's config mapping. Every preset but `default` is an overlay on `default.yaml`
    (merged by `deep_merge`), so it holds only what it changes and follows the default's KB,
    search and everything else it does not name."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise ConfigError(f"no config file or preset named {name!r} (presets: {names})")
    data = read_yaml(path)
    return data if name == "default" else deep_merge(read_yaml(PRESET_DIR / "default.yaml"), data)
