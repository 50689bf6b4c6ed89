"""retlink: robust multimodal entity linking."""
