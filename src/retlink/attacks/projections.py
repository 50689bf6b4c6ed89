"""Per-sample norms, projections and random starts shared by the attacks.

Kept in one place so every attack measures and enforces its budget the same way, and so the
metrics and the export can report the norm the attacks actually constrained.
"""

from __future__ import annotations

import torch

_TINY = 1e-12


def flat(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, N): one row a sample."""
    return t.reshape(t.shape[0], -1)


def linf_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L-inf norm, shape (B,)."""
    return flat(t).abs().amax(dim=1)


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shape (B,), computed in float64 so budget checks are not fooled by rounding."""
    return flat(t).double().norm(dim=1).to(t.dtype)


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a perturbation onto the `norm` ball of radius `eps` (per sample)."""
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    if norm == "L2":
        scale = (eps / l2_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
        return delta * _expand(scale, delta)
    raise ValueError(f"unknown norm {norm!r}: use 'Linf' or 'L2'")


def clip_to_box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """x + delta clipped to the valid image range [0, 1]."""
    return (x + delta).clamp(0.0, 1.0)


def project_image(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Bring an iterate back inside both the budget around `x` and the image box.

    Clipping to [0, 1] after the ball projection can only shrink each coordinate of the
    perturbation towards zero, so the result stays inside the ball.
    """
    return clip_to_box(x, project(x_adv - x, eps, norm))


def steepest_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm steepest ascent direction: sign for L-inf, normalised gradient for L2."""
    if norm == "Linf":
        return grad.sign()
    if norm == "L2":
        return grad / _expand(l2_norm(grad).clamp_min(_TINY), grad)
    raise ValueError(f"unknown norm {norm!r}: use 'Linf' or 'L2'")


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random point inside the budget around `x` (uniform in the L-inf box; uniform radius and
    direction in the L2 ball), clipped to the image box. Drawn from `generator` for determinism."""
    if norm == "Linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    elif norm == "L2":
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / _expand(l2_norm(direction).clamp_min(_TINY), x)
        radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) * eps
        delta = direction * _expand(radius, x)
    else:
        raise ValueError(f"unknown norm {norm!r}: use 'Linf' or 'L2'")
    return clip_to_box(x, delta)


def perturbation_norms(clean: torch.Tensor, attacked: torch.Tensor) -> dict[str, list[float]]:
    """Measured per-sample L-inf and L2 norms of attacked - clean (images in [0, 1]), so a
    report can show the budget held. Also L-inf in 1/255 units, the unit budgets are quoted in."""
    if clean.shape != attacked.shape:
        raise ValueError(f"shape mismatch: {tuple(clean.shape)} vs {tuple(attacked.shape)}")
    delta = (attacked.detach().double() - clean.detach().double()).cpu()
    if delta.dim() == 3:
        delta = delta.unsqueeze(0)
    linf = linf_norm(delta)
    return {
        "linf": linf.tolist(),
        "linf_255": (linf * 255).tolist(),
        "l2": l2_norm(delta).tolist(),
    }
