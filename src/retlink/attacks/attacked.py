"""Attacked images of a run: made once per (sample, attack), stored, reused by every pipeline.

The surrogate is a config choice: the network the pipelines themselves use (EfficientNet-Lite0 on
the embedded default: captioner and image embedder at once) makes the attacks white box;
EfficientNet-Lite1 against a Lite0 pipeline, or Lite0 against a pipeline whose image embedder is
Lite1, makes them transfer attacks; `efficientnet_lite0+efficientnet_lite1` attacks both. The
distractor is chosen in the run KB's image space whatever the surrogate. Targets:
- `embedding_toward_distractor`: raise cos(f(x), f(distractor image)) - cos(f(x), f(gold image)),
  the distractor being the wrong KB entity whose image is nearest to the clean image (the
  cheapest confusion); a gold entity without an image uses the clean image's own features.
- `embedding_toward_rival`: the same loss toward the decision's runner-up instead: the wrong entity
  the pipelines' fused score (mention-in-sentence text similarity and clean-image similarity,
  weighted 0.5 / 0.5) ranks highest, among those with an image. Against a pipeline that weighs
  text and image (a decision head, a fusion), the nearest wrong *image* often has no text
  support and cannot win however close the attack brings it; the runner-up already has it, so
  this is the cheaper flip for the attacker (a decision-aware choice made without the
  pipeline's own head).
- `embedding_away`: 1 - cos(f(x), f(clean)).
- `classifier`: the ImageNet logits, untargeted cross-entropy (what the tagger captions from).

Images are resized and centre-cropped to the model's input size first (`preprocess`), and the
pipelines receive that same square tensor, clean or attacked: the perturbation reaches the model
as crafted (rounded to 8 bits on the way in, as any saved PNG would be), and clean and attacked
inputs differ by the perturbation only.

Batches are fixed chunks of the run's sample list, each attacked with a seed derived from the run
seed and the chunk index: an interrupted and resumed run remakes exactly the same images. A
stored image is `<stem>.pt` (the exact tensor) plus `<stem>.json` (norms, distractor, seconds),
the JSON written last and atomically, so an image counts as made only when both are complete.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from retlink.core.errors import InvalidImageError
from retlink.core.networks import network
from retlink.tools.vision.efficientnet import shared_network

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: the targets whose label is a [reference, distractor] pair of KB image features
DISTRACTOR_TARGETS = ("embedding_toward_distractor", "embedding_toward_rival")
#: the fused score's (text, image) weights the rival is ranked by (the pipelines' default)
RIVAL_WEIGHTS = (0.5, 0.5)
#: KB neighbours (by text and by image) searched for the rival
RIVALS_SEARCHED = 10


def file_stem(sample_id: str) -> str:
    """A file-name-safe, collision-free stem for a sample id."""
    import hashlib

    safe = _SAFE.sub("_", sample_id).strip("._") or "sample"
    return f"{safe[:80]}-{hashlib.sha1(sample_id.encode()).hexdigest()[:8]}"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded to nearest (what PNG can hold)."""
    arr = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return arr.permute(1, 2, 0).numpy()


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1], the inverse of `to_uint8` on its grid."""
    return torch.from_numpy(np.asarray(arr, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def clean_tensor(image_path: Path | None, size: int | None) -> torch.Tensor:
    """The sample's image as the pipelines and attacks see it: (3, size, size) in [0, 1]; with
    `size` None the image as it is (MATE: the binding agent measures pixels under its camera,
    so its attacks perturb the rendered scene at its own resolution)."""
    from retlink.tools.images import to_rgb
    from retlink.tools.vision.efficientnet import preprocess

    if image_path is None:
        raise InvalidImageError("the sample has no image")
    try:
        with Image.open(image_path) as raw:
            img = to_rgb(raw)  # a 16-bit image scaled to 8 bits, not clipped (the loader's rule)
            if size is None:
                arr = np.asarray(img, dtype=np.float32) / 255.0
                return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
            return preprocess(img, size)
    except OSError as e:
        raise InvalidImageError(f"cannot read image {image_path}: {e}") from None


class Features(nn.Module):
    """The surrogate's pooled features as a module (what the embedding targets attack)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


class OpenClipSurrogate(nn.Module):
    """An open_clip image tower as a surrogate: `features` is its unit image embedding of [0, 1]
    images (resized and normalised inside, `OpenClipImageEncoder`), what the embedding targets
    attack. It has no classes, so no `classifier` target."""

    def __init__(self, model: str, pretrained: str | None) -> None:
        super().__init__()
        import open_clip

        from retlink.attacks import OpenClipImageEncoder

        if pretrained is not None and not Path(pretrained).is_file():
            from retlink.core.errors import ConfigError

            raise ConfigError(f"open_clip surrogate weights not found: {pretrained}")
        from retlink.tools.vision.weights import open_clip_id

        self.weights_id = open_clip_id(model, pretrained)  # refuses a checkpoint of another model
        clip = open_clip.create_model(model, pretrained=pretrained)
        self.encoder = OpenClipImageEncoder(clip.eval())
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def surrogate(name: str, pretrained: str | Path | None = None) -> nn.Module:
    """The surrogate network by config name (shared with the pipelines: loaded once).

    `efficientnet_lite0` is the network of the embedded default's captioner and image embedder
    (white box); `efficientnet_lite1` the other image embedder; `a+b` attacks both at once
    (`FeatureEnsemble`: the mean of the members' feature cosines and of their logits);
    `open_clip:MODEL` an open_clip image tower with the weights of the file `pretrained`. A
    single network with `pretrained` is that network fine-tuned (`retlink.tools.vision.weights`:
    the checkpoint must be of the named network)."""
    if name.startswith("open_clip:"):
        return _open_clip(name.split(":", 1)[1], str(pretrained) if pretrained is not None else None)
    try:
        parts = tuple(network(p) for p in name.split("+"))
    except ValueError as e:
        raise ValueError(f"unknown surrogate {name!r}: {e}") from None
    if pretrained is not None:
        if len(parts) > 1:
            raise ValueError(f"pretrained names one network's weights, not the ensemble {name!r}")
        from retlink.core.errors import ConfigError
        from retlink.tools.vision.weights import shared_tuned

        model = shared_tuned(pretrained)
        if model.network != parts[0]:
            raise ConfigError(f"surrogate weights {pretrained} are fine-tuned from {model.network.value}, not {parts[0].value}")
        return model
    return shared_network(parts[0]) if len(parts) == 1 else _ensemble(parts)


@functools.lru_cache(maxsize=2)
def _open_clip(model: str, pretrained: str | None) -> nn.Module:
    return OpenClipSurrogate(model, pretrained).eval()


@functools.lru_cache(maxsize=4)
def _ensemble(parts: tuple[str, ...]) -> nn.Module:
    from retlink.tools.vision.efficientnet import FeatureEnsemble

    return FeatureEnsemble([shared_network(p) for p in parts]).eval()


class AttackedStore:
    """The attacked images of one attack in a run folder."""

    def __init__(self, root: Path, attack: str) -> None:
        self.dir = Path(root) / "attacked" / attack
        self.dir.mkdir(parents=True, exist_ok=True)

    def has(self, sample_id: str) -> bool:
        return (self.dir / f"{file_stem(sample_id)}.json").exists()

    def load(self, sample_id: str) -> tuple[torch.Tensor, dict[str, Any]]:
        stem = file_stem(sample_id)
        meta = json.loads((self.dir / f"{stem}.json").read_text())
        return torch.load(self.dir / f"{stem}.pt", map_location="cpu", weights_only=True), meta

    def save(self, sample_id: str, image: torch.Tensor, meta: dict[str, Any]) -> None:
        stem = file_stem(sample_id)
        for name, write in (
            (f"{stem}.pt", lambda p: torch.save(image.detach().float().cpu().contiguous().clone(), p)),
            (f"{stem}.json", lambda p: p.write_text(json.dumps({"id": sample_id, **meta}))),
        ):
            tmp = self.dir / f".{name}.tmp"
            write(tmp)
            os.replace(tmp, self.dir / name)


class LabelMaker:
    """Per-target labels for a batch, from the run's KB and the surrogate."""

    def __init__(self, kb: Any, model: nn.Module, size: int) -> None:
        self.kb = kb
        self.model = model
        self.size = size
        self._entity_features: dict[str, torch.Tensor | None] = {}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return F.normalize(self.model.features(x).float(), dim=-1).clone()

    def entity_features(self, entity_id: str) -> torch.Tensor | None:
        """Surrogate features of an entity's first KB image (None when it has none)."""
        if entity_id not in self._entity_features:
            ents = self.kb.get([entity_id])
            paths = ents[0].image_paths if ents else []
            vec = None
            for p in paths:
                try:
                    vec = self._features(clean_tensor(self.kb.image_file(p), self.size).unsqueeze(0))[0]
                    break
                except InvalidImageError:
                    log.warning("KB image of %s unreadable: %s", entity_id, p)
            self._entity_features[entity_id] = vec
        return self._entity_features[entity_id]

    def distractor(self, image: torch.Tensor, gold_id: str) -> str | None:
        """The wrong entity whose KB image is nearest to the clean image (in the KB's space)."""
        if not getattr(self.kb, "has_images", False):
            return None
        from retlink.tools.images import load_image

        vec = self.kb.image_embedder.embed_images([load_image(image)])[0]
        for eid, _ in self.kb.query_image(vec, 10):
            if eid != gold_id and self.entity_features(eid) is not None:
                return eid
        return None

    def rival(self, image: torch.Tensor, sample: Any) -> str | None:
        """The wrong entity (with an image) the fused score ranks highest on the clean input:
        the decision's runner-up (`embedding_toward_rival`). None when the KB offers none or
        the sample has no text to rank by."""
        for eid in fused_rivals(self.kb, sample, image, RIVALS_SEARCHED):
            if self.entity_features(eid) is not None:
                return eid
        return None

    def toward_distractor(
        self, images: torch.Tensor, gold_ids: Sequence[str], *, samples: Sequence[Any] | None = None
    ) -> tuple[torch.Tensor, list[str | None]]:
        """(B, 2, D) [reference, distractor] features; the reference is the gold entity's image
        (or the clean image itself), the distractor the clean image's own features when none.
        The distractor is the nearest wrong KB image, or, given the batch's `samples` (their
        mention and sentence), the fused runner-up (`rival`)."""
        clean = self._features(images)
        rows, chosen = [], []
        for i, gold in enumerate(gold_ids):
            ref = self.entity_features(gold)
            ref = clean[i] if ref is None else ref
            d = self.rival(images[i], samples[i]) if samples is not None else self.distractor(images[i], gold)
            chosen.append(d)
            wrong = self.entity_features(d) if d else None
            rows.append(torch.stack([ref, wrong if wrong is not None else -clean[i]]))
        return torch.stack(rows), chosen


def build_target(kind: str, model: nn.Module) -> Any:
    """The attack library's target for a config `target:` name."""
    from retlink.attacks import ClassifierTarget, EmbeddingAwayTarget, TextAlignmentTarget

    if kind in DISTRACTOR_TARGETS:
        return TextAlignmentTarget(Features(model))
    if kind == "embedding_away":
        return EmbeddingAwayTarget(Features(model))
    if kind == "classifier":
        return ClassifierTarget(model)
    raise ValueError(f"unknown attack target {kind!r}")


def chunk_seed(seed: int, attack_index: int, chunk: int) -> int:
    """Seed of one chunk: independent of which other chunks were made before (resume-safe)."""
    return (seed * 1_000_003 + attack_index * 10_007 + chunk) % (2**31)


def make_chunk(
    spec: Any,
    attack_index: int,
    chunk: int,
    samples: Sequence[Any],
    store: AttackedStore,
    labels: LabelMaker | None,
    *,
    seed: int,
    size: int | None,
    target: Any = None,
    label_of: Any = None,
) -> int:
    """Attack one chunk of samples and store the images not stored yet; returns how many were
    stored. Samples whose image cannot be read are skipped (their links record the error).

    `target` replaces the config-named target on the surrogate, and `label_of(sample)` gives each
    sample's label for it (MATE's perception target: the scene's JSON text); `labels` (the KB's
    distractors, its KB) is only needed by `DISTRACTOR_TARGETS`, `text` and `multimodal`."""
    from retlink.attacks import build_attack
    from retlink.attacks.projections import perturbation_norms

    images, ok = [], []
    for s in samples:
        try:
            images.append(clean_tensor(s.image_path, size))
            ok.append(s)
        except InvalidImageError as e:
            log.warning("%s: no attacked image (%s)", s.id, e)
    if not ok:
        return 0
    x = torch.stack(images)
    started = time.perf_counter()
    distractors: list[str | None] = [None] * len(ok)
    y = None
    if target is None:
        target = build_target(spec.target, surrogate(spec.surrogate, spec.pretrained))
        if spec.target in DISTRACTOR_TARGETS and spec.attack not in ("text", "multimodal"):
            # (the text and multimodal attacks choose their wrong entities themselves)
            rivals = ok if spec.target == "embedding_toward_rival" else None
            y, distractors = labels.toward_distractor(x, [s.gold_id for s in ok], samples=rivals)
    if label_of is not None:
        y = [label_of(s) for s in ok]
    attack = build_attack(
        spec.image_attack,
        target,
        spec.preset,
        **{**spec.image_params(), "seed": chunk_seed(seed, attack_index, chunk), "batch_size": spec.batch_size},
    )
    texts: list[dict[str, Any]] = [{} for _ in ok]
    if spec.attack in ("text", "multimodal"):
        adv, texts = _with_text(spec, attack, x, ok, labels, chunk_seed(seed, attack_index, chunk))
    else:
        adv = attack(x, y)
    seconds = (time.perf_counter() - started) / len(ok)
    exact = perturbation_norms(x, adv)
    rounded = perturbation_norms(x, torch.stack([from_uint8(to_uint8(a)) for a in adv]))
    stored = 0
    for i, s in enumerate(ok):
        if store.has(s.id):
            continue
        meta = {
            "attack": spec.name,
            "chunk": chunk,
            "distractor": distractors[i],
            "seconds": round(seconds, 4),
            "norms": {k: v[i] for k, v in exact.items()},
            "norms_png": {k: v[i] for k, v in rounded.items()},
            **texts[i],
        }
        store.save(s.id, adv[i], meta)
        stored += 1
    return stored


def _with_text(
    spec: Any, attack: Any, x: torch.Tensor, samples: Sequence[Any], labels: LabelMaker, seed: int
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """The text attack (`attack: text`, image unchanged) or the joint multimodal attack on one
    chunk. Per sample, the candidate entities are the gold one and the `distractors` wrong ones
    the pipelines' fused score ranks highest on the clean input; the edited sentence and its
    edits are stored with the image (`context`, `substitutions`, `margin`, ...). A sample whose
    gold entity is not in the KB keeps its sentence."""
    from retlink.attacks import ATTACKS
    from retlink.attacks.multimodal import JointMultimodalAttack
    from retlink.attacks.spec import TEXT_ATTACK_PARAMS
    from retlink.attacks.text_attack import TextAttack, attack_sentence
    from retlink.attacks.word_candidates import proposer

    text_params = {k: v for k, v in spec.params.items() if k in TEXT_ATTACK_PARAMS}
    text = attack if isinstance(attack, TextAttack) else ATTACKS["text"].from_preset(attack.target, "normal", **text_params)
    kb = labels.kb
    encoder = kb.text_embedder
    propose = proposer(text.candidates, encoder=encoder, k=text.neighbours, lm=text.lm)
    states = [_sentence(kb, encoder, s, x[i], text) for i, s in enumerate(samples)]
    if spec.attack == "text":
        records = [attack_sentence(st, encoder, propose, text) if st is not None else {} for st in states]
        return x.clone(), records
    # the joint attack: every sample against the same number of entities (rows without an image
    # or padding are masked), surrogate features from the label maker
    k = max(2, *(len(st.refs) for st in states if st is not None))
    dim = labels._features(x[:1]).shape[-1]
    feats = torch.zeros(len(samples), k, dim)
    has = torch.zeros(len(samples), k, dtype=torch.bool)
    clean = labels._features(x)
    for b, st in enumerate(states):
        ids = st.entity_ids if st is not None else [samples[b].gold_id]
        for j, eid in enumerate(ids):
            f = labels.entity_features(eid)
            if f is None and j == 0:  # a gold entity without an image: the clean image stands in
                f = clean[b]
            if f is not None:
                feats[b, j], has[b, j] = f, True
    joint = JointMultimodalAttack(attack, text, encoder, propose, rounds=int(spec.params.get("rounds", 2)))
    return joint(x, feats, has, states)


def _sentence(kb: Any, encoder: Any, sample: Any, image: torch.Tensor, text: Any) -> Any:
    """A sample's `SentenceState`: its candidate entities (gold first, then the wrong entities the
    pipelines' fused score ranks highest on the clean input) and their text embeddings; the
    image's similarities in the KB's own image space (what the pipelines compare). None when the
    gold entity is not in the KB, the KB holds no other entity or the sample has no sentence."""
    from retlink.attacks.text_attack import SentenceState

    if not sample.context.strip() or not kb.get([sample.gold_id]):
        return None
    words = sample.context.split()
    ranked = _fused_ranking(kb, sample, image, text.distractors + 1, text.text_weight, text.image_weight)
    if ranked is None:  # a KB of the gold entity alone: no wrong entity to push toward
        return None
    keep = text.distractors + 1
    ids, img = ranked[0][:keep], (ranked[1][:keep] if ranked[1] is not None else None)
    ents = {e.id: e for e in kb.get(ids)}
    refs = np.asarray(encoder.embed([ents[e].text() for e in ids]), dtype=np.float32)
    return SentenceState(sample.mention, words, refs, img, entity_ids=ids)


def _fused_ranking(
    kb: Any, sample: Any, image: torch.Tensor, wanted: int, text_weight: float, image_weight: float
) -> tuple[list[str], np.ndarray | None] | None:
    """The gold entity, then the wrong entities by the pipelines' fused score on the clean input
    (the `wanted` nearest KB texts to the mention in its sentence and the `wanted` nearest KB
    images, scored as the pipelines fuse them), with their image similarities in the KB's own
    space (NaN: no image; None: no image side). None when no wrong entity is found."""
    from retlink.attacks.text_attack import fused, query_text
    from retlink.tools.images import load_image

    encoder = kb.text_embedder
    query = encoder.embed([query_text(sample.mention, sample.context.split())])[0]
    pool = {eid for eid, _ in kb.query_text(query, wanted)}
    image_vec = None
    if getattr(kb, "has_images", False) and image_weight > 0:
        image_vec = kb.image_embedder.embed_images([load_image(image)])[0]
        pool |= {eid for eid, _ in kb.query_image(image_vec, wanted)}
    pool.discard(sample.gold_id)
    if not pool:
        return None
    ids = [sample.gold_id, *sorted(pool)]
    tsim = kb.text_similarity(query, ids)
    isim = kb.image_similarity(image_vec, ids) if image_vec is not None else {}
    img = np.array([isim.get(e, np.nan) for e in ids]) if image_vec is not None else None
    scores = fused(np.array([[tsim.get(e, -1.0) for e in ids]]), img, text_weight, image_weight)[0]
    order = [0, *(1 + np.argsort(-scores[1:], kind="stable")).tolist()]
    return [ids[i] for i in order], img[order] if img is not None else None


def fused_rivals(kb: Any, sample: Any, image: torch.Tensor, wanted: int) -> list[str]:
    """The wrong entities, best first, by the fused score (0.5 / 0.5) on the clean input."""
    if not (sample.mention or sample.context).strip():
        return []
    ranked = _fused_ranking(kb, sample, image, wanted, RIVAL_WEIGHTS[0], RIVAL_WEIGHTS[1])
    return [] if ranked is None else ranked[0][1:]
