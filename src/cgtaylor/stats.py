"""What the accelerator did: one record per (cache context, step), and totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StepRecord:
    context: str
    step: int
    timestep: float | None
    computed: bool
    reason: str
    first_block_error: float | None = None
    # Filled in analysis mode only (every step computed, the gate's decision recorded):
    would_compute: bool | None = None
    last_block_error: float | None = None
    first_block_change: float | None = None
    last_block_change: float | None = None
    # The gate variants (cgtaylor.threshold_schedule, cgtaylor.gate_scope, cgtaylor.error_feedback):
    threshold: float | None = None  # the threshold the error was compared with (threshold_schedule moves it)
    sample_errors: list[float] | None = None  # gate_scope="per_sample": each sample's error (the gate used the max)
    feedback_gamma: float | None = None  # error_feedback="scale": the mean of the per-sample scales


@dataclass
class ContextTotals:
    context: str
    steps: int
    computed_steps: int
    forecast_steps: int
    cache_bytes: int

    @property
    def forecast_fraction(self) -> float:
        return self.forecast_steps / self.steps if self.steps else 0.0


@dataclass
class CGTaylorStats:
    records: list[StepRecord] = field(default_factory=list)
    cache_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def contexts(self) -> list[str]:
        return list(dict.fromkeys(r.context for r in self.records))

    def for_context(self, context: str) -> list[StepRecord]:
        return [r for r in self.records if r.context == context]

    def totals(self) -> dict[str, ContextTotals]:
        result = {}
        for context in self.contexts:
            rows = self.for_context(context)
            computed = sum(r.computed for r in rows)
            result[context] = ContextTotals(
                context, len(rows), computed, len(rows) - computed, self.cache_bytes.get(context, 0)
            )
        return result

    @property
    def computed_steps(self) -> int:
        return sum(r.computed for r in self.records)

    @property
    def forecast_steps(self) -> int:
        return sum(not r.computed for r in self.records)

    @property
    def total_cache_bytes(self) -> int:
        return sum(self.cache_bytes.values())

    def to_dataframe(self):
        import pandas as pd

        columns = list(StepRecord.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self.records], columns=columns)

    def summary(self) -> str:
        lines = []
        for t in self.totals().values():
            lines.append(
                f"{t.context}: {t.computed_steps}/{t.steps} steps computed, {t.forecast_steps} forecast, "
                f"cache {t.cache_bytes / 2**20:.2f} MiB"
            )
        return "\n".join(lines) if lines else "no steps recorded"
