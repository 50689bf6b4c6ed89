"""An image attack as a config names it: which attack, preset, parameters, target and surrogate.

Here, with the attacks, because every layer that attacks images reads it: the eval runner's
`attacks:` entries, the MATE runner's (`MateAttackSpec` narrows the targets) and the server's
attack endpoint (its surrogate names). Validation checks against the attack registry itself
(`retlink.attacks.ATTACKS`), so a typo in a parameter name fails when the config loads.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from retlink.core.config import NAME, StrictModel, init_hints
from retlink.core.networks import DEFAULT_NETWORK

_FRACTION = re.compile(r"^\s*-?\d+(\.\d+)?\s*/\s*\d+(\.\d+)?\s*$")
#: attack constructor arguments the runner gives, never a config
ATTACK_INTERNALS = frozenset({"target", "amp_dtype"})


TargetName = Literal["embedding_toward_distractor", "embedding_toward_rival", "embedding_away", "classifier"]
OPEN_CLIP = "open_clip:"


def _surrogate_name(value: str) -> str:
    """One network of `retlink.core.networks` (any of its names), `a+b` for the ensemble,
    or `open_clip:MODEL` (an open_clip image tower, weights from the attack's `pretrained` file)."""
    from retlink.core.networks import network

    if value.startswith(OPEN_CLIP):
        if not value[len(OPEN_CLIP) :]:
            raise ValueError("open_clip: names no model, e.g. open_clip:ViT-B-32")
        return value
    return "+".join(network(part).value for part in value.split("+"))


#: attack surrogates (`retlink.attacks.attacked.surrogate`): one network, `a+b` for several at once,
#: or `open_clip:MODEL`
SurrogateName = Annotated[str, AfterValidator(_surrogate_name)]


def _number(value: Any) -> Any:
    """'8/255' -> 0.0313...: budgets are quoted in 1/255 units, YAML has no fractions."""
    if isinstance(value, str) and _FRACTION.match(value):
        num, den = (float(p) for p in value.split("/"))
        if den == 0:
            raise ValueError(f"division by zero in {value!r}")
        return num / den
    return value


def fraction_text(value: float) -> str:
    """0.03137 -> '8/255' when it is a whole number of 255ths (how budgets are quoted; the
    inverse of the parsing above)."""
    f = Fraction(value * 255).limit_denominator(8)
    if abs(float(f) - value * 255) < 1e-6 and f.denominator == 1:
        return f"{f.numerator}/255"
    return f"{value:.4g}"


#: a budget a config may quote as a fraction ('8/255'), read like an attack's `params`
Budget = Annotated[float, BeforeValidator(_number)]


#: the text half's parameters (`retlink.attacks.text_attack.TextAttack`'s own): `attack: text`
#: takes them as any registered attack's, and `multimodal` takes them beside PGD's, with `rounds`
TEXT_ATTACK_PARAMS = frozenset(
    {"max_substitutions", "candidates", "neighbours", "lm", "min_similarity", "distractors", "text_weight", "image_weight"}
)

#: attacks an eval config names besides the registered ones (`retlink.attacks.ATTACKS`):
#: name -> (the image attack underneath, the extra parameters it takes)
COMPOSITE_ATTACKS: dict[str, tuple[str, frozenset[str]]] = {
    # per pipeline: plain PGD plus the adaptive attacks its own defences call for (BPDA/EOT
    # through its purifier, detector-aware with its detector's threshold and network); a sample
    # counts as broken when any of them breaks it
    "adaptive": ("pgd", frozenset({"eot_samples"})),
    # MAT's multimodal attack, optimised jointly: image PGD steps alternating with word
    # substitutions in the sentence on the pipelines' fused score (`retlink.attacks.multimodal`)
    "multimodal": ("pgd", TEXT_ATTACK_PARAMS | {"rounds"}),
}


class AttackSpec(StrictModel):
    """One image attack of `retlink.attacks`, its parameters and the surrogate it attacks.

    Targets (all on the surrogate's pooled image features unless noted):
    - `embedding_toward_distractor`: away from the gold entity's KB image, toward the nearest
      wrong entity's KB image (what breaks image-to-image retrieval).
    - `embedding_toward_rival`: the same, toward the decision's runner-up (the wrong entity the
      fused text and image score ranks highest): what flips a pipeline that also reads text.
    - `embedding_away`: away from the clean image's own features (untargeted).
    - `classifier`: the surrogate's ImageNet logits, untargeted (what the tagger captions from).

    `attack` is a registered attack or one of `COMPOSITE_ATTACKS` (`adaptive`, `multimodal`).
    """

    name: str = Field(pattern=NAME)
    attack: str
    #: a preset of the attack: `normal`, `strong`, or `mat` (PGD, 2 steps at 2/255) where defined
    preset: str = "normal"
    #: any parameter of the attack class; '8/255' style fractions allowed
    params: dict[str, Any] = Field(default_factory=dict)
    target: TargetName = "embedding_toward_distractor"
    #: the network the attack optimises against: the pipeline's own (white box) or another one
    #: (a transfer attack), or the ensemble of both (an attacker who does not know which one)
    surrogate: SurrogateName = DEFAULT_NETWORK.value
    #: the surrogate's weights, a local file (nothing is downloaded; relative to the YAML file).
    #: With a network surrogate: a fine-tuned checkpoint of it (`retlink train`, `kind: encoder`),
    #: the pipeline's own when its `embedder.image_weights` names the same file (white box); None:
    #: the packaged weights. With `open_clip:MODEL`: its checkpoint; None: random weights (tests only)
    pretrained: Path | None = None
    batch_size: int = Field(8, ge=1, le=256)

    @field_validator("params", mode="before")
    @classmethod
    def _fractions(cls, v: Any) -> Any:
        return {k: _number(x) for k, x in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _check_attack(self) -> AttackSpec:
        from retlink.attacks import ATTACKS

        if self.attack not in ATTACKS and self.attack not in COMPOSITE_ATTACKS:
            known = sorted([*ATTACKS, *COMPOSITE_ATTACKS])
            raise ValueError(f"unknown attack {self.attack!r}; known: {', '.join(known)}")
        presets = ATTACKS[self.image_attack].presets
        if self.preset not in presets:
            raise ValueError(f"attack {self.attack!r} has no preset {self.preset!r}; presets: {', '.join(presets)}")
        if self.surrogate.startswith(OPEN_CLIP):
            if self.target == "classifier":
                raise ValueError(f"target classifier needs an ImageNet surrogate; {self.surrogate} has no classes")
        elif self.pretrained is not None and "+" in self.surrogate:
            raise ValueError(f"pretrained names one network's fine-tuned weights, not the ensemble {self.surrogate}")
        allowed = attack_parameters(self.image_attack) | COMPOSITE_ATTACKS.get(self.attack, ("", frozenset()))[1]
        bad = sorted(set(self.params) - allowed)
        if bad:
            raise ValueError(
                f"unknown parameter(s) {', '.join(bad)} of attack {self.attack!r}; known: {', '.join(sorted(allowed))}"
            )
        return self

    @property
    def image_attack(self) -> str:
        """The registered image attack that makes the images (`pgd` under a composite attack)."""
        return COMPOSITE_ATTACKS[self.attack][0] if self.attack in COMPOSITE_ATTACKS else self.attack

    def resolved_params(self) -> dict[str, Any]:
        """The preset's parameters with the overrides applied (what the attack runs with)."""
        from retlink.attacks import ATTACKS

        return {**ATTACKS[self.image_attack].presets[self.preset], **self.params}

    def image_params(self) -> dict[str, Any]:
        """`params` without the composite attack's own keys (what the image attack receives)."""
        extra = COMPOSITE_ATTACKS.get(self.attack, ("", frozenset()))[1]
        return {k: v for k, v in self.params.items() if k not in extra}

    @property
    def eps(self) -> float | None:
        """The perturbation budget, for accuracy-vs-epsilon plots."""
        value = self.resolved_params().get("eps")
        return float(value) if isinstance(value, int | float) else None

    @property
    def adversarial(self) -> bool:
        """Whether the images are searched to fool the pipeline (the registered class's flag:
        `augment` views and `gaussian_noise` are not; a composite attack is its image attack's)."""
        from retlink.attacks import ATTACKS

        return ATTACKS[self.image_attack].adversarial

    @property
    def budget(self) -> tuple[str, float] | None:
        """(norm, eps) the attack is bounded by, e.g. ('Linf', 8/255): the `norm` parameter, else
        the class's `budget_norm`; None for an attack without one (the text attack) or one that
        also edits the sentence (`multimodal`: the image budget is not its whole threat)."""
        from retlink.attacks import ATTACKS

        if self.attack in ("text", "multimodal"):
            return None
        norm = self.resolved_params().get("norm") or ATTACKS[self.image_attack].budget_norm
        return (str(norm), self.eps) if norm is not None and self.eps is not None else None


def attack_parameters(name: str) -> set[str]:
    """Keyword parameters an attack class accepts (its own and the shared base's)."""
    from retlink.attacks import ATTACKS

    return init_hints([ATTACKS[name]])[1] - ATTACK_INTERNALS
