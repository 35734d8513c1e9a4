"""Binary decomposition of weight rows into ±1 bases with real coefficients (Kamiya et al., ICCVW 2017).

Every output channel's weight row w ∈ R^D (D = in_channels/groups · kh · kw for a convolution, in_features
for a linear layer) is approximated by k binary bases with real coefficients of its own::

    w ≈ Σ_{j=1..k} c_j m_j,    m_j ∈ {−1, +1}^D,  c_j ∈ R

so the layer's inner products become k binary inner products (AND + popcount on packed bits, see
:mod:`models.bitserial`) and k real multiply–adds per output.

Two algorithms (both vectorised over the N rows of a layer):

- **greedy**: on the residual r (initially w), m_j = sign(r) (sign 0 → +1), c_j = r·m_j / D = mean|r|,
  r ← r − c_j m_j. Each step lowers ‖r‖² by D·c_j², so the error never increases with k.
- **exhaustive**: alternating least squares. With M fixed, c is the least-squares solution of
  M^T c ≈ w; with c fixed, each element d of the row picks the sign vector m_{·d} ∈ {±1}^k whose value
  m_{·d}·c is nearest to w_d — an exact search over all 2^k candidates per element (done with a sorted
  candidate list and a binary search, so memory stays O(N·2^k)). Bases are added one at a time (the new
  one from the greedy step on the residual, then ALS over all of them), so the error for k is never
  above the error for k − 1 nor above greedy's; ``restarts`` extra runs start from random signs and
  each row keeps its best run.

  **Convergence.** Each row alternates until it reaches a fixed point: no element's sign vector changes
  (and so, c being the least-squares solution of the same M, no coefficient changes); rows that reached
  theirs stop while the others go on. ``iterations`` is only a cap: rows still changing when it is hit are
  counted in :attr:`BinaryDecomposition.capped_rows` and a warning says so. A fixed point is a local
  optimum of ‖w − M^T c‖ (no single step of either kind improves it), not always the global one over all
  M: on small D, where every M can be enumerated, single runs can stop in a local optimum; ``restarts``
  (random starts, best per row) is what closes that gap (tested against brute force).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Method = Literal["greedy", "exhaustive"]
MAX_EXHAUSTIVE_BASES = 16


@dataclass
class BinaryDecomposition:
    """``bases`` int8 (N, k, D) of ±1 and ``coefficients`` (N, k): row n ≈ Σ_j coefficients[n, j] bases[n, j]."""

    bases: Tensor
    coefficients: Tensor
    iterations: int = 0
    """ALS rounds of the longest-running row (exhaustive; 0 for greedy)."""
    capped_rows: int = 0
    """Rows whose signs still changed when the ``iterations`` cap was hit in any run (0: all converged)."""

    def reconstruct(self) -> Tensor:
        """The approximated weight rows (N, D), in the coefficients' dtype."""
        return torch.einsum("nk,nkd->nd", self.coefficients, self.bases.to(self.coefficients.dtype))


def relative_error(weight: Tensor, decomposition: BinaryDecomposition) -> float:
    """‖W − W̃‖_F / ‖W‖_F over the whole layer (rows (N, D))."""
    weight = weight.reshape(weight.shape[0], -1).double()
    diff = weight - decomposition.reconstruct().double()
    return float(diff.norm() / weight.norm().clamp_min(1e-30))


def _rows(weight: Tensor) -> Tensor:
    if weight.dim() < 2:
        raise ValueError(
            f"need a weight with an output dimension and at least one input dimension, got {tuple(weight.shape)}"
        )
    return weight.detach().reshape(weight.shape[0], -1).double()


def _sign(x: Tensor) -> Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def decompose_greedy(weight: Tensor, k: int) -> BinaryDecomposition:
    """Greedy decomposition of each row of ``weight`` (N, ...) into ``k`` bases (see the module docstring)."""
    if k < 1:
        raise ValueError(f"the number of bases k must be >= 1, got {k}")
    w = _rows(weight)
    residual = w.clone()
    bases, coefficients = [], []
    for _ in range(k):
        m = _sign(residual)
        c = (residual * m).mean(dim=1)
        residual -= c[:, None] * m
        bases.append(m)
        coefficients.append(c)
    return BinaryDecomposition(
        torch.stack(bases, dim=1).to(torch.int8), torch.stack(coefficients, dim=1).to(weight.dtype)
    )


def _least_squares_coefficients(w: Tensor, m: Tensor) -> Tensor:
    """c (N, k) minimising ‖w_n − m_n^T c_n‖ for every row (m (N, k, D) float64); minimum-norm when singular."""
    gram = m @ m.transpose(1, 2)
    rhs = (m @ w.unsqueeze(-1)).squeeze(-1)
    return torch.linalg.lstsq(gram, rhs.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)


def _best_signs(w: Tensor, c: Tensor) -> Tensor:
    """For every element w[n, d], the sign vector s ∈ {±1}^k minimising (w[n, d] − s·c[n])²; (N, k, D)."""
    k = c.shape[1]
    codes = torch.arange(2**k)
    signs = ((codes[:, None] >> torch.arange(k)) & 1).double() * 2 - 1  # (2^k, k)
    values = c @ signs.T  # (N, 2^k)
    sorted_values, order = values.sort(dim=1)
    pos = torch.searchsorted(sorted_values, w.contiguous()).clamp(1, 2**k - 1)
    left, right = sorted_values.gather(1, pos - 1), sorted_values.gather(1, pos)
    nearest = torch.where((w - left).abs() <= (right - w).abs(), pos - 1, pos)
    chosen = order.gather(1, nearest)  # (N, D) candidate index
    return signs[chosen].transpose(1, 2)


def _als(w: Tensor, m: Tensor, iterations: int) -> tuple[Tensor, Tensor, int, Tensor]:
    """Alternate per row until its signs stop changing (at most ``iterations`` rounds).

    Returns ``(m, c, rounds, capped)``: ``rounds`` of the longest-running row, ``capped`` a (N,) bool mask
    of the rows still changing at the cap."""
    m = m.clone()
    c = _least_squares_coefficients(w, m)
    active = torch.arange(w.shape[0])
    rounds = 0
    for _ in range(iterations):
        if not len(active):
            break
        rounds += 1
        m_new = _best_signs(w[active], c[active])
        changed = (m_new != m[active]).flatten(1).any(dim=1)
        active = active[changed]
        if len(active):
            m[active] = m_new[changed]
            c[active] = _least_squares_coefficients(w[active], m[active])
    capped = torch.zeros(w.shape[0], dtype=torch.bool)
    capped[active] = True
    return m, c, rounds, capped


def _row_errors(w: Tensor, m: Tensor, c: Tensor) -> Tensor:
    return (w - torch.einsum("nk,nkd->nd", c, m)).pow(2).sum(dim=1)


def decompose_exhaustive(
    weight: Tensor, k: int, iterations: int = 500, restarts: int = 2, seed: int = 0
) -> BinaryDecomposition:
    """Alternating least squares with an exact per-element sign search, run to convergence (see the module
    docstring).

    Args:
        weight: (N, ...) weights; each row is decomposed on its own.
        k: bases per row (at most 16: the sign search enumerates 2^k candidates).
        iterations: cap on the ALS rounds after each added basis and in each restart; every row stops at its
            fixed point before that, and rows that hit the cap are reported (``capped_rows``, a warning).
        restarts: extra runs from random signs; each row keeps the run with the lowest error.
        seed: seed of the random restarts.
    """
    if not 1 <= k <= MAX_EXHAUSTIVE_BASES:
        raise ValueError(f"exhaustive decomposition needs 1 <= k <= {MAX_EXHAUSTIVE_BASES}, got {k}")
    if iterations < 0 or restarts < 0:
        raise ValueError(f"iterations and restarts must be >= 0, got {iterations}, {restarts}")
    w = _rows(weight)
    n, d = w.shape
    m = torch.empty(n, 0, d, dtype=torch.float64)
    capped = torch.zeros(n, dtype=torch.bool)
    rounds = 0
    for _ in range(k):
        c = _least_squares_coefficients(w, m) if m.shape[1] else torch.zeros(n, 0, dtype=torch.float64)
        residual = w - torch.einsum("nk,nkd->nd", c, m)
        m, c, used, hit = _als(w, torch.cat([m, _sign(residual).unsqueeze(1)], dim=1), iterations)
        rounds, capped = max(rounds, used), capped | hit
    best_err = _row_errors(w, m, c)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        start = torch.randint(0, 2, (n, k, d), generator=generator).double() * 2 - 1
        m_r, c_r, used, hit = _als(w, start, iterations)
        rounds = max(rounds, used)
        err = _row_errors(w, m_r, c_r)
        better = err < best_err
        m[better], c[better], best_err = m_r[better], c_r[better], torch.minimum(err, best_err)
        capped[better] = hit[better]
    if capped.any():
        warnings.warn(
            f"exhaustive binary decomposition: {int(capped.sum())} of {n} rows (k={k}, D={d}) still changed their "
            f"signs after the cap of {iterations} ALS rounds; raise the cap (decomposition_iterations)",
            stacklevel=2,
        )
    return BinaryDecomposition(m.to(torch.int8), c.to(weight.dtype), rounds, int(capped.sum()))


def decompose(weight: Tensor, k: int, method: Method = "exhaustive", **kwargs) -> BinaryDecomposition:
    """``decompose_greedy`` or ``decompose_exhaustive`` (``kwargs``: iterations, restarts, seed)."""
    if method == "greedy":
        return decompose_greedy(weight, k)
    if method == "exhaustive":
        return decompose_exhaustive(weight, k, **kwargs)
    raise ValueError(f"decomposition method must be 'greedy' or 'exhaustive', got {method!r}")
