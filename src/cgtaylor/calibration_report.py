"""What a CG-Taylor calibration reports: each probe run (:class:`Trial`), the outcome (:class:`CalibrationReport`,
with a readable ``summary()``), and the warning or error for a target the probe set cannot reach."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import CGTaylorConfig


class CalibrationWarning(UserWarning):
    """The target cannot be reached on the probe set; the report names the best reachable value."""


class TargetUnreachableError(ValueError):
    def __init__(self, message: str, report: "CalibrationReport"):
        super().__init__(message)
        self.report = report


@dataclass
class Trial:
    """One probe generation at ``threshold`` (threshold 0 is the reference: not run, cost 0)."""

    threshold: float
    speedup: float  # reference FLOPs / this run's FLOPs
    psnr_min: float  # worst per-sample PSNR against the reference (dB)
    psnr: float  # PSNR over the whole probe batch (dB)
    flops: int
    computed_steps: int
    total_steps: int
    cost: float  # flops / reference flops
    same_above: float = 0.0  # every threshold in (same_above, same_upto] takes the same decisions on this probe
    same_upto: float = 0.0


@dataclass
class CalibrationReport:
    target: str  # "target_speedup" | "min_psnr"
    target_value: float
    reached: bool
    threshold: float
    speedup: float  # on the probe set, of the returned config
    psnr_min: float  # worst per-sample PSNR on the probe set (dB), of the returned config
    psnr: float
    generations: int  # probe generations run, the reference included
    cost: float  # their FLOPs in full-generation equivalents (sum of flops / reference flops)
    max_cost: float
    reference_flops: int
    best_reachable: float | None = None  # set when the target is not reached: best speedup / PSNR floor reachable
    message: str = ""
    trials: list[Trial] = field(default_factory=list)  # in the order run

    @property
    def threshold_trace(self) -> list[float]:
        return [t.threshold for t in self.trials]

    def summary(self) -> str:
        unit = "x" if self.target == "target_speedup" else " dB"
        lines = [
            f"CG-Taylor calibration for {self.target} = {self.target_value:g}{unit}: "
            + ("reached" if self.reached else "NOT reached"),
            f"  threshold {self.threshold:.6g}: probe speedup {self.speedup:.3f}x, worst-sample PSNR "
            f"{self.psnr_min:.2f} dB (batch {self.psnr:.2f} dB)",
            f"  search: {self.generations} generations, cost {self.cost:.2f} full-generation equivalents "
            f"(limit {self.max_cost:g})",
            "  trace: " + ", ".join(f"{t.threshold:.4g} -> {t.speedup:.2f}x/{t.psnr_min:.1f} dB" for t in self.trials),
        ]
        if self.message:
            lines.append("  " + self.message)
        return "\n".join(lines)


@dataclass
class CalibrationResult:
    config: CGTaylorConfig
    report: CalibrationReport
