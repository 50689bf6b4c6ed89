"""retlink: robust multimodal entity linking with a LangGraph agent.

    from retlink import Linker
    linker = Linker.from_config()            # the embedded offline default
    result = linker.link("cat.jpg", mention="Chelsea", context="[Chelsea] naps on the sofa.")
    print(result.entity_id, result.rationale)
"""

from retlink.config import RetlinkConfig, load_config
from retlink.errors import (
    BackendError,
    ConfigError,
    DatasetError,
    EmptyMentionError,
    ImageTooLargeError,
    InputError,
    InvalidImageError,
    KBError,
    RetlinkError,
)
from retlink.linker import Linker, Sample
from retlink.types import NIL, Candidate, Caption, Entity, Evidence, LinkResult, TraceEvent

__all__ = [
    "NIL",
    "BackendError",
    "Candidate",
    "Caption",
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
    "TraceEvent",
    "load_config",
]
__version__ = "0.1.0"
