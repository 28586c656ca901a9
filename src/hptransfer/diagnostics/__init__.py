"""Is it safe to scale up? Spectral check, coordinate check and their figures.

* :func:`diagnose` / :func:`diagnose_checkpoints`: sigma_max of every weight matrix across
  proxy widths, per-layer fits and verdicts, calibrated weight-decay exponent, pooled and per
  component (attention, MLP, readout), AdamW timescales each run covered
  (:class:`SpectralReport`).
* :func:`spectral_condition`: one model's matrices against the spectral condition
  ``sigma_max ≈ sqrt(fan_out/fan_in)`` (a first look at one width).
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
    calibrate_classes_from_reports,
    calibrate_from_reports,
    compare_rules,
    component_exponents,
    diagnose,
    diagnose_checkpoints,
    load_checkpoints,
    run_timescales,
    timescale_coverage,
)
from hptransfer.diagnostics.components import COMPONENTS, component
from hptransfer.diagnostics.condition import FAR_FACTOR, ConditionRow, spectral_condition
from hptransfer.diagnostics.coord import CoordReport, coord_check
from hptransfer.diagnostics.fit import (
    Calibration,
    PowerLawFit,
    Thresholds,
    TrainedExponents,
    Verdict,
    calibrate_class,
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
    "COMPONENTS",
    "EXIT_CODES",
    "FAR_FACTOR",
    "Calibration",
    "ConditionRow",
    "CoordReport",
    "Coverage",
    "DiagnosticError",
    "LayerSpectrum",
    "NonFiniteWeightError",
    "PowerLawFit",
    "SpectralCache",
    "SpectralReport",
    "Thresholds",
    "TrainedExponents",
    "Verdict",
    "calibrate_class",
    "calibrate_classes_from_reports",
    "calibrate_from_reports",
    "calibrate_two_rules",
    "calibrate_wd_exponent",
    "compare_rules",
    "component",
    "component_exponents",
    "coord_check",
    "cross_width_report",
    "diagnose",
    "diagnose_checkpoints",
    "fit_power_law",
    "load_checkpoints",
    "model_spectrum",
    "pooled_fit",
    "run_timescales",
    "spectral_condition",
    "timescale_coverage",
    "top_singular_values",
    "verdict",
]
