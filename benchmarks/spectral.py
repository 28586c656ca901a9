"""Spectral diagnostic benchmark: the top singular value against fair baselines, a whole model,
and the diagnostic on the built-in LM proxy under two weight-decay rules.

Parts (one run, baselines measured in the same run, one torch thread throughout):

A. ``top_singular_values(A, 1)`` (block Lanczos, tol 1e-4) on square, wide and tall matrices
   (512 to 8192 a side), Gaussian (clustered top spectrum: the hard case) and trained-like
   (noise plus four outlier directions). Baselines: the best of ``torch.linalg.svdvals(A)`` and
   ``svdvals(A.mT)`` (same values, very different speed), and SciPy ARPACK ``svds(k=1)`` at its
   default tolerance and at ours. The floor is the time of the matrix products the iteration
   needed (per phase, its steps times ``A @ X`` and ``Yᵀ @ A`` with that phase's block width), and
   best full SVD / floor is the largest speed-up any Krylov method needing that many products
   could reach: the renderer counts each target over all rows and over the rows where it is
   reachable, and names the others. Every row is measured again at tol 1e-3, the accuracy the
   DESIGN's 30x target names. Errors are against float64 ``svds``. ``precision="mixed"`` is
   timed on every row.
B. ``model_spectrum`` of a GPT-2-small-shaped state_dict (124M parameters, init-like N(0, 0.02)
   entries: the slowest case for an iterative solver; same-shape matrices batched) against the
   same baselines summed over its matrices (timed once per distinct shape, times the count).
C. ``diagnose`` on the built-in llama proxy with the CLI defaults (widths, steps, base wd), under
   ``mup-wd-sqrt`` and ``mup-wd-linear``, and the two-rule calibration of the wd exponent.

Usage:
    nice python3 benchmarks/spectral.py               # ~10-15 min on 2 busy cores; writes results
    python3 benchmarks/spectral.py --quick            # smoke run (seconds), nothing saved
    python3 benchmarks/render_docs.py spectral        # docs/results-spectral.md + figures

The last printed line is the headline.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # one BLAS thread for the numpy/scipy baseline (svds) too, as for torch: OpenBLAS reads this
    # when numpy loads. Its default (a thread per core) made svds several times slower on the
    # loaded 2-core machine than on one thread.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line, environment_table, result_document, save_results
from hptransfer.diagnostics.spectral import MIXED_ROUGH_TOL

TOL = 1e-4
# DESIGN states the 30x target "at <= 1e-3 relative error": part A is also run at that tolerance
TOL_TARGET = 1e-3
FULL_SHAPES = [
    ("square", 512, 512),
    ("wide", 512, 2048),
    ("tall", 2048, 512),
    ("square", 2048, 2048),
    ("wide", 2048, 8192),
    ("tall", 8192, 2048),
]
QUICK_SHAPES = [("square", 128, 128), ("wide", 128, 512), ("tall", 512, 128)]


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _matrix(kind: str, m: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(m, n, generator=g) / math.sqrt(n)
    r = 4
    u = torch.linalg.qr(torch.randn(m, r, generator=g))[0]
    v = torch.linalg.qr(torch.randn(n, r, generator=g))[0]
    noise = 0.02 * torch.randn(m, n, generator=g)
    return noise + (u * torch.tensor([6.0, 5.0, 3.0, 2.0])) @ v.T


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def _svds(a: np.ndarray, tol: float) -> float:
    from scipy.sparse.linalg import svds

    return float(svds(a, k=1, tol=tol, return_singular_vectors=False, random_state=0)[0])


def _floor(a: torch.Tensor, iterations: int, block: int, repeat: int) -> float:
    """Time of the products ``iterations`` Krylov steps need, laid out as the solver lays them
    out. Block 1 (the top value): ``A @ x`` (``torch.mv``) and ``yᵀA`` (a vector–matrix
    product, no read through a transposed view), whichever side the Krylov space is on. A
    block: ``Y = A @ V`` with an orthonormal block ``V`` (from QR), then ``Yᵀ @ A``."""
    n = a.shape[-1]
    if block == 1:
        x = torch.randn(n)
        x /= x.norm()

        def products() -> None:
            for _ in range(iterations):
                torch.mv(a, x) @ a

        return _best(products, repeat)[0]
    v = torch.linalg.qr(torch.randn(*a.shape[:-2], n, block))[0]

    def block_products() -> None:
        for _ in range(iterations):
            y = a @ v
            y.transpose(-1, -2).contiguous() @ a

    return _best(block_products, repeat)[0]


def _floor_phases(a: torch.Tensor, phases: list[list[int]], repeat: int) -> float:
    """The floor of a run in phases (mixed precision: a bfloat16 block, then a float32 one): the sum."""
    return sum(_floor(a, steps, block, repeat) for block, steps in phases)


def _product_pair(a: torch.Tensor, repeat: int) -> tuple[float, float]:
    """One ``A x`` and one ``yᵀ A`` (float32, one thread): torch's BLAS, numpy's BLAS (what
    ARPACK's ``svds`` calls)."""
    m, n = a.shape
    x, y = torch.randn(n), torch.randn(m)
    an, xn, yn = a.numpy(), x.numpy(), y.numpy()
    t_torch = _best(lambda: (torch.mv(a, x), y @ a), repeat)[0]
    t_numpy = _best(lambda: (an @ xn, yn @ an), repeat)[0]
    return t_torch, t_numpy


def part_a(shapes: list[tuple[str, int, int]], repeat: int) -> list[dict]:
    from hptransfer.diagnostics.spectral import top_singular_values

    rows = []
    for orient, m, n in shapes:
        for kind in ("gaussian", "trained-like"):
            a = _matrix(kind, m, n)
            ref = _svds(a.double().numpy(), 0.0)
            big = m * n >= 2048 * 8192
            # the fast timings (ours, its floor, svds) under 2048x2048 take 3x the repetitions:
            # milliseconds on a loaded machine, where a minimum of 3 was still noisy
            rep = repeat if m * n > 2048 * 2048 else 3 * repeat
            t_ours, res = _best(lambda a=a: top_singular_values(a, 1, tol=TOL, generator=_gen()), rep)
            block = res.block
            phases = [list(p) for p in res.phases]
            t_floor = _floor_phases(a, phases, rep)
            t_pair_torch, t_pair_numpy = _product_pair(a, 3 * rep)
            t_sv, _ = _best(lambda a=a: torch.linalg.svdvals(a), 1 if big else repeat)
            t_svt, _ = _best(lambda a=a: torch.linalg.svdvals(a.mT), 1 if big else repeat)
            an = a.numpy()
            t_svds, v_svds = _best(lambda an=an: _svds(an, 0.0), rep)
            t_svds_tol, v_svds_tol = _best(lambda an=an: _svds(an, TOL), rep)
            full = min(t_sv, t_svt)
            row = {
                "shape": [m, n],
                "orientation": orient,
                "kind": kind,
                "ours_s": t_ours,
                "iterations": res.iterations,
                "block": block,
                "phases": phases,
                "pair_torch_s": t_pair_torch,
                "pair_numpy_s": t_pair_numpy,
                "ours_rel_err": abs(float(res.values[0]) - ref) / ref,
                "ours_bound_rel": float(res.error_bound[0]) / ref,
                "floor_s": t_floor,
                "svdvals_s": t_sv,
                "svdvals_T_s": t_svt,
                "best_full_s": full,
                "svds_s": t_svds,
                "svds_rel_err": abs(v_svds - ref) / ref,
                "svds_tol_s": t_svds_tol,
                "svds_tol_rel_err": abs(v_svds_tol - ref) / ref,
            }
            # the same row at the DESIGN target's accuracy (1e-3): ours, its floor, svds at that tol
            t_l, res_l = _best(lambda a=a: top_singular_values(a, 1, tol=TOL_TARGET, generator=_gen()), rep)
            t_svds_l, v_svds_l = _best(lambda an=an: _svds(an, TOL_TARGET), rep)
            row["at_target"] = {
                "ours_s": t_l,
                "iterations": res_l.iterations,
                "ours_rel_err": abs(float(res_l.values[0]) - ref) / ref,
                "ours_bound_rel": float(res_l.error_bound[0]) / ref,
                "phases": [list(p) for p in res_l.phases],
                "floor_s": _floor_phases(a, [list(p) for p in res_l.phases], rep),
                "svds_tol_s": t_svds_l,
                "svds_tol_rel_err": abs(v_svds_l - ref) / ref,
            }
            t_mixed, res_m = _best(
                lambda a=a: top_singular_values(a, 1, tol=TOL, precision="mixed", generator=_gen()), rep
            )
            row["mixed_s"] = t_mixed
            row["mixed_rel_err"] = abs(float(res_m.values[0]) - ref) / ref
            row["mixed_phases"] = [list(p) for p in res_m.phases]
            rows.append(row)
            lo = row["at_target"]
            print(
                f"A {m}x{n} {kind:12s}: ours {t_ours * 1e3:.1f} ms ({res.iterations} it, err "
                f"{row['ours_rel_err']:.1e}; floor {t_floor * 1e3:.1f} ms, {t_ours / t_floor:.1f}x) | best "
                f"svdvals {full:.3f} s (A {t_sv:.3f}, A.mT {t_svt:.3f}) -> {full / t_ours:.1f}x, reachable "
                f"{full / t_floor:.1f}x | svds {t_svds * 1e3:.0f} ms (err {row['svds_rel_err']:.0e}), at tol "
                f"{TOL:g} {t_svds_tol * 1e3:.0f} ms | at tol {TOL_TARGET:g}: ours "
                f"{lo['ours_s'] * 1e3:.1f} ms ({lo['iterations']} it, err {lo['ours_rel_err']:.1e}) -> "
                f"{full / lo['ours_s']:.1f}x, reachable "
                f"{full / lo['floor_s']:.1f}x; svds {lo['svds_tol_s'] * 1e3:.0f} ms"
                + (f" | mixed {row['mixed_s'] * 1e3:.0f} ms" if "mixed_s" in row else ""),
                flush=True,
            )
    return rows


def gpt_state_dict(blocks: int, d: int, vocab: int, ctx: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def w(*shape: int) -> torch.Tensor:
        return 0.02 * torch.randn(*shape, generator=g)

    sd = {"wte.weight": w(vocab, d), "wpe.weight": w(ctx, d)}
    for i in range(blocks):
        p = f"h.{i}."
        sd[p + "ln_1.weight"] = torch.ones(d)
        sd[p + "attn.c_attn.weight"] = w(3 * d, d)
        sd[p + "attn.c_proj.weight"] = w(d, d)
        sd[p + "ln_2.weight"] = torch.ones(d)
        sd[p + "mlp.c_fc.weight"] = w(4 * d, d)
        sd[p + "mlp.c_proj.weight"] = w(d, 4 * d)
    return sd


def part_b(blocks: int, d: int, vocab: int, ctx: int, repeat: int) -> dict[str, Any]:
    from hptransfer.diagnostics.spectral import model_spectrum

    sd = gpt_state_dict(blocks, d, vocab, ctx)
    mats = {k: v for k, v in sd.items() if v.ndim == 2}
    n_params = sum(t.numel() for t in sd.values())
    t_ours, spec = _best(lambda: model_spectrum(sd, tol=TOL), repeat)
    t_mixed, spec_mixed = _best(lambda: model_spectrum(sd, tol=TOL, precision="mixed"), repeat)
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name, t in mats.items():
        by_shape.setdefault((t.shape[0], t.shape[1]), []).append(name)
    full = svds_total = 0.0
    errs: list[float] = []
    errs_mixed: list[float] = []
    shapes = []
    for (m, n), names in by_shape.items():
        a = mats[names[0]]
        t_sv, _ = _best(lambda a=a: torch.linalg.svdvals(a), 1)
        t_svt, _ = _best(lambda a=a: torch.linalg.svdvals(a.mT), 1)
        t_svds, _ = _best(lambda a=a: _svds(a.numpy(), 0.0), 1)
        ref = _svds(a.double().numpy(), 0.0)
        errs.append(abs(spec[names[0]].sigma_max - ref) / ref)
        errs_mixed.append(abs(spec_mixed[names[0]].sigma_max - ref) / ref)
        full += min(t_sv, t_svt) * len(names)
        svds_total += t_svds * len(names)
        shapes.append(
            {"shape": [m, n], "count": len(names), "svdvals_s": t_sv, "svdvals_T_s": t_svt, "svds_s": t_svds}
        )
    print(
        f"B GPT-shaped state_dict: {n_params / 1e6:.0f}M params, {len(mats)} matrices: ours {t_ours:.2f} s | "
        f"best full SVD {full:.1f} s ({full / t_ours:.1f}x) | svds {svds_total:.1f} s "
        f"({svds_total / t_ours:.1f}x); spot error {max(errs):.1e}; mixed {t_mixed:.2f} s",
        flush=True,
    )
    return {
        "params_m": n_params / 1e6,
        "matrices": len(mats),
        "ours_s": t_ours,
        "mixed_s": t_mixed,
        "mixed_max_rel_err": max(errs_mixed),
        "best_full_s": full,
        "svds_s": svds_total,
        "max_rel_err": max(errs),
        "shapes": shapes,
        "layout": {"blocks": blocks, "d": d, "vocab": vocab, "ctx": ctx},
    }


def part_c(widths: list[int] | None, steps: int | None, rules: list[str]) -> dict[str, Any]:
    from dataclasses import replace

    from hptransfer.cli.diagnose import BUILTIN_DIAGNOSE_WD, DEFAULT_WIDTHS
    from hptransfer.diagnostics import calibrate_from_reports, diagnose
    from hptransfer.models import builtin_config

    ws = widths or [int(w) for w in DEFAULT_WIDTHS.split(",")]
    cfg = replace(builtin_config("llama"), weight_decay=BUILTIN_DIAGNOSE_WD)
    reports = {}
    out: dict[str, Any] = {"widths": ws, "wd": BUILTIN_DIAGNOSE_WD, "lr": cfg.lr, "rules": {}}
    for rule in rules:
        t = time.perf_counter()
        rep = diagnose("llama", ws, cfg, rule, steps)  # steps None: the CLI's default, per rule
        secs = time.perf_counter() - t
        reports[rep.rule or rule] = rep
        n = max(s for s, _ in next(iter(rep.history.values())))
        out["rules"][rep.rule or rule] = {"seconds": secs, "steps": n, "report": rep.to_dict()}
        p = rep.pooled
        print(
            f"C {rep.rule}: {rep.outcome} (exit {rep.exit_code}); pooled ratio "
            f"{p.ratio if p else float('nan'):.2f}, alpha {p.describe() if p else '-'}; "
            f"{len(rep.drifting)} drifting, {len(rep.inconclusive_layers())} undecided "
            f"of {len(rep.gated())}; "
            f"{secs:.0f} s",
            flush=True,
        )
    two = calibrate_from_reports(reports) if len(reports) > 1 else None
    if two is not None:
        cal, pair = two
        out["two_rule_calibration"] = {
            "wd_exponent": cal.exponent,
            "ci": list(cal.ci) if cal.ci else None,
            "from_rules": list(pair),
            "not_recommended_because": cal.too_wide(),
        }
        print(f"C two-rule calibration: {cal.describe()}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, few steps, nothing saved")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 'c'")
    ap.add_argument("--rules", default="mup-wd-sqrt,mup-wd-linear", help="rules for part C")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions (min taken) of the fast timings")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    skip = set(args.skip.split(",")) if args.skip else set()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    if args.quick:
        a = part_a(QUICK_SHAPES, 1) if "a" not in skip else None
        b = part_b(2, 128, 2000, 256, 1) if "b" not in skip else None
        c = part_c([16, 32, 48], 6, args.rules.split(",")) if "c" not in skip else None
    else:
        a = part_a(FULL_SHAPES, args.repeat) if "a" not in skip else None
        b = part_b(12, 768, 50257, 1024, 2) if "b" not in skip else None
        c = part_c(None, None, args.rules.split(",")) if "c" not in skip else None
    results = {
        "tol": TOL,
        "tol_target": TOL_TARGET,
        "mixed_rough_tol": MIXED_ROUGH_TOL,
        "a": a,
        "b": b,
        "c": c,
        "quick": args.quick,
        "seconds": time.perf_counter() - t0,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    if args.quick:
        result_document("spectral", results)  # validates without writing
    else:
        print(f"saved {save_results('spectral', results)}")
    print(headline_text(results))
    return 0


# -- rendering (pure: from the results file) ---------------------------------------------------


def _at(a: list[dict], key: str | None) -> list[dict]:
    """Part A's rows as measured at the main tolerance (``key`` None) or at the DESIGN target's
    (``"at_target"``: the same matrices and full-SVD times, ours/floor/svds at that tol)."""
    return a if key is None else [{**r, **r[key]} for r in a if key in r]


def _label(r: dict) -> str:
    return f"{r['shape'][0]}×{r['shape'][1]} {r['kind']}"


def _target_rows(a: list[dict]) -> dict[str, Any]:
    """Counts of the issue-13 targets, over all rows and over the rows where each is reachable.

    Reachable: a Krylov method needing the products ours needed cannot beat the time of those
    products alone (the floor), so the best speed-up over the full SVD it can reach is
    best full / floor, and it can beat ``svds`` only where ``svds`` is slower than the floor."""
    vs_full = [r["best_full_s"] / r["ours_s"] for r in a]
    vs_svds = [r["svds_tol_s"] / r["ours_s"] for r in a]
    vs_floor = [r["ours_s"] / r["floor_s"] for r in a]
    reach_full = [r["best_full_s"] / r["floor_s"] >= 30 for r in a]
    reach_svds = [r["svds_tol_s"] / r["floor_s"] > 1 for r in a]
    return {
        "full_min": min(vs_full),
        "full_max": max(vs_full),
        "full_met": sum(v >= 30 for v in vs_full),
        "full_reachable": sum(reach_full),
        "full_met_reachable": sum(v >= 30 and ok for v, ok in zip(vs_full, reach_full)),
        "full_unreachable": [r for r, ok in zip(a, reach_full) if not ok],
        "svds_min": min(vs_svds),
        "svds_max": max(vs_svds),
        "svds_met": sum(v > 1 for v in vs_svds),
        "svds_reachable": sum(reach_svds),
        "svds_met_reachable": sum(v > 1 and ok for v, ok in zip(vs_svds, reach_svds)),
        "svds_unreachable": [r for r, ok in zip(a, reach_svds) if not ok],
        "floor_max": max(vs_floor),
        "floor_met": sum(v <= 3 for v in vs_floor),
        "n": len(a),
        "rows": a,
    }


def _target_lines(t: dict[str, Any], tol: float) -> list[str]:
    lines = [
        f"* ≥ 30× over the best full SVD: **{t['full_met']} of {t['n']}** rows "
        f"(range {t['full_min']:.1f}× to {t['full_max']:.0f}×); reachable (best full / floor ≥ 30) in "
        f"{t['full_reachable']} of {t['n']}, met in **{t['full_met_reachable']} of {t['full_reachable']}** "
        "of those.",
    ]
    if t["full_unreachable"]:
        lines.append(
            f"  Unreachable at tol {tol:g}: the matrix–vector products the iteration needs take more than "
            "1/30 of the best full SVD, so no Krylov method needing as many products can be 30× faster, "
            "whatever its overhead: "
            + "; ".join(
                f"{_label(r)} (floor {_ms(r['floor_s'])}, best full {_ms(r['best_full_s'])}: at most "
                f"{r['best_full_s'] / r['floor_s']:.1f}×)"
                for r in t["full_unreachable"]
            )
            + "."
        )
    lines.append(
        f"* faster than `svds(k=1)` at equal tolerance: **{t['svds_met']} of {t['n']}** "
        f"(ours is {t['svds_min']:.2f}× to {t['svds_max']:.2f}× as fast); reachable (svds slower than "
        f"the floor) in {t['svds_reachable']} of {t['n']}, met in **{t['svds_met_reachable']} of "
        f"{t['svds_reachable']}**."
    )
    if all("svds_tol_rel_err" in r and "ours_rel_err" in r for r in t["rows"]):
        se = [r["svds_tol_rel_err"] for r in t["rows"]]
        oe = [r["ours_rel_err"] for r in t["rows"]]
        lines.append(
            f"  Equal tolerance is not equal accuracy: at tol {tol:g} `svds` delivered errors "
            f"{min(se):.0e} to {max(se):.0e} (ARPACK's tol bounds its residual estimate and it "
            f"overshoots), ours {min(oe):.0e} to {max(oe):.0e}."
        )
    if t["svds_unreachable"]:
        lines.append(
            "  Unreachable: `svds` takes less than our products alone: "
            + "; ".join(
                f"{_label(r)} (svds {_ms(r['svds_tol_s'])}, floor {_ms(r['floor_s'])})"
                for r in t["svds_unreachable"]
            )
            + "."
        )
    lines.append(f"* within 3× of the floor: **{t['floor_met']} of {t['n']}** (worst {t['floor_max']:.1f}×).")
    return lines


def headline_text(r: dict[str, Any]) -> str:
    parts = []
    if r.get("a"):
        t = _target_rows(r["a"])
        parts.append(
            f"top sigma vs best of svdvals(A)/svdvals(A.mT): {t['full_min']:.1f}-{t['full_max']:.0f}x "
            f"(>= 30x in {t['full_met']}/{t['n']}, {t['full_met_reachable']}/{t['full_reachable']} where "
            f"reachable); vs svds(k=1) at tol {r['tol']:g}: "
            f"{t['svds_min']:.1f}-{t['svds_max']:.1f}x (faster in {t['svds_met']}/{t['n']}); "
            f"<= 3x the floor in {t['floor_met']}/{t['n']}"
        )
        lo = _at(r["a"], "at_target")
        if lo:
            tl = _target_rows(lo)
            parts[-1] += (
                f"; at tol {r['tol_target']:g}: >= 30x in {tl['full_met']}/{tl['n']} "
                f"({tl['full_met_reachable']}/{tl['full_reachable']} where reachable)"
            )
        mixed = [row for row in r["a"] if "mixed_s" in row]
        if mixed:
            parts[-1] += (
                f"; precision=mixed at tol {r['tol']:g}: >= 30x in "
                f"{sum(row['best_full_s'] / row['mixed_s'] >= 30 for row in mixed)}/{len(mixed)}, faster "
                f"than svds in {sum(row['svds_tol_s'] > row['mixed_s'] for row in mixed)}/{len(mixed)}"
            )
    if r.get("b"):
        b = r["b"]
        parts.append(
            f"{b['params_m']:.0f}M-param state_dict {b['ours_s']:.1f} s vs full SVD {b['best_full_s']:.0f} s "
            f"({b['best_full_s'] / b['ours_s']:.1f}x), svds {b['svds_s']:.0f} s "
            f"({b['svds_s'] / b['ours_s']:.1f}x)"
            + (f", mixed {b['mixed_s']:.1f} s" if "mixed_s" in b else "")
        )
    if r.get("c"):
        c = r["c"]
        outs = ", ".join(
            f"{k.removeprefix('mup-wd-')} {v['report']['outcome']}" for k, v in c["rules"].items()
        )
        parts.append(f"llama {c['widths'][0]}-{c['widths'][-1]}: {outs}")
        two = c.get("two_rule_calibration")
        if two:
            ci = two["ci"]
            parts[-1] += f"; wd exponent {two['wd_exponent']:.2f}" + (
                f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
            )
    return "spectral: " + "; ".join(parts)


def _steps(row: dict) -> str:
    """Krylov steps: "30" (one phase), "19×4 + 7×2" (phases: steps × block size)."""
    phases = row.get("phases") or [[row.get("block", 2), row["iterations"]]]
    if len(phases) == 1:
        return str(phases[0][1])
    return " + ".join(str(st) if b == 1 else f"{st}×{b}" for b, st in phases)


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 0.01 else f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.2f} s"


def _report_from_dict(d: dict[str, Any]) -> Any:
    """A :class:`SpectralReport` rebuilt from its ``to_dict()`` (same fits and verdicts)."""
    from hptransfer.diagnostics.coord import CoordReport
    from hptransfer.diagnostics.fit import Thresholds
    from hptransfer.diagnostics.report import cross_width_report
    from hptransfer.diagnostics.spectral import LayerSpectrum

    spectra: dict[int, dict[str, LayerSpectrum]] = {}
    for row in d["layers"]:
        for w, sigma in row["sigma_max"].items():
            shape = tuple(row["shapes"][w])
            rms = sigma / row["spectral_to_rms"][w]
            fro = rms * math.sqrt(math.prod(shape))
            spectra.setdefault(int(w), {})[row["name"]] = LayerSpectrum(
                row["name"], row["layer_type"], shape, (sigma,), fro, 0.0
            )
    th = d["thresholds"]
    cal = d["calibration"]
    rep = cross_width_report(
        spectra,
        thresholds=Thresholds(th["alpha_tol"], th["ratio_low"], th["ratio_high"], th["confidence"]),
        gate=d["gate"],
        lr_exponent=None if cal is None else cal["trained_lr_exponent"],
        wd_exponent=None if cal is None else cal["trained_wd_exponent"],
        rule=d["rule"],
    )
    rep.timescales = None if d["timescales"] is None else float(d["timescales"])
    rep.history = {int(w): [(s, v) for s, v in h] for w, h in d["history"].items()}
    co = d.get("coord")
    if co is not None:
        rep.coord = CoordReport(
            widths=co["widths"],
            steps=co["steps"],
            data={int(w): v for w, v in co["data"].items()},
            slopes=co["slopes"],
            tolerance=co["tolerance"],
            rule=co["rule"],
        )
    return rep


def render(data: dict[str, Any], figures: Path) -> str:
    """docs/results-spectral.md (and its figures) from the results file."""
    from hptransfer.diagnostics.plots import plot_coord, plot_rules, plot_sigma_history, plot_sigma_vs_width

    r, env = data["results"], data["environment"]
    lines = [
        "# Spectral diagnostic: results",
        "",
        "`hptransfer diagnose` trains the proxy at several widths (or reads checkpoints), takes the top "
        "singular value σ_max of every weight matrix, fits `log σ_max = a + α·log d` per layer and "
        "says whether the hidden matrices stay width-invariant (exit 0), drift (exit 1) or whether the "
        "evidence is not enough to tell (exit 3; 2 is bad input). See README's diagnose section for "
        "the verdict rules.",
        "",
        f"Command: `{command_line(data)}` (whole run {r['seconds'] / 60:.1f} min; load average before "
        f"{', '.join(f'{x:.1f}' for x in r['load_before'])}, after "
        f"{', '.join(f'{x:.1f}' for x in r['load_after'])}). One torch thread for every timing"
        + (
            f", {r['blas_threads']} BLAS thread for numpy/scipy (`svds`; the script sets "
            "`OPENBLAS_NUM_THREADS` unless given)"
            if r.get("blas_threads")
            else " (numpy/scipy BLAS threads not recorded in this run)"
        )
        + "; timings are the minimum over repetitions, baselines measured in the same run.",
        "",
        f"Headline: `{headline_text(r)}`",
        "",
    ]
    if r.get("a"):
        a = r["a"]
        t = _target_rows(a)
        block = a[0]["block"]
        lines += [
            "## A. Top singular value: Lanczos vs full SVD vs ARPACK",
            "",
            f"`top_singular_values(A, 1, tol={r['tol']:g})` ("
            + ("single-vector Lanczos" if block == 1 else f"block {block}")
            + "). Full SVD: the faster "
            "of `torch.linalg.svdvals(A)` and `svdvals(A.mT)` (same values). ARPACK: `scipy.sparse.linalg."
            f"svds(A, k=1)` at its default tolerance (0: machine precision) and at tol {r['tol']:g}. "
            "Floor: the matrix products the iteration needed, timed alone. Reachable: best full / floor, "
            "the largest speed-up over the full SVD that any Krylov method needing that many products "
            "could reach. Errors relative to float64 `svds`; the bound is the residual bound the solver "
            "reports.",
            "",
            "| shape | matrix | ours | steps | error (bound) | floor | ours / floor | svdvals(A) | "
            "svdvals(A.mT) | vs best full | reachable | svds (error) | svds at tol (error) | "
            "vs svds at tol |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in a:
            m, n = row["shape"]
            lines.append(
                f"| {m}×{n} ({row['orientation']}) | {row['kind']} | {_ms(row['ours_s'])} | "
                f"{_steps(row)} | {row['ours_rel_err']:.1e} ({row['ours_bound_rel']:.0e}) | "
                f"{_ms(row['floor_s'])} | {row['ours_s'] / row['floor_s']:.1f}× | {_ms(row['svdvals_s'])} | "
                f"{_ms(row['svdvals_T_s'])} | **{row['best_full_s'] / row['ours_s']:.1f}×** | "
                f"{row['best_full_s'] / row['floor_s']:.0f}× | "
                f"{_ms(row['svds_s'])} ({row['svds_rel_err']:.0e}) | {_ms(row['svds_tol_s'])} "
                f"({row['svds_tol_rel_err']:.0e}) | **{row['svds_tol_s'] / row['ours_s']:.2f}×** |"
            )
        pairs = [row for row in a if "pair_numpy_s" in row and row["kind"] == "gaussian"]
        if pairs:
            ratios = [row["pair_torch_s"] / row["pair_numpy_s"] for row in pairs]
            lines += [
                "",
                "One product pair `A x`, `yᵀ A` (float32, one thread) with torch's BLAS against numpy's "
                "(which ARPACK calls) on this CPU: torch takes "
                + ", ".join(
                    f"{row['shape'][0]}×{row['shape'][1]} {row['pair_torch_s'] * 1e3:.2f} ms vs "
                    f"{row['pair_numpy_s'] * 1e3:.2f} ms"
                    for row in pairs
                )
                + f" ({min(ratios):.2f}-{max(ratios):.2f}× the time)"
                + (
                    ": where `svds` wins with more products, each of its products is cheaper here."
                    if min(ratios) > 1
                    else "."
                ),
            ]
        lines += [
            "",
            f"Targets (DESIGN, issue 13) at tol {r['tol']:g}, counted over the rows above:",
            "",
            *_target_lines(t, r["tol"]),
            "",
        ]
        lo = _at(a, "at_target")
        if lo:
            tl = _target_rows(lo)
            tt = r["tol_target"]
            lines += [
                f"### At tol {tt:g}, the accuracy the DESIGN target names",
                "",
                f'DESIGN states the 30× target "at ≤ {tt:g} relative error", while the table above runs at '
                f"tol {r['tol']:g} (`model_spectrum`'s and `diagnose`'s default), ten times tighter. The "
                f"target should be judged at {tt:g}, so the same matrices are measured there too (the "
                "full-SVD times are those above; ours, its floor and `svds` rerun at this tolerance).",
                "",
                "| shape | matrix | ours | steps | error (bound) | floor | ours / floor | vs best full | "
                "reachable | svds at tol (error) | vs svds at tol |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in lo:
                m, n = row["shape"]
                lines.append(
                    f"| {m}×{n} ({row['orientation']}) | {row['kind']} | {_ms(row['ours_s'])} | "
                    f"{_steps(row)} | {row['ours_rel_err']:.1e} ({row['ours_bound_rel']:.0e}) | "
                    f"{_ms(row['floor_s'])} | {row['ours_s'] / row['floor_s']:.1f}× | "
                    f"**{row['best_full_s'] / row['ours_s']:.1f}×** | "
                    f"{row['best_full_s'] / row['floor_s']:.0f}× | "
                    f"{_ms(row['svds_tol_s'])} ({row['svds_tol_rel_err']:.0e}) | "
                    f"**{row['svds_tol_s'] / row['ours_s']:.2f}×** |"
                )
            lines += ["", f"Targets at tol {tt:g}:", "", *_target_lines(tl, tt), ""]
        mixed = [row for row in a if "mixed_s" in row]
        if mixed:
            lines += [
                f'### `precision="mixed"` at tol {r["tol"]:g}',
                "",
                "A block-4 Krylov space from a bfloat16 copy (half the bytes per product) to "
                f"{r.get('mixed_rough_tol', TOL_TARGET):g}, then a float32 block of 2 from its vector, "
                "so the tolerance holds for the matrix itself. Steps: bfloat16 block steps × 4 + "
                "float32 block steps × 2.",
                "",
                "| shape | matrix | float32 | mixed | steps | error | mixed / float32 speed | "
                "vs best full | vs svds at tol |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for row in mixed:
                m, n = row["shape"]
                steps = _steps({"phases": row.get("mixed_phases"), "iterations": 0})
                lines.append(
                    f"| {m}×{n} ({row['orientation']}) | {row['kind']} | {_ms(row['ours_s'])} | "
                    f"{_ms(row['mixed_s'])} | {steps} | {row['mixed_rel_err']:.1e} | "
                    f"{row['ours_s'] / row['mixed_s']:.2f}× | "
                    f"**{row['best_full_s'] / row['mixed_s']:.1f}×** | "
                    f"**{row['svds_tol_s'] / row['mixed_s']:.2f}×** |"
                )
            n30 = sum(row["best_full_s"] / row["mixed_s"] >= 30 for row in mixed)
            nsv = sum(row["svds_tol_s"] > row["mixed_s"] for row in mixed)
            lines += [
                "",
                f'With `precision="mixed"`: ≥ 30× over the best full SVD in **{n30} of {len(mixed)}**, '
                f"faster than `svds` at equal tolerance in **{nsv} of {len(mixed)}**.",
                "",
            ]
    if r.get("b"):
        b = r["b"]
        lay = b["layout"]
        lines += [
            f"## B. Whole model: a {b['params_m']:.0f}M-parameter GPT-shaped state_dict",
            "",
            f"{lay['blocks']} blocks of d = {lay['d']}, vocab {lay['vocab']}, context {lay['ctx']}: "
            f"{b['params_m']:.0f}M parameters, {b['matrices']} matrices, init-like N(0, 0.02) entries "
            "(the slowest case for an iterative solver). `model_spectrum` batches same-shape matrices. "
            "Baselines are timed once per distinct shape and multiplied by the count.",
            "",
            "| method | time | time / ours |",
            "|---|---|---|",
            f"| `model_spectrum` (ours) | {b['ours_s']:.2f} s | 1× |",
            *(
                [
                    f'| `model_spectrum(..., precision="mixed")` | {b["mixed_s"]:.2f} s | '
                    f"{b['mixed_s'] / b['ours_s']:.2f}× |"
                ]
                if "mixed_s" in b
                else []
            ),
            f"| best of `svdvals(A)`, `svdvals(A.mT)` per matrix | {b['best_full_s']:.1f} s | "
            f"{b['best_full_s'] / b['ours_s']:.1f}× |",
            f"| `svds(k=1)` per matrix | {b['svds_s']:.1f} s | {b['svds_s'] / b['ours_s']:.1f}× |",
            "",
            f"Largest error of ours against float64 `svds` (one matrix per shape): {b['max_rel_err']:.1e}"
            + (f" (mixed: {b['mixed_max_rel_err']:.1e})." if "mixed_max_rel_err" in b else "."),
            "",
            "| shape | count | svdvals(A) | svdvals(A.mT) | svds |",
            "|---|---|---|---|---|",
        ]
        for s in b["shapes"]:
            lines.append(
                f"| {s['shape'][0]}×{s['shape'][1]} | {s['count']} | {_ms(s['svdvals_s'])} | "
                f"{_ms(s['svdvals_T_s'])} | {_ms(s['svds_s'])} |"
            )
        lines.append("")
    if r.get("c"):
        c = r["c"]
        reports = {k: _report_from_dict(v["report"]) for k, v in c["rules"].items()}
        lines += [
            "## C. The built-in llama proxy under two weight-decay rules",
            "",
            f"`diagnose('llama', {c['widths']})` with the CLI defaults (steps: 4 AdamW timescales at "
            f"the slowest width, per rule): base lr {c['lr']:g}, base wd {c['wd']:g} (torch AdamW), "
            "seed 0, one run per rule.",
            "",
            "| rule | steps | outcome (exit) | timescales covered | hidden σ_max ratio (pooled) | "
            "pooled α [95 % CI] | drifting | undecided | one-run e* | time |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, v in c["rules"].items():
            d = v["report"]
            p = d["pooled"] or {}
            ci = p.get("alpha_ci")
            cal = d["calibration"]
            lines.append(
                f"| {name} | {v['steps']} | {d['outcome']} ({d['exit_code']}) | "
                f"{float(d['timescales']):.1f} | "
                f"{p.get('ratio', float('nan')):.2f} | {p.get('alpha', float('nan')):+.3f}"
                + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
                + f" | {len(d['drifting'])} of {len(reports[name].gated())} | {len(d['inconclusive'])} | "
                + ("-" if cal is None else f"{cal['wd_exponent']:.2f}")
                + f" | {v['seconds']:.0f} s |"
            )
        two = c.get("two_rule_calibration")
        if two:
            ci = two["ci"]
            lines += [
                "",
                f"Two-rule calibration ({' & '.join(two['from_rules'])}): σ_max is width-invariant at wd ∝ "
                f"width^{two['wd_exponent']:.2f}"
                + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                + "; "
                + (
                    "precise enough to recommend."
                    if two["not_recommended_because"] is None
                    else f"not recommended: {two['not_recommended_because']}."
                ),
            ]
        missing = [(name, m) for name, v in c["rules"].items() for m in v["report"]["missing_evidence"]]
        if missing:
            lines += ["", "What each inconclusive run says would make it conclusive:", ""]
            lines += [f"* {name}: {m}" for name, m in missing]
        else:
            lines += ["", "Every run is conclusive (no missing evidence reported).", ""]
        for name, v in c["rules"].items():
            drifting = v["report"]["drifting"]
            if drifting:
                lines.append(f"* {name}: drifting {', '.join(drifting)}")
        lines.append("")
        figs = []
        for name, rep in reports.items():
            tag = name.replace("mup-wd-", "wd-")
            plot_sigma_vs_width(rep, figures / f"spectral_width_{tag}")
            figs.append((f"σ_max vs width, {name}", f"figures/spectral_width_{tag}.png"))
        first = next(iter(reports.values()))
        if first.history:
            plot_sigma_history(first, figures / "spectral_history")
            figs.append((f"σ_max over training, {first.rule}", "figures/spectral_history.png"))
        if len(reports) > 1:
            plot_rules(reports, figures / "spectral_rules")
            figs.insert(
                0, ("hidden σ_max relative to the narrowest width, per rule", "figures/spectral_rules.png")
            )
        if first.coord is not None:
            plot_coord(first.coord, figures / "spectral_coord")
            figs.append((f"coordinate check, {first.rule}", "figures/spectral_coord.png"))
        lines += ["Figures (PNG and SVG):", ""]
        for caption, path in figs:
            lines += [f"![{caption}]({path})", ""]
    lines += ["## Environment", "", environment_table(env), ""]
    return "\n".join(lines)


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    rows = []
    if r.get("a"):
        t = _target_rows(r["a"])
        lo = _at(r["a"], "at_target")
        tl = _target_rows(lo) if lo else None
        rows.append(
            (
                "top singular value ≥ 30× faster than the best full SVD, faster than `svds`, ≤ 3× the floor "
                "(wide/tall/square, 512-8192)",
                f"tol {r['tol']:g}: {t['full_min']:.1f}-{t['full_max']:.0f}× "
                f"({t['full_met']}/{t['n']} ≥ 30×; {t['full_met_reachable']}/{t['full_reachable']} "
                "of the rows where 30× is reachable); vs svds "
                f"{t['svds_min']:.2f}-{t['svds_max']:.2f}× ({t['svds_met']}/{t['n']} faster); floor "
                f"{t['floor_met']}/{t['n']} within 3×"
                + (
                    ""
                    if tl is None
                    else f"; tol {r['tol_target']:g}: {tl['full_met']}/{tl['n']} ≥ 30× "
                    f"({tl['full_met_reachable']}/{tl['full_reachable']} where reachable)"
                ),
                command_line(data),
            )
        )
    if r.get("b"):
        b = r["b"]
        rows.append(
            (
                f"whole {b['params_m']:.0f}M-parameter GPT-shaped state_dict, batched",
                f"{b['ours_s']:.1f} s vs full SVD {b['best_full_s']:.0f} s, svds {b['svds_s']:.0f} s",
                command_line(data),
            )
        )
    if r.get("c") and r["c"].get("two_rule_calibration"):
        two = r["c"]["two_rule_calibration"]
        ci = two["ci"]
        rows.append(
            (
                "wd width exponent that keeps σ_max flat on the llama proxy (linear = 1, sqrt = 0.5)",
                f"{two['wd_exponent']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""),
                command_line(data),
            )
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
