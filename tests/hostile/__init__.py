"""The hostile-user probe as a suite (issue 32): one file per surface, each case a real CLI call
(a subprocess) or a real function call. `common` holds the shared hostile inputs; its two PNG
builders are re-exported here for the importers that name `tests.hostile` itself."""

from tests.hostile.common import bomb_png, png_chunk

__all__ = ["bomb_png", "png_chunk"]
