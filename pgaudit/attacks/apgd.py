"""Auto-PGD (Croce & Hein 2020) in plain torch: a step size that needs no tuning, on any objective.

Per image, from a start ``x₀`` in the ε-ball: the first step is a PGD step of size η = 2ε; every
later step mixes the PGD step ``z = Π(x_k + η·dir ∇f(x_k))`` with momentum,
``x_{k+1} = Π(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))`` (α = 0.75). At the checkpoints
``w_j = ⌈p_j·N⌉`` (p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) the step size
of an image is halved, and its iterate reset to its best point so far, when fewer than ρ = 75 %
of the steps since the last checkpoint raised the objective, or when its step size was not halved
at the last checkpoint and its best value has not risen since (:func:`halving`). The best iterate of each image is returned (it never scores worse
than the start). ``dir`` is the sign (L∞) or the unit-L2 gradient; ``Π`` projects onto the ε-ball
and clips to [0, 1], as :func:`pgaudit.attacks.native.pgd` does.

Every quantity is per image, so an image's result does not depend on the rest of its batch.
Cost: ``steps`` forward+backward passes and one forward pass.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pgaudit.attacks.native import ObjectiveFn, _direction, project, random_start

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    """The iterations (1..steps-1) at which the step size may be halved."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    marks = sorted({math.ceil(round(q * steps, 6)) for q in p[1:] if q < 1})
    return [w for w in marks if 0 < w < steps]


def halving(
    rises: Tensor, steps_since: int, halved_last: Tensor, best: Tensor, best_at_last: Tensor
) -> Tensor:
    """Which images halve their step size at a checkpoint: too few of the ``steps_since`` steps
    since the last checkpoint raised the objective, or the step size was not halved there and the
    best value has not risen since."""
    stalled = rises < RHO * steps_since
    unchanged = ~halved_last & (best <= best_at_last)
    return stalled | unchanged


def _value_and_grad(objective: ObjectiveFn, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    values = objective(x)
    (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), grad.detach()


def apgd(
    objective: ObjectiveFn,
    images: Tensor,
    *,
    eps: float,
    norm: str = "inf",
    steps: int = 100,
    random_init: bool = True,
    rng: np.random.RandomState | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """One APGD run maximising ``objective`` (``images -> [B]``) within the ε-ball of ``images``.

    ``start``: an initial perturbation per image (replaces the random start). Returns, per image,
    the best iterate (detached).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    x0 = images.detach()
    view = (-1, *([1] * (x0.ndim - 1)))

    def step_to(x: Tensor, direction: Tensor, size: Tensor) -> Tensor:
        moved = (x + size.view(view) * direction).clamp(0, 1)
        return x0 + project(moved - x0, eps, norm)

    unit = torch.ones(len(x0), device=x0.device, dtype=x0.dtype)
    if start is not None:
        x = step_to(x0, start.detach().to(x0.device, x0.dtype), unit)
    elif random_init:
        x = step_to(x0, random_start(tuple(x0.shape), eps, norm, rng).to(x0), unit)
    else:
        x = x0.clone()
    f, grad = _value_and_grad(objective, x)
    best_x, best_f, best_grad = x.clone(), f.clone(), grad.clone()
    eta = torch.full((len(x0),), 2.0 * eps, device=x0.device, dtype=x0.dtype)
    marks = checkpoints(steps)
    rises = torch.zeros(len(x0), device=x0.device)
    last_mark, best_at_mark = 0, best_f.clone()
    halved = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    x_prev = x
    for k in range(steps):
        z = step_to(x, _direction(grad, norm), eta)
        if k == 0:
            x_new = z
        else:
            mixed = x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_prev)
            x_new = x0 + project(mixed.clamp(0, 1) - x0, eps, norm)
        x_prev, x = x, x_new
        if k == steps - 1:  # the last iterate needs its value only
            with torch.no_grad():
                f_new = objective(x).detach()
        else:
            f_new, grad = _value_and_grad(objective, x)
        rises += (f_new > f).to(rises.dtype)
        f = f_new
        better = f > best_f
        best_x = torch.where(better.view(view), x, best_x)
        best_grad = torch.where(better.view(view), grad, best_grad)
        best_f = torch.where(better, f, best_f)
        if k + 1 in marks:
            halved = halving(rises, k + 1 - last_mark, halved, best_f, best_at_mark)
            eta = torch.where(halved, eta / 2, eta)
            x = torch.where(halved.view(view), best_x, x)
            x_prev = torch.where(halved.view(view), x, x_prev)  # no momentum across a reset
            grad = torch.where(halved.view(view), best_grad, grad)
            best_at_mark = best_f.clone()
            rises.zero_()
            last_mark = k + 1
    return best_x.detach()
