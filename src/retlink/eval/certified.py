"""The `certified` pipeline: alias candidates ranked by thumbnail distance, with a certificate.

Candidates come from the side an image attacker cannot touch: the KB entities whose name or alias
matches the mention (the alias table), so the candidate set is fixed under any image attack. They
are ranked by the distance of their KB image's thumbnail to the query's
(`retlink.tools.vision.certified`), and the answer, the nearest, carries its certified L-inf
radius: no image perturbation below it can change the answer. A mention with no alias match (or
whose matches have no readable image) is NIL, and NIL then does not depend on the image at all.

The result's trace has a `certify` event whose detail the runner copies into the record
(`certified_radius_255`, in 1/255 units, and `certified_at`, eps label -> certified), which the
report turns into certified Hits@1: the share of samples answered right AND certified at eps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from retlink.attacks.spec import Budget, fraction_text
from retlink.core.config import StrictModel
from retlink.core.types import Candidate, LinkResult, TraceEvent
from retlink.eval.pipeline_base import top_ranked
from retlink.tools.vision.certified import DEFAULT_SIZE, MAX_RADIUS, certify, image_thumbnail, kb_thumbnails

#: the trace node whose detail carries the certificate (read by the runner)
CERTIFY_NODE = "certify"


class CertifiedConfig(StrictModel):
    """Options of a `certified` pipeline (its `options:` in an eval config)."""

    #: L-inf budgets the answer's certificate is checked at ('8/255' style fractions allowed)
    eps: list[Budget] = Field(default_factory=lambda: [2 / 255, 4 / 255, 8 / 255])
    #: thumbnail side in cells
    size: int = Field(DEFAULT_SIZE, ge=1, le=64)
    #: alias matches considered (the alias table's own limit)
    max_candidates: int = Field(50, ge=1, le=1000)

    @field_validator("eps")
    @classmethod
    def _budgets(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one eps")
        bad = [x for x in v if not 0 < x <= MAX_RADIUS]
        if bad:
            raise ValueError(f"every eps must be in (0, 1] (pixels lie in [0, 1]), not {bad}")
        return v


class CertifiedLinker:
    """Nearest alias candidate by KB-image thumbnail, with its certified radius."""

    name = "certified"

    def __init__(self, kb: Any, config: CertifiedConfig | None = None) -> None:
        self.kb = kb
        self.config = config or CertifiedConfig()
        self.thumbs = kb_thumbnails(kb, self.config.size)

    @classmethod
    def from_kb(cls, kb_path: Path, config: CertifiedConfig | None = None) -> CertifiedLinker:
        """Open the KB for its alias table and entities only (no image vectors are read)."""
        from retlink.tools.kb.embedders import shared_text_embedder
        from retlink.tools.kb.store import KBStore

        return cls(KBStore(Path(kb_path), shared_text_embedder(), None), config)

    def link(self, image: Any, mention: str, context: str = "") -> LinkResult:
        """Rank the mention's alias candidates by thumbnail distance; the trace's `certify` event
        gives the radius (1/255 units) and the certificate at each configured eps."""
        from retlink.core.errors import InvalidImageError

        if image is None:
            raise InvalidImageError("the certified pipeline links images only; this sample has none")
        started = time.perf_counter()
        query = image_thumbnail(image, self.config.size)
        ids = sorted(self.kb.aliases.lookup(mention, self.config.max_candidates)) if mention else []
        entities, thumbs, no_image = [], [], []
        for entity in self.kb.get(ids):
            thumb = self.thumbs.get(entity)
            if thumb is None:
                no_image.append(entity.id)
            else:
                entities.append(entity)
                thumbs.append(thumb)
        detail: dict[str, Any] = {"size": self.config.size, "candidates": len(entities)}
        if no_image:
            detail["without_image"] = no_image
        if not entities:
            # NIL whatever the image: certified at every budget
            detail["nil"] = "no alias match" if not ids else "no alias match has a readable image"
            detail["radius_255"] = round(MAX_RADIUS * 255, 4)
            detail["certified"] = {fraction_text(e): True for e in self.config.eps}
            trace = [TraceEvent(node=CERTIFY_NODE, seconds=round(time.perf_counter() - started, 4), detail=detail)]
            return top_ranked([], f"certified: {detail['nil']}", trace, mention=mention)
        cands = np.stack(thumbs)
        dist = ((cands - query) ** 2).mean(axis=1)  # mean squared cell difference, in [0, 1]
        certs = {fraction_text(e): certify(query, cands, e) for e in self.config.eps}
        first = next(iter(certs.values()))
        order = sorted(range(len(entities)), key=lambda i: (i != first.best, dist[i]))  # the certified answer first
        ranked = [
            Candidate(
                entity=entities[i], score=round(1.0 - float(dist[i]), 4), image_score=round(1.0 - float(dist[i]), 4),
                alias_match=True,
            )
            for i in order
        ]
        detail["radius_255"] = round(first.radius * 255, 4)
        detail["certified"] = {label: c.certified for label, c in certs.items()}
        trace = [TraceEvent(node=CERTIFY_NODE, seconds=round(time.perf_counter() - started, 4), detail=detail)]
        return top_ranked(
            ranked, f"certified: nearest thumbnail of {len(entities)} alias candidates", trace, mention=mention
        )
