"""The four FBNet search losses against hand-computed values, their goal branches, and finiteness
for every latency/energy value (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.fbnet_losses import additive_loss, ccel1_loss, ccel2_loss, fbnet_loss, log_of_power, log_power, power

E4, E9 = math.exp(4), math.exp(9)  # log = 4 and 9: sqrt gives 2 and 3
P = "power_of_log"  # (log x)^β: the hand values below use it; the default log(x^β) has its own tests


def t(x: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def test_fbnet_loss_is_ce_times_alpha_log_lat_to_beta():
    # FBNet1: 2.0 · 0.5 · log(e^4)^0.6 = 4^0.6 = 2.29739...
    out = fbnet_loss(t(2.0), t(E4), alpha=0.5, beta=0.6, form=P)
    assert out["loss"].item() == pytest.approx(2.2973967, rel=1e-6)
    assert out["lat_term"].item() == pytest.approx(0.5 * 2.2973967, rel=1e-6)


def test_the_default_latency_term_is_the_authors_log_of_lat_to_the_beta():
    # FBNet1 by default: 2.0 · 0.5 · log((e^4)^0.6) = 2.0 · 0.5 · 2.4 = 2.4 (not 4^0.6 = 2.297...)
    assert fbnet_loss(t(2.0), t(E4), alpha=0.5, beta=0.6)["loss"].item() == pytest.approx(2.4, rel=1e-9)
    # against Python's own log of the power (what torch.log(latency ** beta) computes), for costs in µs
    for x, beta in ((6345.0, 0.6), (1.7, 0.4), (2.5e5, 0.5)):
        assert log_of_power(t(x), beta).item() == pytest.approx(math.log(x**beta), rel=1e-12)
    # method 1 at a reached goal: 1 · (0.5 · 4 + 0.5 · 9); method 2 below it: 0.8 + 2 + 4.5
    assert ccel1_loss(t(2.0), 0.6, t(E4), t(E9), goal=0.65, beta=0.5)["loss"].item() == pytest.approx(6.5)
    assert ccel2_loss(t(2.0), 0.39, t(E4), t(E9), goal=0.65, beta=0.5)["loss"].item() == pytest.approx(7.3)


def test_log_of_power_gradient_does_not_depend_on_the_unit():
    # d/dx β log(k x) = β / x for any unit factor k; (log kx)^β's gradient changes with k
    grads = {}
    for form in ("log_of_power", "power_of_log"):
        for k in (1.0, 1000.0):
            x = t(50.0, grad=True)
            fbnet_loss(t(1.0), x * k, alpha=1.0, beta=0.5, form=form)["loss"].backward()
            grads[form, k] = x.grad.item()
    assert grads["log_of_power", 1.0] == pytest.approx(0.5 / 50) == grads["log_of_power", 1000.0]
    assert grads["power_of_log", 1.0] == pytest.approx(0.5 / 50 / math.sqrt(math.log(50)))
    assert grads["power_of_log", 1000.0] == pytest.approx(0.5 / 50 / math.sqrt(math.log(50_000)))


def test_fbnet_loss_per_sample_pairs_each_ce_with_its_own_latency():
    # samples (CE 1, log LAT 1) and (CE 2, log LAT 16), α 1, β 0.5: mean(1·1, 2·4) = 4.5, not 1.5 · 2.5
    out = fbnet_loss(torch.tensor([1.0, 2.0]), torch.tensor([math.e, math.exp(16)]), alpha=1.0, beta=0.5, form=P)
    assert out["loss"].item() == pytest.approx(4.5, rel=1e-6)


def test_additive_loss_of_hanna():
    # FBNet3: 1.2 + 0.5·16^0.5 + 1.5·9^0.5 = 1.2 + 2 + 4.5
    out = additive_loss(t(1.2), t(16.0), t(9.0), alpha=0.5, beta=0.5, gamma=1.5, delta=0.5)
    assert out["loss"].item() == pytest.approx(7.7)
    assert (out["lat_term"].item(), out["energy_term"].item()) == pytest.approx((2.0, 4.5))


def test_ccel1_below_the_goal():
    # goal 0.65 → threshold 0.55; rate = 0.3 / 0.55; CCEL = 2 − 2·rate + 1 = 1.90909; × (2 + 3)
    out = ccel1_loss(t(2.0), 0.3, t(E4), t(E9), goal=0.65, beta=0.5, form=P)
    assert out["ccel"].item() == pytest.approx(2 - 2 * 0.3 / 0.55 + 1)
    assert out["loss"].item() == pytest.approx((2 - 2 * 0.3 / 0.55 + 1) * 5)


@pytest.mark.parametrize("acc", [0.55, 0.6, 1.0])
def test_ccel1_goal_reached_leaves_one_times_the_costs_and_no_ce_gradient(acc):
    ce = t(2.0, grad=True)
    lat = t(E4, grad=True)
    out = ccel1_loss(ce, acc, lat, t(E9), goal=0.65, beta=0.5, form=P)
    assert out["ccel"].item() == 1.0
    assert out["loss"].item() == pytest.approx(5.0)
    out["loss"].backward()
    assert ce.grad.item() == 0.0  # the classification term is switched off (CE − CE, as the authors' code)
    # d/dlat sqrt(log lat) = 1 / (2 lat sqrt(log lat)) = 1 / (4 e^4)
    assert lat.grad.item() == pytest.approx(1 / (4 * E4))


def test_ccel2_below_the_goal():
    # rate = 0.39 / 0.65 = 0.6; CCEL = 2 − 1.2 = 0.8 (no +1); + 2 + 3
    out = ccel2_loss(t(2.0), 0.39, t(E4), t(E9), goal=0.65, beta=0.5, form=P)
    assert out["ccel"].item() == pytest.approx(0.8)
    assert out["loss"].item() == pytest.approx(5.8)


def test_ccel2_goal_reached_is_the_costs_alone():
    out = ccel2_loss(t(2.0), 0.65, t(E4), t(E9), goal=0.65, beta=0.5, form=P)
    assert out["ccel"].item() == 0.0 and out["loss"].item() == pytest.approx(5.0)


def test_ccel2_at_goal_one_keeps_the_plain_cross_entropy():
    # S2-Normal (§4.2): at a 100 % goal the CE is not manipulated, although acc / goal = 0.5 here
    out = ccel2_loss(t(2.0), 0.5, t(E4), t(E9), goal=1.0, beta=0.5, form=P)
    assert out["ccel"].item() == 2.0 and out["loss"].item() == pytest.approx(7.0)


def test_ccel1_at_goal_one_compares_with_ninety_percent():
    below = ccel1_loss(t(2.0), 0.45, t(E4), t(E9), goal=1.0)
    assert below["ccel"].item() == pytest.approx(2 - 2 * 0.45 / 0.9 + 1)
    assert ccel1_loss(t(2.0), 0.9, t(E4), t(E9), goal=1.0)["ccel"].item() == 1.0


def test_below_one_unit_the_log_terms_are_clamped_to_the_floor():
    # (log 0.5)^0.5 is not real; both readings clamp x to exp(1e-3): value from the floor, zero gradient
    for f, floor in ((log_power, math.sqrt(1e-3)), (log_of_power, 0.5 * 1e-3)):
        x = t(0.5, grad=True)
        y = f(x, 0.5)
        y.backward()
        assert y.item() == pytest.approx(floor, rel=1e-9) and x.grad.item() == 0.0


costs = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)
exponents = st.floats(min_value=0.05, max_value=2.0)


@settings(max_examples=60, deadline=None)
@given(lat=costs, energy=costs, beta=exponents, acc=st.floats(0.0, 1.0), goal=st.floats(0.2, 1.0),
       form=st.sampled_from(["log_of_power", "power_of_log"]))  # fmt: skip
def test_every_loss_and_its_gradient_are_finite_for_any_costs(lat, energy, beta, acc, goal, form):
    for name in ("fbnet", "additive", "ccel1", "ccel2"):
        ce = t(1.5, grad=True)
        lt, en = t(lat, grad=True), t(energy, grad=True)
        if name == "fbnet":
            out = fbnet_loss(ce, lt, 0.5, beta, form=form)
        elif name == "additive":
            out = additive_loss(ce, lt, en, 0.5, beta, 1.5, beta)
        elif name == "ccel1":
            out = ccel1_loss(ce, acc, lt, en, max(goal, 0.15), beta, form=form)
        else:
            out = ccel2_loss(ce, acc, lt, en, goal, beta, form=form)
        out["loss"].backward()
        assert math.isfinite(out["loss"].item()), (name, lat, energy, beta)
        for x in (ce, lt, en):
            assert x.grad is None or math.isfinite(x.grad.item()), (name, lat, energy, beta)


@given(x=costs, beta=exponents)
def test_log_power_and_power_are_finite_with_finite_gradient(x, beta):
    for f in (log_power, log_of_power, power):
        v = t(x, grad=True)
        y = f(v, beta)
        y.backward()
        assert math.isfinite(y.item()) and y.item() >= 0 and math.isfinite(v.grad.item())
