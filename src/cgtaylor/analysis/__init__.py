"""What the notebooks compute: gate runs, error correlations, and their plots. Notebooks only call these."""

from .correlation import INDICATORS, collect_error_records, correlation_table, correlation_with_ci
from .gate_run import GateRun, run_gate

__all__ = [
    "GateRun",
    "INDICATORS",
    "collect_error_records",
    "correlation_table",
    "correlation_with_ci",
    "run_gate",
]
