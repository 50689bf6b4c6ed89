"""The `certified` pipeline: candidates the image cannot change, decided with a certificate.

Candidates come from the side an image attacker cannot touch: the KB entities whose name or alias
matches the mention (the alias table), so the candidate set is fixed under any image attack. They
are ranked by the distance of their KB image's thumbnail to the query's
(`retlink.tools.vision.certified`), and the answer, the nearest, carries its certified L-inf
radius: no image perturbation below it can change the answer. A mention with no alias match (or
whose matches have no readable image) is NIL, and NIL then does not depend on the image at all.

With a decision head (`head:`, fitted by `retlink train` on this pipeline's links, as the agent's
is), the text side joins in: the candidates are the alias matches plus the mention's nearest KB
texts (`text_candidates`, still untouched by an image attacker), each scored by the head over
exact text features, the thumbnail distance and, with `deep: true`, the KB image embedder's
similarity; the certificate is then the head's (`retlink.agent.decision.bounds`): exact for the
text, the thumbnail's bounded swing, and the deep similarity's whole range, so the trace says
which evidence carried it.

The result's trace has a `certify` event whose detail the runner copies into the record
(`certified_radius_255`, in 1/255 units, and `certified_at`, eps label -> certified), which the
report turns into certified Hits@1: the share of samples answered right AND certified at eps.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from retlink.agent.decision import DecisionHead, kb_fingerprint
from retlink.agent.decision.bounds import (
    BoundedPool,
    HeadCertificate,
    certify_head_at,
    clean_margin,
    margin_falls,
)
from retlink.agent.nodes.retriever import mention_text
from retlink.attacks.spec import Budget, fraction_text
from retlink.core.config import StrictModel
from retlink.core.networks import DEFAULT_NETWORK
from retlink.core.schema import ImageBackend
from retlink.core.types import NIL, Candidate, Entity, LinkResult, PoolFeatures, TraceEvent
from retlink.eval.pipeline_base import top_ranked
from retlink.tools.vision.certified import (
    DEFAULT_SIZE,
    MAX_RADIUS,
    certify,
    kb_templates,
    kb_thumbnails,
    thumbnail,
    view_pixels,
)
from retlink.tools.vision.templates import TemplateMatch, match, query_map

#: the trace node whose detail carries the certificate (read by the runner)
CERTIFY_NODE = "certify"
#: the head's candidate features: exact (text, alias, has_image, the sentence's words in the
#: candidate's KB text), then the bounded image evidence: the thumbnail and the template match
EXACT_FEATURES: tuple[str, ...] = ("mention", "mention_rank", "alias", "has_image", "context")
THUMB_FEATURE = "thumb"
TEMPLATE_FEATURE = "template"
#: the deep image similarity (cosine: an attacker may put it anywhere in [-1, 1])
DEEP_FEATURE = "image"
DEEP_RANGE = (-1.0, 1.0)
#: the NIL row: exact features only, so NIL's logit never moves
NIL_FEATURES: tuple[str, ...] = ("best_mention", "any_alias")


#: bump when a feature's computation changes in a way its parameters below do not show (a new
#: formula for `context`, another thumbnail resampling): earlier links and heads are refused
FEATURES_VERSION = 1


def feature_definition(size: int) -> str:
    """A short hash of how this pipeline's features are computed beyond their names: the
    thumbnail side, the template matcher's parameters and `FEATURES_VERSION` (what the deep
    similarity embeds with is the KB's fingerprint, checked apart)."""
    import hashlib
    import json

    from retlink.tools.vision import templates

    spec = {"version": FEATURES_VERSION, "thumbnail": size, "templates": templates.DEFINITION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def feature_names(deep: bool) -> list[str]:
    """The head's candidate features for a pipeline with or without the deep similarity."""
    return [*EXACT_FEATURES, THUMB_FEATURE, TEMPLATE_FEATURE, *((DEEP_FEATURE,) if deep else ())]


class CertifiedConfig(StrictModel):
    """Options of a `certified` pipeline (its `options:` in an eval config)."""

    #: L-inf budgets the answer's certificate is checked at ('8/255' style fractions allowed)
    eps: list[Budget] = Field(default_factory=lambda: [2 / 255, 4 / 255, 8 / 255])
    #: thumbnail side in cells
    size: int = Field(DEFAULT_SIZE, ge=1, le=64)
    #: alias matches considered (the alias table's own limit)
    max_candidates: int = Field(50, ge=1, le=1000)
    #: the mention's nearest KB texts added to the alias candidates (0: alias matches only)
    text_candidates: int = Field(0, ge=0, le=200)
    #: add the KB image embedder's similarity as a feature (a head weighs it; the certificate
    #: gives it its whole range)
    deep: bool = False
    #: the image embedder the KB was built with (for `deep`)
    image_backend: ImageBackend = DEFAULT_NETWORK.value
    #: its fine-tuned checkpoint (`retlink train encoder`), when the KB was embedded with one: the
    #: deep feature runs those weights, and a KB embedded with other weights is refused at load
    #: (without `deep` they only say which KB to build or accept)
    image_weights: Path | None = None
    #: a decision head fitted by `retlink train` on this pipeline's links (None: the nearest
    #: thumbnail decides)
    head: Path | None = None
    #: the cascade's certified side: a head fitted on the same pipeline without `deep` (exact
    #: text features, the thumbnail and the template match). Where its margin on the image exceeds
    #: `gate_margin` it answers (certified at eps when its worst-case margin stays above the
    #: gate); elsewhere `head` does (certified where both heads are, with the same answer)
    exact_head: Path | None = None
    #: the exact head's logit margin from which it answers (chosen on dev links:
    #: `retlink.train.certified_gate`)
    gate_margin: float | None = Field(None, gt=0)
    #: instead of a margin, a radius ('1/255' style allowed): the exact head answers where its
    #: answer is certified at this L-inf radius around the image it is given. An attack within
    #: eps cannot close that gate on an answer certified at eps + gate_radius, so those answers
    #: stay certified at eps; a margin gate says nothing of how fast an attack can close it
    gate_radius: Budget | None = Field(None, gt=0, le=MAX_RADIUS)

    @field_validator("head", "exact_head", "image_weights")
    @classmethod
    def _expanded_path(cls, v: Path | None) -> Path | None:
        import os

        return None if v is None else Path(os.path.expandvars(str(v))).expanduser()

    @field_validator("eps")
    @classmethod
    def _budgets(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one eps")
        bad = [x for x in v if not 0 < x <= MAX_RADIUS]
        if bad:
            raise ValueError(f"every eps must be in (0, 1] (pixels lie in [0, 1]), not {bad}")
        return v

    @model_validator(mode="after")
    def _cascade(self) -> CertifiedConfig:
        if self.gate_margin is not None and self.gate_radius is not None:
            raise ValueError("give the cascade one gate: gate_margin or gate_radius, not both")
        gated = self.gate_margin is not None or self.gate_radius is not None
        if (self.exact_head is None) == gated:
            raise ValueError("a cascade needs both exact_head and a gate (gate_margin or gate_radius), or neither")
        if self.exact_head is not None and (self.head is None or not self.deep):
            raise ValueError(
                "exact_head is the cascade's certified side: give the deep head too (head, deep: true)"
            )
        return self


def _agreeing(deep: HeadCertificate, exact: HeadCertificate) -> HeadCertificate:
    """A cascade's deep-head answer, certified where the exact head is certified with the same
    answer (its radius the smaller of the two), else not at all."""
    if deep.answer != exact.answer:
        return replace(deep, certified=False, radius=0.0)
    return replace(deep, certified=deep.certified and exact.certified, radius=min(deep.radius, exact.radius))


class CertifiedLinker:
    """Nearest alias candidate by KB-image thumbnail, with its certified radius."""

    name = "certified"

    def __init__(self, kb: Any, config: CertifiedConfig | None = None) -> None:
        self.kb = kb
        self.config = config or CertifiedConfig()
        self.thumbs = kb_thumbnails(kb, self.config.size)
        self.templates = kb_templates(kb)
        self.features = feature_names(self.config.deep)
        #: how the features are computed beyond their names (recorded with each link)
        self.definition = feature_definition(self.config.size)
        fingerprint = kb_fingerprint(kb.manifest)
        self.head = (
            DecisionHead.load(self.config.head, features=self.features, fingerprint=fingerprint, definition=self.definition)
            if self.config.head is not None
            else None
        )
        self.exact_head = (
            DecisionHead.load(
                self.config.exact_head, features=feature_names(False), fingerprint=fingerprint, definition=self.definition
            )
            if self.config.exact_head is not None
            else None
        )

    @classmethod
    def from_kb(cls, kb_path: Path, config: CertifiedConfig | None = None) -> CertifiedLinker:
        """Open the KB for its alias table, entities and texts (its image vectors only with `deep`)."""
        from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
        from retlink.tools.kb.store import KBStore

        cfg = config or CertifiedConfig()
        image = shared_image_embedder(cfg.image_backend, weights=cfg.image_weights) if cfg.deep else None
        return cls(KBStore(Path(kb_path), shared_text_embedder(), image), cfg)

    def _candidates(self, mention: str, context: str) -> tuple[list[str], set[str], np.ndarray | None]:
        """Candidate ids (alias matches, then the mention's nearest texts), the alias matches,
        and the mention's text vector: all independent of the image."""
        alias = sorted(self.kb.aliases.lookup(mention, self.config.max_candidates)) if mention else []
        query = mention_text(mention, context)
        text_vec = self.kb.text_embedder.embed([query])[0] if query.strip() else None
        ids = dict.fromkeys(alias)
        if self.config.text_candidates and text_vec is not None:
            ids.update(
                dict.fromkeys(eid for eid, _ in self.kb.query_text(text_vec, self.config.text_candidates))
            )
        return list(ids), set(alias), text_vec

    def _features(
        self,
        image: Any,
        entities: list[Entity],
        thumbs: list[np.ndarray | None],
        query: np.ndarray,
        alias: set[str],
        text_vec: np.ndarray | None,
        mention_words: str,
        context: str,
        vectors: dict[str, np.ndarray],
        matches: list[TemplateMatch | None],
    ) -> PoolFeatures:
        """The head's rows: exact text features, the thumbnail, the template match and (with `deep`)
        the KB image similarity."""
        from retlink.agent.decision.features import context_overlap, reciprocal_ranks

        ids = [e.id for e in entities]
        text_sim = self.kb.text_similarity(text_vec, ids) if text_vec is not None else {}
        mention = np.array([text_sim.get(i, 0.0) for i in ids])
        texts = [" ".join([e.name, *e.aliases, e.description]) for e in entities]
        cols: dict[str, np.ndarray] = {
            "mention": mention,
            "mention_rank": reciprocal_ranks(mention),
            "alias": np.array([i in alias for i in ids], dtype=float),
            "has_image": np.array([t is not None for t in thumbs], dtype=float),
            "context": context_overlap(context, mention_words, texts),
            THUMB_FEATURE: np.array(
                [-float(((t - query) ** 2).mean()) if t is not None else 0.0 for t in thumbs]
            ),
            TEMPLATE_FEATURE: np.array([m.value if m is not None else 0.0 for m in matches]),
        }
        if self.config.deep:
            from retlink.tools.images import load_image
            from retlink.tools.kb.store import best_similarity

            sim = best_similarity(vectors, self.kb.image_embedder.embed_images([load_image(image)])[0])
            cols[DEEP_FEATURE] = np.array(
                [sim.get(i, 0.0) if t is not None else 0.0 for i, t in zip(ids, thumbs, strict=True)]
            )
        rows = (
            np.stack([cols[n] for n in self.features], axis=1) if ids else np.zeros((0, len(self.features)))
        )
        nil = [float(mention.max()) if ids else 0.0, float(bool(alias))]
        return PoolFeatures(
            names=list(self.features),
            nil_names=list(NIL_FEATURES),
            ids=ids,
            rows=rows.tolist(),
            nil=nil,
            definition=self.definition,
        )

    def link(self, image: Any, mention: str, context: str = "") -> LinkResult:
        """Decide among the image-independent candidates (nearest thumbnail, or the head); the
        trace's `certify` event gives the radius (1/255 units) and the certificate at each eps."""
        from retlink.core.errors import InvalidImageError

        if image is None:
            raise InvalidImageError("the certified pipeline links images only; this sample has none")
        started = time.perf_counter()
        pixels = view_pixels(image)
        query = thumbnail(pixels, self.config.size).numpy().astype(np.float64)
        ids, alias, text_vec = self._candidates(mention, context)
        entities = self.kb.get(ids)
        thumbs = [self.thumbs.get(e) for e in entities]
        if self.head is None:  # the nearest thumbnail decides: entities without an image cannot win
            keep = [k for k, t in enumerate(thumbs) if t is not None]
            no_image = [entities[k].id for k in range(len(entities)) if thumbs[k] is None]
            entities, thumbs = [entities[k] for k in keep], [thumbs[k] for k in keep]
        else:
            no_image = [e.id for e, t in zip(entities, thumbs, strict=True) if t is None]
        vectors = self.kb.image_vectors([e.id for e in entities]) if self.config.deep else {}
        matches = self._matches(pixels, entities, thumbs)
        features = self._features(
            image, entities, thumbs, query, alias, text_vec, mention, context, vectors, matches
        )
        detail: dict[str, Any] = {"size": self.config.size, "candidates": len(entities)}
        if no_image:
            detail["without_image"] = no_image
        if not entities:
            # NIL whatever the image: certified at every budget
            none = "no alias match" + (" and no text neighbour" if self.config.text_candidates else "")
            detail["nil"] = none if not ids else "no candidate has a readable image"
            detail["radius_255"] = round(MAX_RADIUS * 255, 4)
            detail["certified"] = {fraction_text(e): True for e in self.config.eps}
            trace = [
                TraceEvent(node=CERTIFY_NODE, seconds=round(time.perf_counter() - started, 4), detail=detail)
            ]
            result = top_ranked([], f"certified: {detail['nil']}", trace, mention=mention)
            return result.model_copy(update={"features": features})
        if self.head is None:
            ranked, rationale = self._nearest(entities, thumbs, query, alias, features, detail)
        else:
            ranked, rationale = self._decide(entities, thumbs, query, features, vectors, matches, detail)
        trace = [
            TraceEvent(node=CERTIFY_NODE, seconds=round(time.perf_counter() - started, 4), detail=detail)
        ]
        result = top_ranked(ranked, rationale, trace, mention=mention)
        return result.model_copy(update={"features": features})

    def _nearest(
        self,
        entities: list[Entity],
        thumbs: list[np.ndarray | None],
        query: np.ndarray,
        alias: set[str],
        features: PoolFeatures,
        detail: dict[str, Any],
    ) -> tuple[list[Candidate], str]:
        """The nearest thumbnail first, with `certify`'s certificate."""
        cands = np.stack([t for t in thumbs if t is not None])
        # mean squared cell difference, in [0, 1]: the `thumb` feature already holds its negative
        dist = -np.asarray(features.rows, dtype=np.float64)[:, self.features.index(THUMB_FEATURE)]
        certs = {fraction_text(e): certify(query, cands, e) for e in self.config.eps}
        first = next(iter(certs.values()))
        order = sorted(
            range(len(entities)), key=lambda i: (i != first.best, dist[i])
        )  # the certified answer first
        ranked = [
            Candidate(
                entity=entities[i],
                score=round(1.0 - float(dist[i]), 4),
                image_score=round(1.0 - float(dist[i]), 4),
                alias_match=entities[i].id in alias,
            )
            for i in order
        ]
        detail["radius_255"] = round(first.radius * 255, 4)
        detail["certified"] = {label: c.certified for label, c in certs.items()}
        return ranked, f"certified: nearest thumbnail of {len(entities)} candidates"

    def _matches(
        self, pixels: Any, entities: list[Entity], thumbs: list[np.ndarray | None]
    ) -> list[TemplateMatch | None]:
        """Each candidate's template match on the query (None without a readable KB image: an
        entity without a thumbnail has no template evidence either)."""
        qmap = query_map(pixels)
        return [
            match(qmap, self.templates.get(e) or []) if t is not None else None
            for e, t in zip(entities, thumbs, strict=True)
        ]

    def _exact_pool(
        self,
        rows: np.ndarray,
        nil: np.ndarray,
        query: np.ndarray,
        thumbs: list[np.ndarray | None],
        matches: list[TemplateMatch | None],
    ) -> BoundedPool:
        """The cascade's exact side as the bounds see it: the deep head's rows without the deep
        column (the last), the thumbnail and the template spans."""
        return BoundedPool(
            rows[:, : len(self.features) - 1],
            nil,
            self.features.index(THUMB_FEATURE),
            {},
            query,
            thumbs,
            spans={self.features.index(TEMPLATE_FEATURE): list(matches)},
        )

    def gate_falls(self, image: Any, features: PoolFeatures, answer_id: str) -> np.ndarray:
        """For a radius-gate cascade, per option of `features` (NIL last), the most an attack
        within `gate_radius` can take from the exact head's margin of `answer_id` over it: the
        radius gate is open where the clean margins plus these stay positive, which is what an
        adaptive attack on the gate aims at (`retlink.eval.experiments.certified_attack`)."""
        if self.exact_head is None or self.config.gate_radius is None:
            raise ValueError("gate_falls needs a cascade with gate_radius")
        pixels = view_pixels(image)
        query = thumbnail(pixels, self.config.size).numpy().astype(np.float64)
        entities = self.kb.get(features.ids)
        thumbs = [self.thumbs.get(e) for e in entities]
        exact = self._exact_pool(
            np.asarray(features.rows, dtype=np.float64),
            np.asarray(features.nil, dtype=np.float64),
            query,
            thumbs,
            self._matches(pixels, entities, thumbs),
        )
        return margin_falls(self.exact_head, exact, features.ids.index(answer_id), self.config.gate_radius)

    def _radius_gate(
        self, exact: BoundedPool, labels: list[str], detail: dict[str, Any]
    ) -> dict[str, HeadCertificate]:
        """The radius gate: open where the exact head's answer is certified at `gate_radius` on
        this image. Open, the answer is certified at eps where it is certified at eps +
        gate_radius: the gate ball of every image within eps of this one lies inside that larger
        ball, and the bounds only widen with the ball, so the gate stays open on the same answer.
        Returns those certificates (radius: the exact head's less the gate's), or nothing when
        the gate is closed."""
        assert self.exact_head is not None and self.config.gate_radius is not None
        radius = self.config.gate_radius
        # one call: the answer and its radius are found once, then each budget's worst case
        own, *shifted = certify_head_at(self.exact_head, exact, [radius, *(e + radius for e in self.config.eps)])
        detail["gate"] = {"exact_radius_255": round(own.radius * 255, 4), "opens_at_255": round(radius * 255, 4)}
        if not own.certified:
            return {}
        return {
            label: replace(c, radius=max(own.radius - radius, 0.0))
            for label, c in zip(labels, shifted, strict=True)
        }

    def _decide(
        self,
        entities: list[Entity],
        thumbs: list[np.ndarray | None],
        query: np.ndarray,
        features: PoolFeatures,
        vectors: dict[str, np.ndarray],
        matches: list[TemplateMatch | None],
        detail: dict[str, Any],
    ) -> tuple[list[Candidate], str]:
        """The head's answer (NIL: an empty ranking), with its certificate at each eps; with a
        cascade, the exact head's where its margin opens the gate, else the deep head's."""
        assert self.head is not None
        rows = np.asarray(features.rows, dtype=np.float64)
        nil = np.asarray(features.nil, dtype=np.float64)
        head, gate, pool = self.head, None, None
        spans: dict[int, list[Any]] = {self.features.index(TEMPLATE_FEATURE): list(matches)}
        labels = [fraction_text(e) for e in self.config.eps]
        certs: dict[str, HeadCertificate] = {}
        if self.exact_head is not None:
            exact = self._exact_pool(rows, nil, query, thumbs, matches)
            if self.config.gate_radius is not None:
                certs = self._radius_gate(exact, labels, detail)
                if certs:
                    head, pool = self.exact_head, exact
            else:
                assert self.config.gate_margin is not None
                margin = clean_margin(self.exact_head, exact)
                detail["gate"] = {"exact_margin": round(margin, 4), "opens_at": self.config.gate_margin}
                if margin > self.config.gate_margin:
                    head, gate, pool = self.exact_head, self.config.gate_margin, exact
            detail["decided_by"] = "exact head" if head is self.exact_head else "deep head"
        if pool is None:
            deep = {self.features.index(DEEP_FEATURE): DEEP_RANGE} if self.config.deep else {}
            pool = BoundedPool(
                rows,
                nil,
                self.features.index(THUMB_FEATURE),
                deep,
                query,
                thumbs,
                [vectors.get(e.id) for e in entities] if self.config.deep else None,
                spans,
            )
        if not certs:
            certs = dict(zip(labels, certify_head_at(head, pool, self.config.eps, gate or 0.0), strict=True))
        if self.exact_head is not None and head is not self.exact_head:
            # the deep head answered; within eps the gate may open, and then the exact head
            # answers. Certified only when both heads are certified at eps with the same answer:
            # whichever answers then, the answer is that one
            exact_certs = certify_head_at(self.exact_head, exact, self.config.eps)
            certs = {label: _agreeing(c, e) for (label, c), e in zip(certs.items(), exact_certs, strict=True)}
        first = next(iter(certs.values()))
        detail["radius_255"] = round(first.radius * 255, 4)
        detail["certified"] = {label: c.certified for label, c in certs.items()}
        # which evidence the decisive margin rests on, at the largest eps asked
        detail["margin_at_" + list(certs)[-1]] = list(certs.values())[-1].parts
        dist = head.distribution(features.ids, pool.rows, nil)
        if first.answer == len(entities):
            detail["nil"] = "the head chose NIL"
            return [], f"certified head: NIL over {len(entities)} candidates"
        cols = {n: k for k, n in enumerate(self.features)}
        order = sorted(
            range(len(entities)), key=lambda i: (i != first.answer, -dist[entities[i].id], entities[i].id)
        )
        ranked = [
            Candidate(
                entity=entities[i],
                score=round(dist[entities[i].id], 4),
                text_score=round(float(rows[i, cols["mention"]]), 4),
                image_score=round(float(rows[i, cols[DEEP_FEATURE]]), 4)
                if self.config.deep and thumbs[i] is not None
                else None,
                alias_match=bool(rows[i, cols["alias"]]),
            )
            for i in order
        ]
        by = f" ({detail['decided_by']})" if "decided_by" in detail else ""
        return ranked, f"certified head{by}: {len(entities)} candidates, NIL p={dist[NIL]:.2f}"
