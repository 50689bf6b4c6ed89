"""The attack endpoint behind the web page's Attack panel: `POST /v1/attack`.

It makes one adversarial image with the eval module's own attacks (`retlink.attacks`: FGSM
or L-inf PGD) on the surrogate network the embedded default captions and embeds with, so a person
can link the clean and the perturbed image side by side and see what changed. It is off unless
configured (`AttackSettings.enabled`, `retlink serve --attack`): an attack costs seconds of CPU
per request. When on, it is bounded: image bytes and pixels (413), steps and budget (400), one
attack at a time (429 while one runs) and a number per minute (429 beyond it). The request's
numbers are range-checked before anything runs (400): a finite budget above 0, a seed that
torch's generator takes (0 to 2**32 - 1), and an `entity_id` the KB holds (404 otherwise).

The image is resized and centre-cropped to the network's input (224 px), as the eval module
attacks it; the answer holds that clean crop, the adversarial image (both PNG data URIs, 8-bit
as saved files are) and their difference magnified, with the measured norms.

Target: with `entity_id` (the entity the clean image linked to), the eval module's
`embedding_toward_distractor`: away from that entity's KB image, toward the nearest wrong
entity's (which it names); without it, `embedding_away` from the clean image's own features.
An id the KB does not hold is refused rather than silently attacked "away".
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections import deque
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from retlink.agent.nodes.validator import check_unicode
from retlink.attacks.spec import SurrogateName
from retlink.core.errors import InputError, RetlinkError
from retlink.core.networks import DEFAULT_NETWORK

#: the largest seed an attack request may carry
MAX_SEED = 2**32 - 1


class AttackSettings(BaseModel):
    """Limits of the attack endpoint. Off by default. Strict: an unknown key is an error."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: the network attacked (white box against the embedded default: its captioner and embedder)
    surrogate: SurrogateName = DEFAULT_NETWORK.value
    max_steps: int = Field(20, ge=1)
    #: the largest L-inf budget, in 1/255 units
    max_eps: float = Field(16.0, gt=0)
    max_image_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(4_000_000, ge=64)
    #: attacks per rolling minute, all clients together
    per_minute: int = Field(6, ge=1)
    #: factor the page's difference image is magnified by
    magnify: float = Field(10.0, gt=0)


class AttackRequest(BaseModel):
    image: str = Field(description="the image as a data URI (what the page uploads)")
    attack: Literal["fgsm", "pgd"] = "pgd"
    #: L-inf budget in 1/255 units (finite: JSON's Infinity and NaN are refused)
    eps: float = Field(8.0, gt=0, allow_inf_nan=False)
    steps: int = Field(10, ge=1)
    entity_id: str | None = None
    #: the attack's torch.Generator seed; torch refuses what does not fit its 64 bits (a 500 once),
    #: and 32 bits are what every seeded library here takes
    seed: int = Field(0, ge=0, le=MAX_SEED)


class AttackResponse(BaseModel):
    attack: str
    eps: float
    steps: int
    target: str
    distractor: str | None
    clean: str
    adversarial: str
    difference: str
    magnify: float
    linf_255: float
    l2: float
    seconds: float


class AttackRefused(RetlinkError):
    """An attack request over the endpoint's limits (its HTTP status says which)."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.error_type = "rate_limit_error" if status == 429 else "invalid_request_error"
        self.code = code


class AttackLimiter:
    """One attack at a time and `per_minute` in any rolling minute; refuses (429) beyond them."""

    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.started: deque[float] = deque()
        self.running = False

    def admit(self) -> None:
        now = self.clock()
        while self.started and now - self.started[0] >= 60:
            self.started.popleft()
        if self.running:
            raise AttackRefused("an attack is already running; retry when it is done", 429, "attack_busy")
        if len(self.started) >= self.per_minute:
            wait = 60 - (now - self.started[0])
            raise AttackRefused(f"at most {self.per_minute} attacks a minute; retry in {wait:.0f}s", 429,
                                "attack_rate_limited")
        self.started.append(now)
        self.running = True

    def done(self) -> None:
        self.running = False


def check_request(req: AttackRequest, settings: AttackSettings) -> None:
    if req.steps > settings.max_steps:
        raise AttackRefused(f"steps {req.steps} is over the limit of {settings.max_steps}", 400, "too_many_steps")
    if req.eps > settings.max_eps:
        raise AttackRefused(f"eps {req.eps:g}/255 is over the limit of {settings.max_eps:g}/255", 400, "eps_too_large")
    if req.attack == "fgsm" and req.steps != 1:
        req.steps = 1  # FGSM is one step whatever was asked


def png_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def make_attack(pil: Image.Image, req: AttackRequest, settings: AttackSettings, kb: Any) -> AttackResponse:
    """Attack one image (blocking: run it in a thread)."""

    from retlink.attacks import build_attack
    from retlink.attacks.attacked import LabelMaker, build_target, from_uint8, surrogate, to_uint8
    from retlink.attacks.projections import perturbation_norms
    from retlink.tools.vision.efficientnet import INPUT_SIZE, preprocess

    started = time.perf_counter()
    model = surrogate(settings.surrogate)
    x = preprocess(pil, INPUT_SIZE).unsqueeze(0)
    y, distractor, target = None, None, "embedding_away"
    if req.entity_id is not None:  # run_attack checked that the KB holds it
        target = "embedding_toward_distractor"
        y, chosen = LabelMaker(kb, model, INPUT_SIZE).toward_distractor(x, [req.entity_id])
        distractor = chosen[0]
    params: dict[str, Any] = {"eps": req.eps / 255, "seed": req.seed}
    if req.attack == "pgd":
        params.update(steps=req.steps, alpha=max(req.eps / 255 / 4, 0.5 / 255))
    adv = build_attack(req.attack, build_target(target, model), "normal", **params)(x, y)
    clean_u8, adv_u8 = to_uint8(x[0]), to_uint8(adv[0])
    norms = perturbation_norms(x, from_uint8(adv_u8).unsqueeze(0))
    diff = (from_uint8(adv_u8) - from_uint8(clean_u8)).abs().mul(settings.magnify).clamp(0, 1)
    return AttackResponse(
        attack=req.attack, eps=req.eps, steps=req.steps, target=target, distractor=distractor,
        clean=png_data_uri(Image.fromarray(clean_u8)), adversarial=png_data_uri(Image.fromarray(adv_u8)),
        difference=png_data_uri(Image.fromarray(to_uint8(diff))), magnify=settings.magnify,
        linf_255=round(norms["linf_255"][0], 3), l2=round(norms["l2"][0], 4),
        seconds=round(time.perf_counter() - started, 3),
    )


async def run_attack(req: AttackRequest, settings: AttackSettings, limiter: AttackLimiter, kb: Any) -> AttackResponse:
    """Check, admit, decode and attack; every refusal is a typed error with its status."""
    from retlink.serve.inputs import decode_data_uri
    from retlink.tools.images import load_image

    if not settings.enabled:
        raise AttackRefused("the attack endpoint is off (start the server with --attack)", 404, "attack_disabled")
    check_request(req, settings)
    if req.entity_id is not None:
        check_unicode(req.entity_id, "entity_id")
        if kb is None or not kb.get([req.entity_id]):
            raise AttackRefused(f"no entity {req.entity_id!r} in the knowledge base to attack away from", 404,
                                "entity_not_found")
    if not req.image.startswith("data:"):
        raise InputError("image must be a data URI (data:image/...;base64,...)")
    data = decode_data_uri(req.image, settings.max_image_bytes)
    pil = load_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    limiter.admit()
    try:
        return await asyncio.to_thread(make_attack, pil, req, settings, kb)
    finally:
        limiter.done()
