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

The cost term ``log(x)^β`` (``log_e(lat(A))^β`` in eqs. 1, 3, 4) has two readings, chosen by
``latency_term`` (it applies to the latency and the energy term alike):

- ``log_of_power`` (default): ``log(x ** β)`` = ``β · log x``, what FBNet's public PyTorch port and the
  first author's code compute (``torch.log(latency ** self.beta)``);
- ``power_of_log``: ``(log x) ** β``, the formula read literally.

Under ``log_of_power`` the cost term's gradient ``β · dx / x`` is the same in any unit (only relative
changes count; the unit adds the constant ``β · log(unit)``, which still scales the CE's gradient in
the multiplicative losses ``fbnet`` and ``ccel1``). Under ``power_of_log`` the gradient
``β (log x)^(β−1) dx / x`` depends on the unit too.

Finite everywhere: ``(log x)^β`` with a fractional β is NaN for x < 1 (log < 0) and has an infinite
slope at x = 1; ``log(x^β)`` is negative there (the authors' code sets a negative term to 0).
:func:`log_power` and :func:`log_of_power` clamp x to ``≥ exp(LOG_FLOOR)`` first, so log(x) ≥ 1e-3 and
both the value and its gradient are finite (the gradient is zero below the floor); :func:`power`
clamps x to ``≥ POW_FLOOR`` likewise. Choose loss units in which every network's cost exceeds 1
(``FBNetSearch`` checks this) so the clamps never act in practice.

Each function returns its named parts: ``loss`` and ``ce`` / ``ccel``, ``lat_term``, ``energy_term``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

LOG_FLOOR = 1e-3
POW_FLOOR = 1e-6
LatencyTerm = Literal["log_of_power", "power_of_log"]
LATENCY_TERMS = ("log_of_power", "power_of_log")


def log_power(x: Tensor, beta: float) -> Tensor:
    """``(log x)^β`` (``power_of_log``) with x clamped to ``≥ exp(LOG_FLOOR)``: finite value and gradient
    for every x ≥ 0."""
    return torch.log(torch.as_tensor(x).clamp_min(math.exp(LOG_FLOOR))).pow(beta)


def log_of_power(x: Tensor, beta: float) -> Tensor:
    """``log(x^β)`` = ``β · log x`` (``log_of_power``, the authors' code) with x clamped as in :func:`log_power`."""
    return beta * torch.log(torch.as_tensor(x).clamp_min(math.exp(LOG_FLOOR)))


def cost_log_term(x: Tensor, beta: float, form: LatencyTerm = "log_of_power") -> Tensor:
    """The cost term of the log losses in the reading ``form`` (module docstring)."""
    if form == "log_of_power":
        return log_of_power(x, beta)
    if form == "power_of_log":
        return log_power(x, beta)
    raise ValueError(f"latency_term must be one of {LATENCY_TERMS}, got {form!r}")


def power(x: Tensor, beta: float) -> Tensor:
    """``x^β`` with x clamped to ``≥ POW_FLOOR``: finite value and gradient for every x ≥ 0."""
    return torch.as_tensor(x).clamp_min(POW_FLOOR).pow(beta)


def fbnet_loss(
    ce: Tensor, lat: Tensor, alpha: float = 0.5, beta: float = 0.6, form: LatencyTerm = "log_of_power"
) -> dict[str, Tensor]:
    """FBNet: ``mean(CE · α · log(LAT)^β)`` (per sample when ``ce`` and ``lat`` are ``(B,)``)."""
    lat_term = alpha * cost_log_term(lat, beta, form)
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
    """CCEL before any offset: 0 once ``acc ≥ goal`` (zero gradient), else ``CE − (acc / goal)·CE``."""
    if goal <= 0:
        raise ValueError(f"the goal accuracy must be > 0, got {goal}")
    ce = torch.as_tensor(ce).mean()
    if acc >= goal:
        # ``CE − CE`` as the authors' code (``torch.sub(ce, ce)``): 0 with the graph kept, so every
        # parameter behind the CE gets an exactly zero gradient (not none)
        return ce - ce
    return ce - (acc / goal) * ce


def ccel1_loss(
    ce: Tensor,
    acc: float,
    lat: Tensor,
    energy: Tensor,
    goal: float,
    beta: float = 0.5,
    margin: float = 0.1,
    form: LatencyTerm = "log_of_power",
) -> dict[str, Tensor]:
    """Method 1: ``(CCEL(goal − margin) + 1) · (log(lat)^β + log(energy)^β)``."""
    ccel = custom_cross_entropy(ce, acc, goal - margin) + 1
    lat_term, energy_term = cost_log_term(lat, beta, form).mean(), cost_log_term(energy, beta, form).mean()
    return {"loss": ccel * (lat_term + energy_term), "ccel": ccel, "lat_term": lat_term, "energy_term": energy_term}


def ccel2_loss(
    ce: Tensor,
    acc: float,
    lat: Tensor,
    energy: Tensor,
    goal: float,
    beta: float = 0.5,
    form: LatencyTerm = "log_of_power",
) -> dict[str, Tensor]:
    """Method 2: ``CCEL(goal) + log(lat)^β + log(energy)^β``. At ``goal ≥ 1`` (the paper's S2-Normal)
    the cross-entropy is left as it is ("目標の正解率が 100% であるため, 分類誤差の値は操作しない")."""
    ccel = torch.as_tensor(ce).mean() if goal >= 1.0 else custom_cross_entropy(ce, acc, goal)
    lat_term, energy_term = cost_log_term(lat, beta, form).mean(), cost_log_term(energy, beta, form).mean()
    return {"loss": ccel + lat_term + energy_term, "ccel": ccel, "lat_term": lat_term, "energy_term": energy_term}
