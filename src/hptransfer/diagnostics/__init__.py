"""Is it safe to scale up? Spectral check, coordinate check and their figures.

* :func:`diagnose` / :func:`diagnose_checkpoints`: sigma_max of every weight matrix across
  proxy widths, per-layer fits and verdicts, calibrated weight-decay exponent
  (:class:`SpectralReport`).
* :func:`top_singular_values`, :func:`model_spectrum`: fast top-k singular values.
* :func:`coord_check`: the muP coordinate check.
* :mod:`~hptransfer.diagnostics.fit`: the pure-numpy fits, verdicts and calibration.

Importing this package imports torch; the torch-free command ``hptransfer suggest`` never
imports it (the CLI loads it inside ``diagnose`` only).

Example:
    >>> from hptransfer.diagnostics import diagnose
    >>> report = diagnose("llama", [32, 64, 128], rule="mup-wd-sqrt", steps=300)  # doctest: +SKIP
    >>> report.safe, report.summary()                                             # doctest: +SKIP
"""

from __future__ import annotations

from hptransfer.diagnostics.api import (
    Coverage,
    calibrate_from_reports,
    compare_rules,
    diagnose,
    diagnose_checkpoints,
    load_checkpoints,
    timescale_coverage,
)
from hptransfer.diagnostics.coord import CoordReport, coord_check
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
from hptransfer.diagnostics.report import (
    EXIT_CODES,
    DiagnosticError,
    SpectralReport,
    cross_width_report,
)
from hptransfer.diagnostics.spectral import (
    LayerSpectrum,
    NonFiniteWeightError,
    SpectralCache,
    model_spectrum,
    top_singular_values,
)

__all__ = [
    "EXIT_CODES",
    "Calibration",
    "CoordReport",
    "Coverage",
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
    "timescale_coverage",
    "top_singular_values",
    "verdict",
]
