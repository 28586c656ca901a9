"""Top singular values of every weight matrix of a model, fast.

:func:`top_singular_values` runs block Lanczos (a block Krylov subspace of ``AᵀA``, or of
``AAᵀ`` for the top value of a wide matrix, with full reorthogonalisation and Rayleigh–Ritz) on
many same-shape matrices at once. Each Ritz value comes with its residual ``‖Aᵀu − σv‖``
(``Av = σu`` holds exactly by construction; the mirror image on the ``AAᵀ`` side), and
``residual / sqrt(2)`` bounds the distance from the estimate to a true singular value.
Iteration stops when the top-k Ritz values stagnate (their steps shrink geometrically, with the
remaining movement below ``tol/4``; ``tol/10`` for the top value alone) or when the residual
bound itself is below ``tol * sigma``. Ritz values never exceed the true singular values
(interlacing), so the estimates approach them from below.

Warm start: pass the right singular vectors of the previous checkpoint (``SVDResult.v``); a
:class:`SpectralCache` does that per layer name.

:func:`model_spectrum` applies it to a model or a ``state_dict``: every tensor of rank >= 2,
conv kernels ``(out, in, k, k)`` seen as ``(out, in*k*k)``; same-shape matrices batched.
Non-finite weights raise :class:`NonFiniteWeightError` naming the layer.

Example:
    >>> import torch
    >>> a = torch.randn(300, 500, generator=torch.Generator().manual_seed(0))
    >>> res = top_singular_values(a, k=2)
    >>> exact = torch.linalg.svdvals(a)[:2]
    >>> bool(((res.values - exact).abs() / exact).max() < 1e-3)
    True
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = [
    "LayerSpectrum",
    "NonFiniteWeightError",
    "SVDResult",
    "SpectralCache",
    "as_matrix",
    "model_spectrum",
    "top_singular_values",
    "weight_matrices",
]


class NonFiniteWeightError(ValueError):
    """A weight matrix holds NaN or inf; the message names it."""


@dataclass
class SVDResult:
    """Top-k singular values of one matrix (or a batch: leading dimension)."""

    values: torch.Tensor  # (..., k), descending
    v: torch.Tensor  # (..., n, k) right singular vectors (of the matrix as given)
    residual: torch.Tensor  # (..., k) ‖Aᵀu − σv‖ with Av = σu
    iterations: int
    exact: bool = False
    block: int = 0  # Krylov block size used (0: full SVD; the last phase's when there are two)
    #: (block size, Krylov steps) per phase of the top-value solver: ``((2, 30),)``, or with
    #: ``precision="mixed"`` ``((4, 19), (2, 7))`` (bfloat16 block of 4, then float32 block of 2)
    phases: tuple[tuple[int, int], ...] = ()

    @property
    def error_bound(self) -> torch.Tensor:
        """A true singular value lies within this distance of each estimate."""
        return self.residual / math.sqrt(2.0)


def _orth(x: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(x)
    return q


def _project_out(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    for _ in range(2):  # classical Gram–Schmidt against the basis, twice for stability
        x = x - q @ (q.transpose(-1, -2) @ x)
    return x


def _next_block(q: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Orthonormal block spanning ``z`` minus its part in span(q). Columns that vanish (the
    Krylov space became invariant, e.g. a low-rank matrix) are replaced by random directions,
    so the basis stays orthonormal."""
    x = _project_out(q, z)
    lost = x.norm(dim=-2) <= 1e-4 * z.norm(dim=-2).clamp_min(torch.finfo(z.dtype).tiny)
    if bool(lost.any()):
        fresh = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = torch.where(lost[..., None, :], _project_out(q, fresh), x)
    norms = x.norm(dim=-2)
    x, r = torch.linalg.qr(x)
    if bool((r.diagonal(dim1=-2, dim2=-1).abs() < 1e-3 * norms).any()):
        # nearly dependent columns: QR invents directions that may lie inside span(q)
        x = _orth(_project_out(q, x))
    return x


@torch.no_grad()
def top_singular_values(
    a: torch.Tensor,
    k: int = 1,
    *,
    tol: float = 1e-4,
    max_iter: int = 60,
    block: int | None = None,
    v0: torch.Tensor | None = None,
    exact: bool = False,
    precision: str = "float32",
    generator: torch.Generator | None = None,
) -> SVDResult:
    """The ``k`` largest singular values of ``a`` (shape ``(m, n)`` or a batch ``(b, m, n)``).

    Args:
        a: matrix or batch of same-shape matrices (float32/float64; other dtypes are cast).
        k: how many values.
        tol: relative tolerance on the values (see the module docstring for the stop rule).
        max_iter: most Krylov steps (each costs one product with ``A`` and one with ``Aᵀ``; with
            ``precision="mixed"``, per phase).
        block: Krylov block size (default 2 for ``k = 1``, else ``k + 4``). Each step is one
            product with ``a`` and one with ``aᵀ`` per block vector (with the CPU BLAS measured
            in benchmarks/spectral.py a block of 2 costs as much as two matrix–vector
            products). A single vector (``block=1``) needs about half the products on a
            well-separated top value, but it can settle on the second one: a start with little
            of the top direction converges to the second value with a residual bound that meets
            ``tol`` (the bound covers the distance to *a* singular value, not to the top one),
            as often as about ``tol`` / (relative gap of the top two) when the top two stand
            apart from the rest, and it dwells near the second for tens of steps when the top
            is crowded (Gaussian matrices: 0.1-0.5 % apart). A block of 2 makes both far rarer,
            which is why it is the default.
        v0: warm start, right singular vectors ``(…, n, j)`` from an earlier checkpoint.
        exact: full SVD (``torch.linalg.svd``) instead: for checks, slow on large matrices.
        precision: ``"float32"`` (default) or ``"mixed"``: build the Krylov space with a
            bfloat16 copy of ``a``, then refine in float32 from the bfloat16 Ritz vectors, so
            the tolerance still applies to ``a`` itself (for ``k = 1``: a block of 4 in
            bfloat16 to ``max(tol, 1e-3)``, then the float32 block of 2). It pays off only where
            bfloat16 products are much cheaper than float32 ones and the matrix is large:
            benchmarks/spectral.py measures it per shape (docs/results-spectral.md).
        generator: random start vectors (seeded for repeatable results).

    Returns:
        :class:`SVDResult` with values, right vectors, residuals and the iterations used.
    """
    if a.ndim not in (2, 3):
        raise ValueError(f"expected a matrix or a batch of matrices, got shape {tuple(a.shape)}")
    if not a.is_floating_point() or a.dtype in (torch.float16, torch.bfloat16):
        a = a.float()
    squeeze = a.ndim == 2
    batch = a.unsqueeze(0) if squeeze else a
    _, m, n = batch.shape
    kk = min(k, m, n)
    if kk < 1:
        raise ValueError(f"k must be >= 1 and the matrix non-empty, got k={k}, shape {(m, n)}")
    if precision not in ("float32", "mixed"):
        raise ValueError(f"precision must be 'float32' or 'mixed', got {precision!r}")
    default_block = 2 if kk == 1 else kk + 4
    blk = block or default_block
    warm = v0 if v0 is None or not squeeze else v0.unsqueeze(0)
    if exact or min(m, n) <= max(2 * blk, 16):
        res = _exact(batch, kk)
    elif kk == 1:
        mixed = precision == "mixed"
        res = _top_one(
            batch, tol=tol, max_iter=max_iter, block=block, v0=warm, generator=generator, mixed=mixed
        )
    else:
        if precision == "mixed":
            rough = _block_lanczos(
                batch,
                kk,
                tol=tol,
                max_iter=max_iter,
                block=blk,
                v0=warm,
                generator=generator,
                a_mm=batch.to(torch.bfloat16),
                keep=blk,
            )
            res = _block_lanczos(
                batch, kk, tol=tol, max_iter=max_iter, block=blk, v0=rough.v, generator=generator
            )
            res.iterations += rough.iterations
        else:
            res = _block_lanczos(
                batch, kk, tol=tol, max_iter=max_iter, block=blk, v0=warm, generator=generator
            )
    if squeeze:
        res = SVDResult(
            res.values[0], res.v[0], res.residual[0], res.iterations, res.exact, res.block, res.phases
        )
    return res


def _exact(a: torch.Tensor, k: int) -> SVDResult:
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    v = vh.transpose(-1, -2)[..., :k]
    resid = (a.transpose(-1, -2) @ u[..., :k] - v * s[..., None, :k]).norm(dim=-2)
    return SVDResult(s[..., :k].clone(), v, resid, 0, exact=True)


_CHECK_EVERY = 0  # 0: by size (see _block_lanczos_rows); tests and profiling may set it


def _top_eigh(lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top eigenvalue (clamped at 0) and eigenvector of each symmetric matrix ``(bsz, c, c)``
    given by its lower triangle, in float64: LAPACK's dsyevr for the top pair only (half the
    time of a full ``numpy.linalg.eigh`` at c = 44)."""
    from scipy.linalg import lapack

    bsz, c, _ = lower.shape
    theta, vec = np.zeros(bsz), np.zeros((bsz, c))
    for i in range(bsz):
        h = np.asarray(lower[i], dtype=np.float64)
        w, z, found, _, info = lapack.dsyevr(h, compute_v=1, range="I", il=c, iu=c, lower=1)
        if info != 0 or found != 1:  # LAPACK declined: the full solver
            ev, vecs = np.linalg.eigh(h, UPLO="L")
            w, z = ev[-1:], vecs[:, -1:]
        theta[i], vec[i] = max(float(w[0]), 0.0), z[:, 0]
    return theta, vec


#: ``precision="mixed"``: the bfloat16 phase stops at ``max(tol, MIXED_ROUGH_TOL)``
MIXED_ROUGH_TOL = 1e-3


def _top_one(
    a: torch.Tensor | list[torch.Tensor],
    *,
    tol: float,
    max_iter: int,
    block: int | None,
    v0: torch.Tensor | None,
    generator: torch.Generator | None,
    mixed: bool = False,
) -> SVDResult:
    """Top singular value of each matrix of ``a`` by block Lanczos (``block``, default 2; see
    :func:`top_singular_values`).

    ``mixed`` (``precision="mixed"``): first a block-4 Krylov space built from a bfloat16 copy
    of the matrices, to ``max(tol, MIXED_ROUGH_TOL)``, then the float32 block of 2 from its top Ritz
    vector (and a random one): the bfloat16 products (half the bytes to read) do most of the
    steps, and the tolerance still applies to ``a`` itself. Each phase may take ``max_iter``.
    """
    rows = functools.partial(_block_lanczos_rows, tol=tol, generator=generator)
    phases: list[tuple[int, int]] = []
    start = v0
    if mixed:
        low = a.to(torch.bfloat16) if isinstance(a, torch.Tensor) else torch.stack(a).to(torch.bfloat16)
        rough = rows(
            a, tol=max(tol, MIXED_ROUGH_TOL), max_iter=max_iter, block=block or 4, v0=start, a_mm=low
        )
        phases.append((rough.block, rough.iterations))
        start = rough.v
    res = rows(a, max_iter=max_iter, block=block or 2, v0=start)
    phases.append((res.block, res.iterations))
    res.iterations = sum(steps for _, steps in phases)
    res.phases = tuple(phases)
    return res


def _block_lanczos_rows(
    a: torch.Tensor | list[torch.Tensor],
    *,
    tol: float,
    max_iter: int,
    block: int,
    v0: torch.Tensor | None,
    generator: torch.Generator | None,
    a_mm: torch.Tensor | None = None,
) -> SVDResult:
    """Top singular value of each matrix of ``a`` ``(bsz, m, n)`` by block Lanczos, lean.

    The algorithm of :func:`_block_lanczos_core` for ``k = 1`` (block Krylov space of the Gram
    matrix, two classical Gram–Schmidt passes a step, Rayleigh–Ritz, the same stop rule: the
    residual bound below ``tol·σ`` or the Ritz value stagnating geometrically below ``tol/4``),
    laid out for few dispatches a step: basis vectors as rows, on the Gram matrix of the
    smaller side (``AAᵀ`` in R^m when ``m < n``), the products matrix by matrix in the row-major
    forms the BLAS does fastest (a batched product with a transposed operand is not), the
    projected matrix filled in place and solved on the host every step or every other step
    (small matrices, where the eigensolve costs about as much as the step), and converged
    matrices leaving the batch. A block (2 by default) rather than one vector: with the top two
    values close (0.1-0.5 % apart in a Gaussian matrix) a single vector dwells near the second
    one for tens of steps, with a residual small enough to stop there.
    """
    # ``a`` may be a list of same-shape matrices (model_spectrum: no stacked copy; the
    # products are taken matrix by matrix anyway)
    mm = a if a_mm is None else a_mm
    every_mat = list(mm.unbind(0)) if isinstance(mm, torch.Tensor) else list(mm)
    bsz = len(every_mat)
    m, n = every_mat[0].shape
    dt = a.dtype if isinstance(a, torch.Tensor) else a[0].dtype  # the products may be bfloat16
    dev = every_mat[0].device
    left = m < n
    d = min(m, n)
    b = block
    steps = max(1, min(max_iter, d // b))
    cast = a_mm is not None and a_mm.dtype != dt
    tiny = float(torch.finfo(dt).tiny)
    mats = list(every_mat)

    def apply(i: int, v: torch.Tensor) -> torch.Tensor:
        """``C v`` for the rows ``v`` (b, d) of matrix ``i``, as rows."""
        mat = mats[i]
        vv = v.to(mat.dtype) if cast else v
        if left:  # A Aᵀ: yᵀ = vA (b, n), then (A y)ᵀ
            z = (mat @ (vv @ mat).T).T
        else:  # AᵀA: y = A vᵀ (m, b), then yᵀA (b, n)
            z = (mat @ vv.T).T @ mat
        return z.to(dt) if cast else z

    def orth_rows(x: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
        for _ in range(2):
            x = x - (x @ qs.mT) @ qs
        return x

    size = (steps + 1) * b
    basis = torch.zeros(bsz, size, d, dtype=dt, device=dev)
    # the projected Gram matrix, lower triangle: row block j holds the coefficients of C V_j
    # on V_0 … V_j, and the next row block the coupling R_j of V_{j+1} (for the residual)
    proj = torch.zeros(bsz, size, size, dtype=dt, device=dev)
    start = torch.randn(bsz, b, d, generator=generator, dtype=dt).to(dev)
    if v0 is not None:
        if v0.shape[:-1] != (bsz, n):
            raise ValueError(f"warm start v0 has shape {tuple(v0.shape)}; expected (…, {n}, j)")
        j0 = min(v0.shape[-1], b)
        w0 = v0[..., :j0].to(dev, dt).mT  # (bsz, j0, n)
        if left:  # the image of a right vector starts the left side
            w0 = torch.stack([((w0[i].to(mats[i].dtype)) @ mats[i].T).to(dt) for i in range(bsz)])
        ok = torch.isfinite(w0).all(dim=-1) & (w0.norm(dim=-1) > 0)  # zero vectors: random
        start[:, :j0] = torch.where(ok[..., None], w0, start[:, :j0])
    basis[:, :b] = torch.linalg.qr(start.mT)[0].mT
    every = _CHECK_EVERY or (1 if m * n >= 2**20 else 2)
    out_sig, out_res = np.zeros(bsz), np.zeros(bsz)
    out_x = torch.zeros(bsz, d, dtype=dt, device=dev)
    idx = np.arange(bsz)
    live = np.ones(bsz, dtype=bool)
    prev = np.full(bsz, np.nan)
    prev_delta = np.full(bsz, np.nan)
    prev_rate = np.full(bsz, np.nan)
    it = 0
    for j in range(steps):
        it = j + 1
        c0, c1 = j * b, (j + 1) * b
        qs = basis[:, :c1]
        if len(idx) == 1:
            w = apply(0, basis[0, c0:c1]).unsqueeze(0)
        else:
            w = torch.stack([apply(i, basis[i, c0:c1]) for i in range(len(idx))])  # (bsz, b, d)
        pre = w.norm(dim=-1)
        coef = torch.matmul(w, qs.mT, out=proj[:, c0:c1, :c1])  # row block j of the projection
        w = torch.baddbmm(w, coef, qs, alpha=-1.0)
        w = torch.baddbmm(w, w @ qs.mT, qs, alpha=-1.0)  # twice is enough
        q_new, r = torch.linalg.qr(w.mT)
        lost = r.diagonal(dim1=-2, dim2=-1).abs() <= 1e-4 * pre
        if bool(lost.any()):
            # the block lost a direction (low rank, or the whole space): random rows in its place,
            # orthogonal to the basis; their coupling to the Krylov space is what it is (about 0)
            fresh = orth_rows(torch.randn(w.shape, generator=generator, dtype=dt).to(dev), qs)
            q_new = torch.linalg.qr(torch.where(lost[..., None, :], fresh.mT, q_new))[0]
            q_new = orth_rows(q_new.mT, qs).mT
            q_new = torch.linalg.qr(q_new)[0]
            r = q_new.mT @ w.mT
        basis[:, c1 : c1 + b] = q_new.mT
        proj[:, c1 : c1 + b, c0:c1] = r
        if not (it == steps or (it >= 2 and (it - 2) % every == 0)):
            continue
        host = proj.numpy() if dev.type == "cpu" else proj.cpu().numpy()  # a view on the CPU
        theta, s_top = _top_eigh(host[:, :c1, :c1])
        coup = host[:, c1 : c1 + b, c0:c1].astype(np.float64)  # R_j: V_{j+1} against C V_j
        sig = np.sqrt(theta)
        scale = np.maximum(sig, tiny)
        resid = np.linalg.norm((coup @ s_top[:, c0:c1, None])[..., 0], axis=-1) / scale
        conv = resid / math.sqrt(2) <= tol * scale
        # the rule of _block_lanczos_core, between checks (Ritz values stagnate geometrically),
        # with the slower of the last two contraction rates and tol/10 (not /4): on a dense top
        # edge (Gaussian 8192x2048: four values within 0.4 %) the Ritz value slows down near a
        # lower value before it moves on, and at tol 1e-3 the looser rule stopped there, 1.6x
        # tol off; with these, 0.03-0.3x tol on the benchmark's matrices and seeds
        delta = np.abs(sig - prev[idx]) / scale
        rate = delta / np.maximum(prev_delta[idx], tiny)
        rho = np.minimum(np.maximum(rate, prev_rate[idx]), 0.999)
        conv |= (delta <= tol / 10) & (delta * rho / (1 - rho) <= tol / 10)  # NaN (too early): False
        prev[idx], prev_delta[idx], prev_rate[idx] = sig, delta, rate
        if it == steps or c1 + b > d:
            conv[:] = True
        new = np.flatnonzero(conv & live)
        if len(new):
            rows = torch.from_numpy(new).to(dev)
            ritz = torch.from_numpy(s_top[new]).to(dev, dt)
            out_x[torch.from_numpy(idx[new]).to(dev)] = (ritz[:, None, :] @ basis[rows, :c1])[:, 0]
            out_sig[idx[new]], out_res[idx[new]] = sig[new], resid[new]
            live[new] = False
        if not live.any():
            break
        if (~live).sum() * 4 >= len(idx):  # drop the converged matrices
            keep = np.flatnonzero(live)
            kt = torch.from_numpy(keep).to(dev)
            mats = [mats[i] for i in keep]
            basis, proj = basis[kt], proj[kt]
            idx, live = idx[keep], live[keep]
    x = out_x / out_x.norm(dim=-1, keepdim=True).clamp_min(tiny)
    if left:  # x holds the left vectors u; the right ones are Aᵀu / σ
        x = torch.stack([(x[i].to(every_mat[i].dtype) @ every_mat[i]).to(dt) for i in range(bsz)])
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(tiny)
    x[:, 0] += x.norm(dim=-1) == 0  # a zero matrix: any unit vector is a singular vector
    sig_t = torch.from_numpy(out_sig).to(dev, dt)
    res_t = torch.from_numpy(out_res).to(dev, dt)
    return SVDResult(sig_t[:, None], x.reshape(bsz, n, 1), res_t[:, None], it, block=b)


def _block_lanczos(
    a: torch.Tensor,
    k: int,
    *,
    tol: float,
    max_iter: int,
    block: int,
    v0: torch.Tensor | None,
    generator: torch.Generator | None,
    a_mm: torch.Tensor | None = None,
    keep: int | None = None,
) -> SVDResult:
    bsz = a.shape[0]
    if bsz == 1:  # plain matrix products (mm) are faster than batched ones (bmm) for one matrix
        res = _block_lanczos_core(
            a[0],
            (),
            k,
            tol=tol,
            max_iter=max_iter,
            block=block,
            v0=None if v0 is None else v0[0],
            generator=generator,
            a_mm=None if a_mm is None else a_mm[0],
            keep=keep,
        )
        return SVDResult(res.values[None], res.v[None], res.residual[None], res.iterations, block=res.block)
    return _block_lanczos_core(
        a,
        (bsz,),
        k,
        tol=tol,
        max_iter=max_iter,
        block=block,
        v0=v0,
        generator=generator,
        a_mm=a_mm,
        keep=keep,
    )


def _block_lanczos_core(
    a: torch.Tensor,
    lead: tuple[int, ...],
    k: int,
    *,
    tol: float,
    max_iter: int,
    block: int,
    v0: torch.Tensor | None,
    generator: torch.Generator | None,
    a_mm: torch.Tensor | None = None,
    keep: int | None = None,
) -> SVDResult:
    """Block Lanczos on ``a``; products use ``a_mm`` (e.g. a bfloat16 copy) when given.
    Returns the top ``keep`` (default ``k``) Ritz pairs; convergence is judged on the top k."""
    mm = a if a_mm is None else a_mm
    m, n = a.shape[-2:]
    b = min(block, min(m, n))
    steps = max(1, min(max_iter, min(m, n) // b))
    kept = min(keep or k, b)
    tiny = torch.finfo(a.dtype).tiny
    start = torch.randn(*lead, n, b, generator=generator, dtype=a.dtype).to(a.device)
    if v0 is not None:
        if v0.shape[:-1] != (*lead, n):
            raise ValueError(f"warm start v0 has shape {tuple(v0.shape)}; expected (…, {n}, j)")
        j = min(v0.shape[-1], b)
        start[..., :j] = v0.to(a.device, a.dtype)[..., :j]
    # Preallocated Krylov basis Q = [V_1 … V_j] and its image Z = AᵀA Q, both (bsz, n, b·steps).
    q_buf = torch.empty(*lead, n, b * steps, dtype=a.dtype, device=a.device)
    z_buf = torch.empty_like(q_buf)
    gram = torch.zeros(*lead, b * steps, b * steps, dtype=torch.float64, device=a.device)
    v_block = _orth(start)
    prev: torch.Tensor | None = None
    prev_delta: torch.Tensor | None = None
    it, cols = 0, 0
    theta = w_top = None
    for it in range(1, steps + 1):
        c0, cols = cols, cols + b
        q_buf[..., c0:cols] = v_block
        y = (mm @ v_block.to(mm.dtype)).to(a.dtype)  # (…, m, b)
        # Aᵀy as (yᵀA)ᵀ: a row-major product, much faster than one with a transposed view of A
        z_new = (y.transpose(-1, -2).contiguous().to(mm.dtype) @ mm).transpose(-1, -2).to(a.dtype)
        z_buf[..., c0:cols] = z_new
        q_all, z_all = q_buf[..., :cols], z_buf[..., :cols]
        # Rayleigh–Ritz on QᵀAᵀAQ, grown by one block column (and its mirror row)
        col = (q_all.transpose(-1, -2) @ z_new).double()
        gram[..., :cols, c0:cols] = col
        gram[..., c0:cols, :c0] = col[..., :c0, :].transpose(-1, -2)
        sub = gram[..., :cols, :cols]
        sub[..., c0:cols, c0:cols] = 0.5 * (col[..., c0:, :] + col[..., c0:, :].transpose(-1, -2))
        evals, evecs = torch.linalg.eigh(sub)
        theta = evals.flip(-1)[..., :kept].clamp_min(0).to(a.dtype)
        w_top = evecs.flip(-1)[..., :kept].to(a.dtype)
        sig = theta.sqrt()[..., :k]
        scale = sig[..., :1].clamp_min(tiny)
        if it == steps:
            break
        # singular residual of the Ritz triplets: ‖AᵀA v − θ v‖ / σ (a rigorous bound)
        resid = (z_all @ w_top[..., :k] - (q_all @ w_top[..., :k]) * theta[..., None, :k]).norm(
            dim=-2
        ) / sig.clamp_min(tiny)
        if (resid / math.sqrt(2) <= tol * scale).all():
            break
        # Ritz values rise monotonically to the true values; with steps shrinking by a factor
        # rho the remaining gap is about delta * rho / (1 - rho): stop when that is below tol/4
        # (rho is only an estimate; at tol itself Gaussian matrices stopped up to 4x too early).
        if prev is not None:
            delta = ((sig - prev).abs() / scale).amax(dim=-1)
            if prev_delta is not None:
                rho = (delta / prev_delta.clamp_min(tiny)).clamp(max=0.999)
                if ((delta <= tol / 4) & (delta * rho / (1 - rho) <= tol / 4)).all():
                    break
            prev_delta = delta
        prev = sig
        v_block = _next_block(q_all, z_new, generator)
    assert theta is not None and w_top is not None
    q_all, z_all = q_buf[..., :cols], z_buf[..., :cols]
    v = q_all @ w_top
    sig = theta.sqrt()
    resid = (z_all @ w_top - v * theta[..., None, :]).norm(dim=-2) / sig.clamp_min(tiny)
    return SVDResult(sig, v, resid, it, block=b)


# -- whole models --------------------------------------------------------------------------


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A weight as a matrix: rank 2 as is, conv kernels ``(out, in, *k)`` as ``(out, in·∏k)``."""
    if weight.ndim < 2:
        raise ValueError(f"a rank-{weight.ndim} tensor is not a matrix")
    return weight.reshape(weight.shape[0], -1)


def _module_types(model: nn.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            out.setdefault(f"{mod_name}.{p_name}" if mod_name else p_name, type(module).__name__)
    return out


def weight_matrices(
    source: nn.Module | Mapping[str, torch.Tensor],
    *,
    include: str | None = None,
    exclude: str | None = None,
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """``(name, layer type, tensor)`` for every tensor of rank >= 2 of a model or state_dict.

    The layer type is the owning module's class name for a model (``Linear``, ``Conv2d``,
    ``Embedding``) and ``matrix`` / ``conv{k}d-kernel`` for a bare state_dict. ``include`` /
    ``exclude`` are regexes searched in names.
    """
    if isinstance(source, nn.Module):
        types = _module_types(source)
        items: Iterable[tuple[str, torch.Tensor]] = source.named_parameters()
    else:
        types = {}
        items = source.items()
    inc = re.compile(include) if include else None
    exc = re.compile(exclude) if exclude else None
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor) or tensor.ndim < 2 or not tensor.is_floating_point():
            continue
        if (inc and not inc.search(name)) or (exc and exc.search(name)):
            continue
        kind = types.get(name) or ("matrix" if tensor.ndim == 2 else f"conv{tensor.ndim - 2}d-kernel")
        yield name, kind, tensor.detach()


@dataclass(frozen=True)
class LayerSpectrum:
    """Spectral summary of one weight matrix."""

    name: str
    layer_type: str
    shape: tuple[int, ...]
    sigma: tuple[float, ...]  # top-k singular values, descending
    fro: float
    error_bound: float  # on sigma_max

    @property
    def sigma_max(self) -> float:
        return self.sigma[0]

    @property
    def rms(self) -> float:
        """Root mean square entry, ``‖W‖_F / sqrt(#entries)``."""
        return self.fro / math.sqrt(math.prod(self.shape))

    @property
    def spectral_to_rms(self) -> float:
        """``sigma_max / rms``: ``sqrt(#entries)`` for rank one, about ``sqrt(m)+sqrt(n)`` for noise."""
        return self.sigma_max / self.rms if self.rms > 0 else math.inf

    @property
    def stable_rank(self) -> float:
        """``‖W‖_F² / sigma_max²``, between 1 and the rank."""
        return (self.fro / self.sigma_max) ** 2 if self.sigma_max > 0 else 0.0


@dataclass
class SpectralCache:
    """Right singular vectors per layer name, for warm starts between checkpoints."""

    vectors: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, name: str, shape: tuple[int, int]) -> torch.Tensor | None:
        v = self.vectors.get(name)
        return v if v is not None and v.shape[0] == shape[1] else None


@torch.no_grad()
def model_spectrum(
    source: nn.Module | Mapping[str, torch.Tensor],
    *,
    k: int = 1,
    tol: float = 1e-4,
    exact: bool = False,
    include: str | None = None,
    exclude: str | None = None,
    cache: SpectralCache | None = None,
    max_batch_bytes: int = 256 * 2**20,
    seed: int = 0,
    precision: str = "float32",
) -> dict[str, LayerSpectrum]:
    """Top-k singular values of every weight matrix of ``source`` (model or state_dict).

    Same-shape matrices are stacked and solved together (up to ``max_batch_bytes`` a batch).
    With a ``cache``, each layer starts from its vectors of the previous call and stores the
    new ones. ``precision="mixed"``: see :func:`top_singular_values`.

    Raises:
        NonFiniteWeightError: a matrix with NaN/inf entries (named in the message).

    Example:
        >>> spec = model_spectrum(torch.nn.Linear(64, 32))
        >>> list(spec)
        ['weight']
    """
    gen = torch.Generator().manual_seed(seed)
    Member = tuple[str, str, torch.Tensor, tuple[int, ...], float]
    groups: dict[tuple[tuple[int, int], torch.dtype], list[Member]] = {}
    for name, kind, tensor in weight_matrices(source, include=include, exclude=exclude):
        mat = as_matrix(tensor)
        dtype = mat.dtype if mat.dtype in (torch.float32, torch.float64) else torch.float32
        # the Frobenius norm is finite iff every entry is (barring overflow of the sum, which
        # the exact test below then settles): one cheap pass instead of an isfinite mask
        fro = float(mat.to(dtype).norm())
        if not math.isfinite(fro) and not bool(torch.isfinite(mat).all()):
            bad = int((~torch.isfinite(mat)).sum())
            raise NonFiniteWeightError(
                f"layer {name!r} has {bad} non-finite weight(s) (NaN/inf): the run diverged or "
                "the checkpoint is corrupt; re-train with a smaller lr or load another checkpoint"
            )
        if not math.isfinite(fro):
            fro = float(mat.double().norm())
        groups.setdefault(((int(mat.shape[0]), int(mat.shape[1])), dtype), []).append(
            (name, kind, mat, tuple(tensor.shape), fro)
        )
    out: dict[str, LayerSpectrum] = {}
    for ((m, n), dtype), members in groups.items():
        per = m * n * (4 if dtype == torch.float32 else 8)
        chunk = max(1, max_batch_bytes // max(per, 1))
        for i in range(0, len(members), chunk):
            part = members[i : i + chunk]
            v0 = None
            if cache is not None:
                warm = [cache.get(nm, (m, n)) for nm, _, _, _, _ in part]
                if all(w is not None for w in warm):
                    j = min(w.shape[-1] for w in warm if w is not None)
                    v0 = torch.stack([w[..., :j] for w in warm if w is not None])
            mats = [mm.to(dtype) for _, _, mm, _, _ in part]
            if k == 1 and not exact and precision == "float32" and min(m, n) > 16:
                # the path top_singular_values takes, without stacking a copy of the group
                res = _top_one(mats, tol=tol, max_iter=60, block=None, v0=v0, generator=gen)
            else:
                stack = mats[0].unsqueeze(0) if len(mats) == 1 else torch.stack(mats)
                res = top_singular_values(
                    stack, k, tol=tol, exact=exact, v0=v0, generator=gen, precision=precision
                )
            for j, (name, kind, _, shape, fro) in enumerate(part):
                out[name] = LayerSpectrum(
                    name=name,
                    layer_type=kind,
                    shape=shape,
                    sigma=tuple(float(x) for x in res.values[j]),
                    fro=fro,
                    error_bound=float(res.error_bound[j, 0]),
                )
                if cache is not None:
                    cache.vectors[name] = res.v[j].clone()
    # keep the source's order
    order = [name for name, _, _ in weight_matrices(source, include=include, exclude=exclude)]
    return {name: out[name] for name in order if name in out}
