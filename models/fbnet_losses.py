"""The four architecture losses of the FBNet search, as pure functions of tensors.

``ce`` is the cross-entropy (a scalar, the batch mean, or per sample ``(B,)``), ``acc`` the batch
accuracy in [0, 1] (a number: it carries no gradient), ``lat`` and ``energy`` the costs of the sampled
architectures, per sample ``(B,)`` (each image draws its own architecture) or scalars, in the loss
units chosen by the caller. Terms in ``lat``/``energy`` are averaged over the batch.

- ``fbnet`` (Wu et al., eq. 1): ``CE · α · log(LAT)^β``; FBNet1: α 0.5, β 0.6; FBNet2: α 0.2, β 0.4.
- ``additive`` (Vineeth et al., HANNA): ``CE + α·LAT^β + γ·E^δ``; FBNet3: α 0.5, β 0.5, γ 1.5, δ 0.5.
- ``ccel1`` (Ozawa et al., Algorithm 1): ``rate = acc / (goal − 0.1)``; ``CCEL = 0`` if
  ``acc ≥ goal − 0.1`` else ``CE − rate·CE``; ``CCEL += 1``;
  ``total = CCEL · (log(lat)^β + log(energy)^β)``, β 0.5.
- ``ccel2`` (Algorithm 2): ``rate = acc / goal``; ``CCEL = 0`` if ``acc ≥ goal`` else ``CE − rate·CE``
  (no +1); ``total = CCEL + log(lat)^β + log(energy)^β``, β 0.5; at goal 1.0 (S2-Normal) the paper
  leaves the CE unchanged (§4.2), so CCEL = CE there.

Finite everywhere: ``log(x)^β`` with a fractional β is NaN for x < 1 (log < 0) and has an infinite
slope at x = 1. :func:`log_power` clamps x to ``≥ exp(LOG_FLOOR)`` first, so log(x) ≥ 1e-3 and
both the value and its gradient are finite (the gradient is zero below the floor); :func:`power`
clamps x to ``≥ POW_FLOOR`` likewise. Choose loss units in which every network's cost exceeds 1
(``FBNetSearch`` checks this) so the clamps never act in practice.

Each function returns its named parts: ``loss`` and ``ce`` / ``ccel``, ``lat_term``, ``energy_term``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_FLOOR = 1e-3
POW_FLOOR = 1e-6


def log_power(x: Tensor, beta: float) -> Tensor:
    """``log(x)^β`` with x clamped to ``≥ exp(LOG_FLOOR)``: finite value and gradient for every x ≥ 0."""
    return torch.log(torch.as_tensor(x).clamp_min(math.exp(LOG_FLOOR))).pow(beta)


def power(x: Tensor, beta: float) -> Tensor:
    """``x^β`` with x clamped to ``≥ POW_FLOOR``: finite value and gradient for every x ≥ 0."""
    return torch.as_tensor(x).clamp_min(POW_FLOOR).pow(beta)


def fbnet_loss(ce: Tensor, lat: Tensor, alpha: float = 0.5, beta: float = 0.6) -> dict[str, Tensor]:
    """FBNet: ``mean(CE · α · log(LAT)^β)`` (per sample when ``ce`` and ``lat`` are ``(B,)``)."""
    lat_term = alpha * log_power(lat, beta)
    return {"loss": (ce * lat_term).mean(), "ce": torch.as_tensor(ce).mean(), "lat_term": lat_term.mean()}


def additive_loss(
    ce: Tensor,
    lat: Tensor,
    energy: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.5,
    delta: float = 0.5,
) -> dict[str, Tensor]:
    """HANNA: ``CE + α·LAT^β + γ·E^δ`` (cost terms averaged over the batch)."""
    lat_term = (alpha * power(lat, beta)).mean()
    energy_term = (gamma * power(energy, delta)).mean()
    ce = torch.as_tensor(ce).mean()
    return {"loss": ce + lat_term + energy_term, "ce": ce, "lat_term": lat_term, "energy_term": energy_term}


def custom_cross_entropy(ce: Tensor, acc: float, goal: float) -> Tensor:
    """CCEL before any offset: 0 once ``acc ≥ goal``, else ``CE − (acc / goal)·CE``."""
    if goal <= 0:
        raise ValueError(f"the goal accuracy must be > 0, got {goal}")
    ce = torch.as_tensor(ce).mean()
    if acc >= goal:
        return torch.zeros_like(ce)
    return ce - (acc / goal) * ce


def ccel1_loss(
    ce: Tensor, acc: float, lat: Tensor, energy: Tensor, goal: float, beta: float = 0.5, margin: float = 0.1
) -> dict[str, Tensor]:
    """Method 1: ``(CCEL(goal − margin) + 1) · (log(lat)^β + log(energy)^β)``."""
    ccel = custom_cross_entropy(ce, acc, goal - margin) + 1
    lat_term, energy_term = log_power(lat, beta).mean(), log_power(energy, beta).mean()
    return {"loss": ccel * (lat_term + energy_term), "ccel": ccel, "lat_term": lat_term, "energy_term": energy_term}


def ccel2_loss(
    ce: Tensor, acc: float, lat: Tensor, energy: Tensor, goal: float, beta: float = 0.5
) -> dict[str, Tensor]:
    """Method 2: ``CCEL(goal) + log(lat)^β + log(energy)^β``. At ``goal ≥ 1`` (the paper's S2-Normal)
    the cross-entropy is left as it is ("目標の正解率が 100% であるため, 分類誤差の値は操作しない")."""
    ccel = torch.as_tensor(ce).mean() if goal >= 1.0 else custom_cross_entropy(ce, acc, goal)
    lat_term, energy_term = log_power(lat, beta).mean(), log_power(energy, beta).mean()
    return {"loss": ccel + lat_term + energy_term, "ccel": ccel, "lat_term": lat_term, "energy_term": energy_term}
