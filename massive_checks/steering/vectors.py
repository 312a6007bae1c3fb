"""Steering vectors: definitions, extraction, cleaning and geometry. Pure functions on pooled
activations (capture.Pooled: per example, the mean block output over a window, [N, D]); the
measures that read them through a model's passes are in measures/steering.py.

Conventions (claims.md section F):
  mean_diff  mean(pos) - mean(neg) over the training examples, unnormalised
  probe      weight direction of an L2-regularised logistic regression (scikit-learn's objective,
             C = 1, solved exactly) on the training examples, in the raw activation space,
             unnormalised
  pca        first principal component of the paired differences pos_i - neg_i (uncentred: centring
             would remove the mean difference itself), signed to point from neg to pos
  cleaned    the chosen dims set to 0, then renormalised to unit norm
  energy share of v in dims S   ||v_S||^2 / ||v||^2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from massive_checks.base.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")  # imported at first use: the spec schema reads this module without torch


PROBE_C = 1.0  # inverse L2 strength (scikit-learn's default), in the raw activation space
PROBE_MAX_NEWTON_STEPS = 100  # ~20 suffice on the bundled models; more means non-finite or degenerate input


@dataclass(frozen=True)
class Vector:
    values: torch.Tensor  # [D] float32 (unit norm when cleaned)
    zeroed: tuple[int, ...]  # dims set to 0 by cleaning (sorted)
    train_accuracy: float  # of the vector as a classifier (see accuracy())
    heldout_accuracy: float
    replicates: torch.Tensor | None = None  # [B, D] refit on resamples of the training examples (None: not resampled)
    units: Any = None  # intervals.Units of those training examples (vectors.py imports no intervals)
    no_interval: str = ""  # why there are no replicates
    correct: dict = field(default_factory=dict)  # split -> [N] bool per example (accuracy's units)


def mean_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """pos [N, D], neg [M, D] -> [D]."""
    return pos.double().mean(dim=0).float() - neg.double().mean(dim=0).float()


def probe(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """x [N, D], y [N] (1 = pos) -> (weight [D], intercept): L2 logistic regression with C = 1 on
    the raw activations (scikit-learn's objective, intercept not penalised), solved to its exact
    optimum by Newton's method in float64.

    Why not an iterative first-order solver: a massive dim (~1e5 against ~1 elsewhere) makes the
    Hessian's condition number ~1e11, and lbfgs then stops wherever its tolerance is met along the
    flat directions. On Gemma 3 270M its probe put 0.00083 of its energy in the massive dim where
    the optimum puts 0.00052, and a 1e-6 perturbation of the inputs moved it to 0.00054: the
    probe's numbers were the solver's noise. The regulariser keeps the Hessian's smallest
    eigenvalue >= 1, so the optimum itself is stable, and Newton reaches it in ~20 steps."""
    theta = logistic_optimum(x, y)
    return theta[:-1].float(), float(theta[-1])


def logistic_optimum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The probe's optimum in float64: [D+1] = (weight [D], intercept)."""
    features = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # [N, D+1]
    sign = y.double() * 2 - 1  # [N] in {-1, +1}
    penalised = torch.ones(features.shape[1], dtype=torch.float64)
    penalised[-1] = 0.0  # the intercept

    def objective(theta: torch.Tensor) -> torch.Tensor:
        margins = sign * (features @ theta)
        return 0.5 * (penalised * theta * theta).sum() + PROBE_C * torch.nn.functional.softplus(-margins).sum()

    theta = torch.zeros(features.shape[1], dtype=torch.float64)
    for _ in range(PROBE_MAX_NEWTON_STEPS):
        wrong = torch.sigmoid(-sign * (features @ theta))  # [N] probability of the wrong label
        gradient = penalised * theta - PROBE_C * features.T @ (sign * wrong)
        hessian = torch.diag(penalised) + PROBE_C * (features.T * (wrong * (1 - wrong))) @ features
        step = torch.linalg.solve(hessian, gradient)
        decrement = float(gradient @ step)  # Newton decrement squared: 2x the predicted decrease
        value = float(objective(theta))
        if decrement <= 1e-10 * max(1.0, abs(value)):
            return theta - step  # in Newton's quadratic region: one more full step squares the error
        theta = theta - _armijo(objective, theta, value, step, decrement) * step
    raise ArithmeticError(
        f"the probe's logistic regression did not converge in {PROBE_MAX_NEWTON_STEPS} "
        f"Newton steps (Newton decrement {decrement:.3g}); are the activations finite?"
    )


def _armijo(objective, theta: torch.Tensor, value: float, step: torch.Tensor, decrement: float) -> float:
    """Backtracking line search from theta (where the objective is `value`): the largest 2^-k
    whose decrease is at least a quarter of the predicted one."""
    size = 1.0
    while size > 1e-12 and float(objective(theta - size * step)) > value - 0.25 * size * decrement:
        size /= 2
    return size


# -- replicates: the vector refit on resamples of its training examples (weights [B, N]: how often
# each example is drawn in each resample), for the intervals of what is computed from it.


def mean_diff_replicates(pos: torch.Tensor, neg: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor) -> torch.Tensor:
    """Exact: mean_diff on each resample. pos [N, D], neg [M, D], w_pos [B, N], w_neg [B, M] ->
    [B, D] (nan in a resample that drew no example of a class)."""
    w_pos, w_neg = w_pos.double(), w_neg.double()
    return (w_pos @ pos.double()) / w_pos.sum(dim=1, keepdim=True) - (w_neg @ neg.double()) / w_neg.sum(dim=1, keepdim=True)


def probe_replicates(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The probe on each resample, to first order: one Newton step from the full-sample optimum
    theta [D+1] with its Hessian H, theta_b = theta - H^-1 sum_i (w_bi - 1) g_i, g_i the gradient
    of example i's loss at theta (the full gradient is 0 there; the penalty is not resampled).
    One solve for all resamples; probe_refits starts from it. x [N, D], y [N], weights [B, N] ->
    weight rows [B, D]."""
    features = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # [N, D+1]
    return _first_order(features, y.double() * 2 - 1, theta, weights.double())[:, :-1]


def probe_refits(
    x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, weights: torch.Tensor, steps: int = 1, chunk: int = 64
) -> torch.Tensor:
    """The probe refit on each resample: Newton's method on the resample's own (count-weighted)
    objective, started from the first-order replicate (probe_replicates), which is already close.
    On SmolLM2's refusal set at block 13 (D = 576 > N = 160), against refits from scratch on 40
    resamples: first-order replicates alone had cos >= 0.935 to them and gave cos(mean_diff, probe)
    a spread (sd) 0.0080 against the refits' 0.0105; one step more reaches cos >= 0.9999 (two:
    >= 0.999998) at ~20 ms per resample. tests/test_vectors.py checks them against refits from
    scratch. x [N, D], y [N], weights [B, N] -> [B, D]."""
    x = x.double()
    features = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # [N, D+1]
    sign = y.double() * 2 - 1  # [N]
    start = _first_order(features, sign, theta, weights.double())  # [B, D+1]
    gram = x @ x.T  # [N, N]
    rows = []
    for i in range(0, len(weights), chunk):
        w, t = weights[i : i + chunk].double(), start[i : i + chunk]  # [b, N], [b, D+1]
        for _ in range(steps):
            t = _newton_step(x, gram, sign, w, t)
        rows.append(t[:, :-1])
    return torch.cat(rows)


def _newton_step(x: torch.Tensor, gram: torch.Tensor, sign: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One Newton step on each resample's count-weighted objective from t [b, D+1] (weights w
    [b, N]; x [N, D], gram = x x^T [N, N]). The Hessian [[I + X^T C X, X^T c], [c^T X, sum c]]
    (C = diag(c), the examples' curvature) is solved blockwise: its D x D block by Woodbury through
    an N x N Cholesky, the intercept by the Schur complement, so a step costs O(N^2 (N + D)) per
    resample, not O(N D^2 + D^3)."""
    wrong = torch.sigmoid(-sign * (t[:, :-1] @ x.T + t[:, -1:]))  # [b, N]: probability of the wrong label
    residual = PROBE_C * w * sign * wrong  # [b, N]
    gradient, gradient_0 = t[:, :-1] - residual @ x, -residual.sum(dim=1)  # [b, D], [b]
    curvature = PROBE_C * w * wrong * (1 - wrong)  # [b, N]
    root = curvature.sqrt()
    factor = torch.linalg.cholesky(torch.eye(len(gram), dtype=gram.dtype) + root[:, :, None] * gram * root[:, None, :])

    def solve_block(v: torch.Tensor) -> torch.Tensor:  # (I + X^T C X)^-1 v, v [b, D, k]
        return v - x.T @ (root[:, :, None] * torch.cholesky_solve(root[:, :, None] * (x @ v), factor))

    coupling = curvature @ x  # [b, D]: X^T c
    solved = solve_block(torch.stack([gradient, coupling], dim=2))  # [b, D, 2]
    step_0 = (gradient_0 - (coupling * solved[..., 0]).sum(dim=1)) / (
        curvature.sum(dim=1) - (coupling * solved[..., 1]).sum(dim=1)
    )  # [b]
    step = solved[..., 0] - solved[..., 1] * step_0[:, None]  # [b, D]
    return t - torch.cat([step, step_0[:, None]], dim=1)


def _first_order(features: torch.Tensor, sign: torch.Tensor, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """probe_replicates' step with the intercept kept: [B, D+1]."""
    wrong = torch.sigmoid(-sign * (features @ theta))  # [N]
    gradients = -PROBE_C * (sign * wrong)[:, None] * features  # [N, D+1]
    penalised = torch.ones(features.shape[1], dtype=torch.float64)
    penalised[-1] = 0.0
    hessian = torch.diag(penalised) + PROBE_C * (features.T * (wrong * (1 - wrong))) @ features
    influence = torch.linalg.solve(hessian, gradients.T).T  # [N, D+1]: H^-1 g_i
    return theta[None, :] - (weights - 1.0) @ influence


def clean_rows(vectors: torch.Tensor, dims) -> torch.Tensor:
    """clean() on each row: [B, D] -> [B, D] unit rows with `dims` zeroed."""
    out = vectors.double().clone()
    out[:, list(dims)] = 0.0
    return out / out.norm(dim=1, keepdim=True)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, D], [B, D] -> [B]."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)


def energy_share_rows(vectors: torch.Tensor, dims) -> torch.Tensor:
    """energy_share() of each row: [B, D] -> [B]."""
    v = vectors.double()
    return v[:, list(dims)].pow(2).sum(dim=1) / v.pow(2).sum(dim=1) if len(dims) else torch.zeros(len(v), dtype=torch.float64)


def pca(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """First principal component of the paired differences pos_i - neg_i (i < min(N, M)), [D]."""
    n = min(len(pos), len(neg))
    diffs = (pos[:n] - neg[:n]).double()  # [n, D]
    component = torch.linalg.svd(diffs, full_matrices=False).Vh[0]
    sign = 1.0 if float(diffs.mean(dim=0) @ component) >= 0 else -1.0
    return (sign * component).float()


def pca_replicates(pos: torch.Tensor, neg: torch.Tensor, w_pairs: torch.Tensor) -> torch.Tensor:
    """Exact: pca on each resample, a refit per resample. pos [N, D], neg [M, D], w_pairs [B, n]
    (n = min(N, M): each paired difference's resampling weight, its pos example's) -> [B, D] unit
    rows. The weighted first right singular vector of the differences is the top eigenvector of
    their [n, n] Gram matrix under the weights: one batched eigh of n x n, not an SVD of n x D."""
    n = min(len(pos), len(neg))
    diffs = (pos[:n] - neg[:n]).double()  # [n, D]
    root = w_pairs[:, :n].double().sqrt()  # [B, n]
    gram = root[:, :, None] * (diffs @ diffs.T)[None] * root[:, None, :]  # [B, n, n]
    top = torch.linalg.eigh(gram).eigenvectors[:, :, -1]  # [B, n]: the largest eigenvalue's
    components = (top * root) @ diffs  # [B, D]
    components = components / components.norm(dim=1, keepdim=True)
    mean = (w_pairs[:, :n].double() @ diffs) / w_pairs[:, :n].double().sum(dim=1, keepdim=True)  # [B, D]
    sign = torch.where((mean * components).sum(dim=1, keepdim=True) >= 0, 1.0, -1.0)
    return sign * components


def clean(vector: torch.Tensor, dims) -> torch.Tensor:
    """Zero `dims`, renormalise to unit norm. [D] -> [D]."""
    out = vector.clone().float()
    out[list(dims)] = 0.0
    norm = float(out.norm())
    if norm == 0.0:
        raise ValueError(f"cleaning dims {sorted(dims)} leaves nothing of the vector")
    return out / norm


def top_dims(acts: torch.Tensor, k: int) -> tuple[int, ...]:
    """The k dims with the largest mean |activation| over examples. acts [N, D]."""
    return tuple(sorted(int(d) for d in acts.abs().mean(dim=0).topk(k).indices))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def energy_share(vector: torch.Tensor, dims) -> float:
    """||v_S||^2 / ||v||^2."""
    v = vector.double()
    return float(v[list(dims)].pow(2).sum() / v.pow(2).sum()) if len(dims) else 0.0


def dominant_dims(vector: torch.Tensor, k: int) -> tuple[int, ...]:
    """The k dims with the largest |v_d|, largest first."""
    return tuple(int(d) for d in vector.abs().topk(k).indices)


def norms(acts: torch.Tensor, without=()) -> torch.Tensor:
    """[N] each example's ||a|| (with `without` dims set to 0). acts [N, D]."""
    a = acts.double().clone()
    a[:, list(without)] = 0.0
    return a.norm(dim=1)


def energy_of_dims(acts: torch.Tensor, dims) -> float:
    """Share of the activations' squared norm in `dims`: sum_i ||a_i,S||^2 / sum_i ||a_i||^2."""
    a = acts.double()
    return float(a[:, list(dims)].pow(2).sum() / a.pow(2).sum()) if len(dims) else 0.0


def correct(x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor, threshold: float) -> torch.Tensor:
    """[N] bool: the example is on the right side (pos when x . direction > threshold)."""
    return ((x.double() @ direction.double()) > threshold) == y.bool()


def accuracy(x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor, threshold: float) -> float:
    """Share of examples on the right side: pos when x . direction > threshold. x [N, D], y [N]."""
    return float(correct(x, y, direction, threshold).double().mean())


def midpoint(x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor) -> float:
    """The threshold halfway between the two classes' mean projections on the direction."""
    projection = x.double() @ direction.double()
    return float((projection[y == 1].mean() + projection[y == 0].mean()) / 2)
