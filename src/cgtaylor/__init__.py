"""Confidence-Gated Taylor forecasting for diffusers diffusion transformers."""

from .api import apply_cg_taylor, cg_taylor_config, cg_taylor_stats, remove_cg_taylor, reset_cg_taylor
from .calibrate import (
    CalibrationReport,
    CalibrationResult,
    CalibrationWarning,
    TargetUnreachableError,
    calibrate_cg_taylor,
)
from .config import CGTaylorConfig
from .stats import CGTaylorStats, ContextTotals, StepRecord
from .step_scales import StepSensitivity, fit_step_scales
from .taylor import TaylorLadder

__all__ = [
    "CGTaylorConfig",
    "CalibrationReport",
    "CalibrationResult",
    "CalibrationWarning",
    "TargetUnreachableError",
    "CGTaylorStats",
    "ContextTotals",
    "StepRecord",
    "StepSensitivity",
    "TaylorLadder",
    "apply_cg_taylor",
    "calibrate_cg_taylor",
    "cg_taylor_config",
    "cg_taylor_stats",
    "fit_step_scales",
    "remove_cg_taylor",
    "reset_cg_taylor",
]
