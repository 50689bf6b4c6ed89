"""retlink: robust multimodal entity linking with a LangGraph agent.

    from retlink import Linker
    linker = Linker.from_config()            # the embedded offline default
    result = linker.link("cat.jpg", mention="Chelsea", context="[Chelsea] naps on the sofa.")
    print(result.entity_id, result.rationale)
"""

from retlink.agent.config import RetlinkConfig, load_config
from retlink.core.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DatasetError,
    EmptyMentionError,
    ImageTooLargeError,
    InputError,
    InvalidImageError,
    KBError,
    RetlinkError,
    TextTooLongError,
)
from retlink.core.types import NIL, Candidate, Caption, Entity, Evidence, LinkResult, TraceEvent

__all__ = [
    "NIL",
    "BackendError",
    "Candidate",
    "Caption",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "EmptyMentionError",
    "Entity",
    "Evidence",
    "ImageTooLargeError",
    "InputError",
    "InvalidImageError",
    "KBError",
    "LinkResult",
    "Linker",
    "RetlinkConfig",
    "RetlinkError",
    "Sample",
    "TextTooLongError",
    "TraceEvent",
    "load_config",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`Linker` and `Sample` load lazily: importing them pulls in torch and the graph, which
    `import retlink.tools...`, `retlink --help` and the config/error types do not need."""
    if name in ("Linker", "Sample"):
        from retlink.agent import linker

        return getattr(linker, name)
    raise AttributeError(f"module 'retlink' has no attribute {name!r}")
