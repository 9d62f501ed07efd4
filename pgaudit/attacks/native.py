"""Projected gradient descent in plain torch: the fast path, and a cross-check of ART's PGD; and
NES, the same steps on a gradient estimated from objective values (:func:`nes`).

Same semantics as ART's ``ProjectedGradientDescentPyTorch`` with ``num_random_init=1``: a uniform
random start in the ε-ball, then per step ``x ← Π_ε(clip₀¹(x + α·dir(∇)))`` with ``dir`` the sign
(L∞) or the unit-L2 gradient (L2); the last iterate is returned. The random start is drawn from a
numpy ``RandomState`` the way ART draws it from numpy's global one (uniform per coordinate for L∞;
a Gaussian direction with a χ²-CDF radius for L2), so under the same seed both start from the same
point. Only input gradients are taken (``torch.autograd.grad``): parameter ``.grad`` fields are
never touched.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.special import gammainc
from torch import Tensor

from pgaudit.attacks.eps import default_step_size

#: ``objective(images) -> [B]`` values to maximise (differentiable w.r.t. the images).
ObjectiveFn = Callable[[Tensor], Tensor]

_TINY = 1e-12


def _per_image_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project perturbations onto the ε-ball of ``norm`` ("inf" or "2"), per image."""
    if norm == "inf":
        return delta.clamp(-eps, eps)
    if norm == "2":
        scale = (eps / _per_image_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
        return delta * scale
    raise ValueError(f"unsupported norm {norm!r}; expected 'inf' or '2'")


def random_start(
    shape: tuple[int, ...], eps: float, norm: str, rng: np.random.RandomState | None = None
) -> Tensor:
    """A uniform sample of the ε-ball per image, as float32 on the CPU (device-independent)."""
    rng = rng if rng is not None else np.random.RandomState()
    n, dims = shape[0], int(np.prod(shape[1:]))
    if norm == "inf":
        delta = rng.uniform(-eps, eps, (n, dims))
    elif norm == "2":
        gauss = rng.standard_normal((n, dims))
        sq = np.sum(gauss**2, axis=1)
        # ||g||^2 is chi-square(dims): its CDF is uniform, and U^(1/dims) is the radius law.
        radius = gammainc(dims / 2.0, sq / 2.0) ** (1.0 / dims) * eps
        delta = gauss * (radius / np.sqrt(np.maximum(sq, _TINY)))[:, None]
    else:
        raise ValueError(f"unsupported norm {norm!r}; expected 'inf' or '2'")
    return torch.from_numpy(delta.astype(np.float32)).view(shape)


def _direction(grad: Tensor, norm: str) -> Tensor:
    if norm == "inf":
        return grad.sign()
    return grad / _per_image_norm(grad).clamp_min(_TINY)


def pgd(
    objective: ObjectiveFn,
    images: Tensor,
    *,
    eps: float,
    norm: str = "inf",
    steps: int = 10,
    step_size: float | None = None,
    random_init: bool = True,
    rng: np.random.RandomState | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """One PGD run maximising ``objective`` within the ε-ball around ``images`` (in [0, 1]).

    ``steps=1, step_size=eps, random_init=False`` is FGSM. ``start``: an initial perturbation per
    image (projected onto the ε-ball; replaces the random start), e.g. one carried over from an
    earlier run. Returns the last iterate (detached).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    alpha = default_step_size(eps, steps) if step_size is None else step_size
    x0 = images.detach()
    if start is not None:
        delta = project(start.detach().to(x0.device, x0.dtype), eps, norm)
        x = (x0 + delta).clamp(0, 1)
    elif random_init:
        delta = random_start(tuple(x0.shape), eps, norm, rng).to(x0.device, x0.dtype)
        x = (x0 + delta).clamp(0, 1)
    else:
        x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        values = objective(x)
        (grad,) = torch.autograd.grad(values.sum(), x)
        with torch.no_grad():
            x = (x + alpha * _direction(grad, norm)).clamp(0, 1)
            x = x0 + project(x - x0, eps, norm)
    return x.detach()


def _probe(shape: tuple[int, ...], tile: int, rng: np.random.RandomState) -> Tensor:
    """A Gaussian direction of ``shape`` ``[B, C, H, W]``, constant on ``tile``-px tiles."""
    n, c, h, w = shape
    coarse = (n, c, -(-h // tile), -(-w // tile))
    u = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))
    if tile > 1:
        u = u.repeat_interleave(tile, dim=2).repeat_interleave(tile, dim=3)[:, :, :h, :w]
    return u


def nes(
    objective: ObjectiveFn,
    images: Tensor,
    *,
    eps: float,
    norm: str = "inf",
    steps: int = 10,
    step_size: float | None = None,
    samples: int = 20,
    sigma: float | None = None,
    random_init: bool = True,
    rng: np.random.RandomState | None = None,
    tile: int = 1,
) -> Tensor:
    """NES (Ilyas et al. 2018): PGD within the ε-ball with the gradient estimated from values.

    Per step, ``samples // 2`` Gaussian directions ``u`` are probed in antithetic pairs
    ``x ± σu`` (``σ`` = ε/4 by default): ``ĝ = Σ (f(x+σu) − f(x−σu)) u``; then the PGD step on
    ``ĝ``. No gradient is taken, so it runs on any detector that returns scores. The best iterate
    per image is kept (one more query per step). Directions come from ``rng``; ``tile`` > 1 draws
    them constant on ``tile`` × ``tile`` pixel tiles (the tiling prior of Ilyas et al. 2019:
    fewer dimensions to estimate, a far better estimate per query).
    """
    if steps < 1 or samples < 2:
        raise ValueError("steps must be >= 1 and samples >= 2")
    alpha = default_step_size(eps, steps) if step_size is None else step_size
    sigma = eps / 4 if sigma is None else sigma
    rng = rng if rng is not None else np.random.RandomState()
    x0 = images.detach()
    x = x0.clone()
    if random_init:
        x = (x0 + random_start(tuple(x0.shape), eps, norm, rng).to(x0.device, x0.dtype)).clamp(0, 1)
    best_x, best = x, objective(x)
    shape = (-1, *([1] * (x0.ndim - 1)))
    for _ in range(steps):
        grad = torch.zeros_like(x)
        for _ in range(samples // 2):
            u = _probe(tuple(x0.shape), tile, rng).to(x0.device, x0.dtype)
            diff = objective((x + sigma * u).clamp(0, 1)) - objective((x - sigma * u).clamp(0, 1))
            grad += diff.view(shape).to(x0.dtype) * u
        x = (x + alpha * _direction(grad, norm)).clamp(0, 1)
        x = x0 + project(x - x0, eps, norm)
        value = objective(x)
        better = value > best
        best_x = torch.where(better.view(shape), x, best_x)
        best = torch.where(better, value, best)
    return best_x.detach()
