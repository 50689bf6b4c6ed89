"""The sets of attacked images an eval attack makes: one for a plain attack, one per defence
configuration for `attack: adaptive` (each pipeline faces the adaptive attacks its own defences
call for). Here in eval, not beside the image store in `retlink.attacks.attacked`, because it
reads the eval config's pipelines and their defences."""

from __future__ import annotations

from typing import Any, NamedTuple


class Variant(NamedTuple):
    """One set of attacked images of an attack: what makes them, who faces them, where they are."""

    spec: Any
    pipelines: list[str]
    #: folder below the run's `attacked/`
    store: str


def attack_variants(cfg: Any, spec: Any) -> dict[str, Variant]:
    """{variant key: Variant} of one attack of an eval config.

    A plain attack has one variant, key "" (its images in `attacked/<name>/`). `attack: adaptive`
    expands per pipeline into plain PGD plus the adaptive attacks its own defence config calls
    for (`retlink.attacks.adaptive.adaptive_attacks`), each in `attacked/<name>/<key>/`;
    pipelines with the same defences share a variant's images, and the plain PGD variant uses
    the images of a plain attack of the config with the very same parameters, when there is one."""
    from retlink.attacks.adaptive import adaptive_attacks, attack_key
    from retlink.eval.pipelines import pipeline_defence

    def faces(p: Any, name: str) -> bool:
        return any(name in cfg.attacks_in(s) and p.name in cfg.pipelines_in(s) for s in cfg.settings)

    pipes = [p.name for p in cfg.pipelines if faces(p, spec.name)]
    if spec.attack != "adaptive":
        return {"": Variant(spec, pipes, spec.name)}
    base = spec.image_params()
    eot = int(spec.resolved_params().get("eot_samples", 4))
    out: dict[str, Variant] = {}
    for p in cfg.pipelines:
        if p.name not in pipes:
            continue
        for name, overrides in [("pgd", {}), *adaptive_attacks(pipeline_defence(p), eot, spec.surrogate, spec.pretrained)]:
            key = attack_key(name, overrides)
            if key not in out:
                variant = spec.model_copy(update={"attack": name, "params": {**base, **overrides}})
                same = next((a for a in cfg.attacks if _same_images(a, variant)), None)
                out[key] = Variant(same or variant, [], same.name if same else f"{spec.name}/{key}")
            out[key].pipelines.append(p.name)
    return out


def _same_images(a: Any, b: Any) -> bool:
    """Whether two attack specs make the same images (all but the name equal)."""
    fields = ("attack", "preset", "params", "target", "surrogate", "batch_size")
    return all(getattr(a, f) == getattr(b, f) for f in fields)
