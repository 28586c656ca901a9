"""Is it safe to scale up? Spectral check, coordinate check and their figures.

* :func:`diagnose` / :func:`diagnose_checkpoints`: sigma_max of every weight matrix across
  proxy widths, per-layer fits and verdicts, calibrated weight-decay exponent
  (:class:`SpectralReport`).
* :func:`top_singular_values`, :func:`model_spectrum`: fast top-k singular values.
* :func:`coord_check`: the muP coordinate check.
* :mod:`~hptransfer.diagnostics.fit`: the pure-numpy fits, verdicts and calibration.

The torch-facing names load lazily, so ``import hptransfer.diagnostics`` stays light.

Example:
    >>> from hptransfer.diagnostics import diagnose
    >>> report = diagnose("llama", [32, 64, 128], rule="mup-wd-sqrt", steps=300)  # doctest: +SKIP
    >>> report.safe, report.summary()                                             # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from hptransfer.diagnostics.fit import (
    Calibration,
    PowerLawFit,
    Thresholds,
    Verdict,
    calibrate_two_rules,
    calibrate_wd_exponent,
    fit_power_law,
    pooled_fit,
    verdict,
)
from hptransfer.diagnostics.report import DiagnosticError, SpectralReport, cross_width_report

_LAZY = {
    "diagnose": "hptransfer.diagnostics.api",
    "diagnose_checkpoints": "hptransfer.diagnostics.api",
    "load_checkpoints": "hptransfer.diagnostics.api",
    "compare_rules": "hptransfer.diagnostics.api",
    "calibrate_from_reports": "hptransfer.diagnostics.api",
    "top_singular_values": "hptransfer.diagnostics.spectral",
    "model_spectrum": "hptransfer.diagnostics.spectral",
    "LayerSpectrum": "hptransfer.diagnostics.spectral",
    "NonFiniteWeightError": "hptransfer.diagnostics.spectral",
    "SpectralCache": "hptransfer.diagnostics.spectral",
    "coord_check": "hptransfer.diagnostics.coord",
    "CoordReport": "hptransfer.diagnostics.coord",
}

__all__ = [
    "Calibration",
    "CoordReport",
    "DiagnosticError",
    "LayerSpectrum",
    "NonFiniteWeightError",
    "PowerLawFit",
    "SpectralCache",
    "SpectralReport",
    "Thresholds",
    "Verdict",
    "calibrate_from_reports",
    "calibrate_two_rules",
    "calibrate_wd_exponent",
    "compare_rules",
    "coord_check",
    "cross_width_report",
    "diagnose",
    "diagnose_checkpoints",
    "fit_power_law",
    "load_checkpoints",
    "model_spectrum",
    "pooled_fit",
    "top_singular_values",
    "verdict",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hptransfer.diagnostics' has no attribute {name!r}")
