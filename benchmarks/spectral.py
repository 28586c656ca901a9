"""Spectral diagnostic benchmark: speed and accuracy of the top singular value, a whole-model
diagnostic, and the diagnostic on the built-in LM proxies trained under four width rules.

Parts (all in one run, baselines measured in the same run):

A. top singular value of a 2048×8192 matrix by block Lanczos vs ``torch.linalg.svdvals``
   (1 thread for both): a Gaussian matrix (clustered top spectrum, the hard case) and a
   "trained-like" one (noise plus a few outlier directions).
B. ``model_spectrum`` of a GPT-2-small-shaped state_dict (124M parameters, random init-like
   entries, the slowest case for an iterative solver) on 2 threads.
C. the built-in llama proxy trained at several widths under sp, mup (constant wd),
   mup-wd-sqrt and mup-wd-linear for several AdamW timescales tau = 1/(lr·wd): the sigma_max
   ratio smallest→largest width of the hidden matrices, which rules the diagnostic flags, and
   the calibrated weight-decay exponent.

Usage:
    python benchmarks/spectral.py                 # full run (~15-25 min on 1-2 CPU cores)
    python benchmarks/spectral.py --quick         # smoke run (seconds)
    python benchmarks/spectral.py --out docs/figures --json /tmp/spectral.json

The last printed line is the headline figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hptransfer.diagnostics import diagnose
from hptransfer.diagnostics.fit import calibrate_two_rules, law_alpha
from hptransfer.diagnostics.spectral import model_spectrum, top_singular_values
from hptransfer.models import builtin_config

RULES = ("sp", "mup", "mup-wd-sqrt", "mup-wd-linear", "auto")


def _timed(fn, repeat: int = 1):  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def part_a(m: int, n: int) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(m, n, generator=g)
    r = 4
    u = torch.linalg.qr(torch.randn(m, r, generator=g))[0]
    v = torch.linalg.qr(torch.randn(n, r, generator=g))[0]
    spiked = 0.02 * torch.randn(m, n, generator=g) + (u * torch.tensor([6.0, 5.0, 3.0, 2.0])) @ v.T
    out = {}
    for name, a in (("gaussian", gauss), ("trained-like", spiked)):
        t_full, s = _timed(lambda a=a: torch.linalg.svdvals(a))
        for precision in ("float32", "mixed"):
            t_ours, res = _timed(
                lambda a=a, p=precision: top_singular_values(
                    a, 1, precision=p, generator=torch.Generator().manual_seed(1)
                ),
                repeat=3,
            )
            err = abs(float(res.values[0]) - float(s[0])) / float(s[0])
            key = name if precision == "float32" else f"{name}/mixed"
            out[key] = {
                "svdvals_s": t_full,
                "ours_s": t_ours,
                "speedup": t_full / t_ours,
                "rel_err": err,
                "iterations": res.iterations,
                "error_bound_rel": float(res.error_bound[0]) / float(s[0]),
            }
            print(
                f"A {m}x{n} {name:12s} {precision:7s}: svdvals {t_full:.2f} s, block Lanczos "
                f"{t_ours * 1e3:.0f} ms ({res.iterations} steps) -> {t_full / t_ours:.0f}x faster, "
                f"rel. error {err:.1e} (bound {out[key]['error_bound_rel']:.1e})",
                flush=True,
            )
    return out


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


def part_b(blocks: int, d: int, vocab: int, ctx: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    sd = gpt_state_dict(blocks, d, vocab, ctx)
    n_params = sum(t.numel() for t in sd.values())
    t_mixed, spec_mixed = _timed(lambda: model_spectrum(sd, precision="mixed"))
    t, spec = _timed(lambda: model_spectrum(sd))
    # spot-check two matrices against full SVD
    errs = []
    for name in ("h.0.mlp.c_fc.weight", f"h.{blocks - 1}.attn.c_attn.weight"):
        exact = float(torch.linalg.svdvals(sd[name])[0])
        errs.append(abs(spec[name].sigma_max - exact) / exact)
        errs.append(abs(spec_mixed[name].sigma_max - exact) / exact)
    print(
        f"B GPT-shaped state_dict ({blocks} blocks, d={d}, vocab {vocab}): {n_params / 1e6:.0f}M params, "
        f"{len(spec)} matrices, top singular values in {t:.2f} s on {threads} thread(s) "
        f"({t_mixed:.2f} s with precision='mixed'; spot-check rel. error {max(errs):.1e})",
        flush=True,
    )
    torch.set_num_threads(1)
    return {
        "params_m": n_params / 1e6,
        "seconds": t,
        "seconds_mixed": t_mixed,
        "matrices": len(spec),
        "spot_rel_err": max(errs),
        "threads": threads,
    }


def part_c(
    widths: list[int],
    steps: int,
    wd: float,
    seq_len: int,
    batch: int,
    out: Path | None,
    rules: tuple[str, ...],
) -> dict[str, dict[str, object]]:
    torch.set_num_threads(1)
    cfg = replace(builtin_config("llama"), weight_decay=wd)
    results: dict[str, dict[str, object]] = {}
    reports = {}
    for rule in rules:
        run_cfg, run_rule = cfg, rule
        if rule == "auto":  # validate the two-rule calibration of this run
            if "two_rule_calibration" not in results:
                print("C auto: skipped (needs mup-wd-sqrt and mup-wd-linear first)")
                continue
            rule = f"custom:{results['two_rule_calibration']['wd_exponent']:.2f}"
        if rule.startswith("custom:"):
            e = float(rule.split(":", 1)[1])
            run_cfg, run_rule = cfg.with_rule("custom", wd_exponent=e), None
        t = time.perf_counter()
        rep = diagnose(
            "llama",
            widths,
            run_cfg,
            run_rule,
            steps,
            batch_size=batch,
            model_kwargs={"seq_len": seq_len},
            coord=True,
            record_every=max(1, steps // 20),
        )
        secs = time.perf_counter() - t
        rule = rep.rule or rule
        reports[rule] = rep
        hidden = rep.gated()
        ratios = [r.ratio for r in hidden if r.ratio is not None]
        assert rep.pooled is not None and rep.calibration is not None
        lr_e = rep.calibration.trained_lr_exponent
        wd_e = rep.calibration.trained_wd_exponent
        res = {
            "pooled_ratio": rep.pooled.ratio,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "alpha": rep.pooled.alpha,
            "alpha_ci": rep.pooled.ci,
            "law_alpha": law_alpha(lr_e, wd_e),
            "flagged": not rep.safe,
            "overall": str(rep.overall),
            "drifting": len(rep.drifting),
            "hidden": len(hidden),
            "calibrated_wd_exponent": rep.calibration.exponent,
            "calibrated_ci": rep.calibration.ci,
            "val_loss": rep.val_loss,
            "coord_unstable": rep.coord.unstable() if rep.coord else None,
            "seconds": secs,
            "tau_note": rep.notes[-1] if rep.notes else "",
        }
        results[rule] = res
        ci = rep.pooled.ci
        cal_ci = rep.calibration.ci
        print(
            f"C {rule:14s}: hidden sigma_max ratio {widths[0]}->{widths[-1]} = {rep.pooled.ratio:.2f} "
            f"(per layer {min(ratios):.2f}..{max(ratios):.2f}); alpha {rep.pooled.alpha:+.2f}"
            + (f" [{ci[0]:+.2f},{ci[1]:+.2f}]" if ci else "")
            + f" (law {res['law_alpha']:+.2f}); {'FLAGGED ' + str(rep.overall) if not rep.safe else 'safe'}"
            f" ({len(rep.drifting)}/{len(hidden)} layers); calibrated wd exponent "
            f"{rep.calibration.exponent:.2f}"
            + (f" [{cal_ci[0]:.2f},{cal_ci[1]:.2f}]" if cal_ci else "")
            + f"; val loss {' '.join(f'{v:.3f}' for v in rep.val_loss.values())}; {secs:.0f} s",
            flush=True,
        )
        if "mup-wd-sqrt" in reports and "mup-wd-linear" in reports and "two_rule_calibration" not in results:
            fa, fb = reports["mup-wd-sqrt"].pooled, reports["mup-wd-linear"].pooled
            assert fa is not None and fb is not None
            two = calibrate_two_rules(fa, 0.5, fb, 1.0)
            sens = (fb.alpha - fa.alpha) / 0.5
            results["two_rule_calibration"] = {"wd_exponent": two.exponent, "ci": two.ci, "sensitivity": sens}
            print(
                f"C two-rule calibration (sqrt & linear runs): alpha = 0 at wd exponent "
                f"{two.exponent:.2f}"
                + (f" [{two.ci[0]:.2f},{two.ci[1]:.2f}]" if two.ci else "")
                + f"; measured d(alpha)/d(e) = {sens:+.2f} (the law says -0.50)",
                flush=True,
            )
        if out is not None:
            from hptransfer.diagnostics.plots import plot_sigma_history, plot_sigma_vs_width

            tag = rule.replace("mup-wd-", "wd-")
            plot_sigma_vs_width(rep, out / f"spectral_width_{tag}")
            plot_sigma_history(rep, out / f"spectral_history_{tag}")
    results["reports"] = {rule: rep.to_dict() for rule, rep in reports.items()}  # type: ignore[assignment]
    if out is not None and len(reports) > 1:
        from hptransfer.diagnostics.plots import plot_rules

        plot_rules(reports, out / "spectral_rules")
        if "mup-wd-sqrt" in reports and reports["mup-wd-sqrt"].coord is not None:
            from hptransfer.diagnostics.plots import plot_coord

            plot_coord(reports["mup-wd-sqrt"].coord, out / "spectral_coord_wd-sqrt")
            if reports.get("sp") is not None and reports["sp"].coord is not None:
                plot_coord(reports["sp"].coord, out / "spectral_coord_sp")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, few steps")
    ap.add_argument("--widths", default=None, help="proxy widths for part C (default 32,64,128,256)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per width (default 800)")
    ap.add_argument("--wd", type=float, default=1.0, help="base weight decay (torch AdamW convention)")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--out", type=Path, default=None, help="folder for figures (PNG+SVG)")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers here")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 'a,b'")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for part B (default 1: on a shared machine 2 threads can be far slower than 1)",
    )
    args = ap.parse_args(argv)
    skip = set(args.skip.split(",")) if args.skip else set()
    torch.manual_seed(0)
    if args.quick:
        shape, gpt = (256, 1024), (2, 128, 2000, 256)
        widths, steps, seq, batch = [16, 32], 6, 16, 4
        rules = ("sp", "mup-wd-sqrt", "mup-wd-linear", "auto")
    else:
        shape, gpt = (2048, 8192), (12, 768, 50257, 1024)
        widths, steps, seq, batch = [32, 64, 128, 256], 800, 32, 16
        rules = tuple(r for r in args.rules.split(",") if r)
    if args.widths:
        widths = [int(w) for w in args.widths.split(",")]
    if args.steps:
        steps = args.steps
    record: dict[str, object] = {"argv": sys.argv[1:], "quick": args.quick}
    a = part_a(*shape) if "a" not in skip else None
    b = part_b(*gpt, args.threads) if "b" not in skip else None
    c = part_c(widths, steps, args.wd, seq, batch, args.out, rules) if "c" not in skip else None
    record.update(
        {
            "a": a,
            "b": b,
            "c": c,
            "widths": widths,
            "steps": steps,
            "wd": args.wd,
            "seq_len": seq,
            "batch": batch,
        }
    )
    if args.json:
        args.json.write_text(json.dumps(record, indent=2, default=str))
    parts = []
    if a:

        def best(kind: str) -> dict[str, float]:
            return max(
                (v for k, v in a.items() if k.split("/")[0] == kind and v["rel_err"] <= 1e-3),
                key=lambda v: v["speedup"],
                default=a[kind],
            )

        g, t = best("gaussian"), best("trained-like")
        parts.append(
            f"top-sigma {shape[0]}x{shape[1]}: {g['speedup']:.0f}x (gaussian, "
            f"err {g['rel_err']:.0e}) / {t['speedup']:.0f}x (trained-like, "
            f"err {t['rel_err']:.0e}) faster than svdvals"
        )
    if b:
        parts.append(
            f"{b['params_m']:.0f}M-param state_dict in {b['seconds']:.1f} s "
            f"({b['seconds_mixed']:.1f} s mixed; {b['threads']} thread)"
        )
    if c:
        runs = {r: v for r, v in c.items() if r not in ("two_rule_calibration", "reports")}
        ratios = ", ".join(
            f"{r} {v['pooled_ratio']:.2f}{'*' if v['flagged'] else ''}" for r, v in runs.items()
        )
        text = f"hidden sigma_max ratio {widths[0]}->{widths[-1]} ({ratios}; * = flagged)"
        two = c.get("two_rule_calibration")
        if two:
            text += f"; calibrated wd exponent {two['wd_exponent']:.2f}"
            if two["ci"]:
                text += f" [{two['ci'][0]:.2f},{two['ci'][1]:.2f}]"
        parts.append(text)
    print("spectral: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
