"""Running the equal-footing comparison on one model: selection, test, paired intervals, verdicts.

``run_comparison(model_cfg, comparison_cfg, results_dir)`` -> DataFrame, one row per (entry, target speedup), written
to ``<results_dir>/comparison/<model>-<steps>steps.{csv,md}``. The protocol is :mod:`.protocol`; every evaluation is
kept on disk (:mod:`.evaluation`), so a stopped run resumes and a rerun only re-reads.

Columns: the chosen ``params`` and their selection ``selection_speedup`` / ``selection_psnr`` (mean dB) and whether
the choice is ``on_target``; the test set's ``test_speedup`` and mean ``test_psnr`` with its bootstrap 95% interval
(``test_psnr_low``/``high``), ``test_ssim``, ``test_rel_l2``; against the reference entry (CG-Taylor) at the same
target, the paired per-sample PSNR difference ``reference_minus_this`` with its interval and the ``verdict`` of the
reference against this entry (``ahead`` / ``level`` / ``behind``).
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import pandas as pd
import torch

from ..io import atomic_write_text
from .bootstrap import bootstrap_mean, paired_difference, verdict
from .evaluation import SettingEvaluator
from .keys import digest, weights_stamp
from .models import _plain, load_model
from .persistence import ensure_ignored
from .protocol import PROTOCOL_REVISION, Entry, EntrySearch
from .registry import spec
from .sample_sets import make_sample_sets
from .tables import to_markdown
from .workers import Worker

REFERENCE_GROUP = "cg-taylor"
COMPARISON_FIELDS = {"targets", "tolerance", "max_evaluations", "warmup_grid", "samples", "entries", "step_counts",
                     "variants", "lower_step_variants", "lower_step_tolerance", "reference_group", "resamples",
                     "calibration_conditions", "models"}


def check_comparison_cfg(cfg: dict) -> dict:
    unknown = sorted(set(cfg) - COMPARISON_FIELDS)
    if unknown:
        raise ValueError(f"comparison config has unknown field(s) {unknown}; accepted: {sorted(COMPARISON_FIELDS)}")
    targets = cfg.get("targets")
    if not targets or any(not isinstance(t, (int, float)) or isinstance(t, bool) or t <= 1 for t in targets):
        raise ValueError(f"comparison.targets must be a non-empty list of speedups > 1, got {targets!r}")
    for entry in cfg.get("entries") or []:
        only = entry.get("models")
        if only is not None and (isinstance(only, str) or not only or not all(isinstance(m, str) for m in only)):
            raise ValueError(f"comparison entry {entry.get('group', entry.get('method'))!r}: models must be a "
                             f"non-empty list of model names (e.g. [dit-digits]), got {only!r}")
    for field in ("tolerance", "lower_step_tolerance"):
        value = cfg.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 0.5):
            raise ValueError(f"comparison.{field} must be a number in (0, 0.5), got {value!r}")
    _check_variant_lists(cfg)
    return cfg


def _check_variant_lists(cfg: dict) -> None:
    variants = sorted({e.get("group", e.get("method")) for e in cfg.get("entries") or [] if e.get("role") == "variant"})
    lower_counts = any(counts for counts in (cfg.get("step_counts") or {}).values())
    # `variants` always applies; `lower_step_variants` only where a lower step count would run them (a trimmed entry
    # list may drop them)
    for field, applies in (("variants", True), ("lower_step_variants", lower_counts)):
        chosen = cfg.get(field)
        if chosen is None:
            continue
        if isinstance(chosen, str) or not all(isinstance(g, str) for g in chosen):
            raise ValueError(f"comparison.{field} must be a list of variant groups or null (every variant), "
                             f"got {chosen!r}")
        unknown = sorted(set(chosen) - set(variants))
        if unknown and applies:
            raise ValueError(f"comparison.{field} names {unknown}, which are not variant groups of the "
                             f"comparison; accepted: {variants}")


def default_steps(model_cfg: dict) -> int:
    """The model's own step count; any other step count in the comparison is a lower one (the harder regime)."""
    return int(model_cfg.get("num_inference_steps", 50))


def machine() -> str:
    return (f"{platform.machine()} {os.cpu_count()}-core CPU, torch {torch.__version__}, "
            f"diffusers {__import__('diffusers').__version__}")


def _entry_base(entry: Entry, method_params: dict) -> dict:
    """The model's parameters for the method (module patterns, orders) under the entry's own; the model's warm-up
    preset is dropped so that the shared warm-up grid decides it. A method without its own model parameters takes
    those of the method its registry entry names (the calibrated CG-Taylor takes CG-Taylor's)."""
    method = spec(entry.method)
    base = dict(method_params.get(entry.method) or method_params.get(method.model_params_of) or {})
    if method.warmup is not None:
        base.pop(method.warmup, None)
    base.update(entry.params)
    return base


def model_entries(comparison: dict, model_cfg: dict, lower_steps: bool = False) -> list[Entry]:
    """The comparison's entries that apply to a model: not skipped by one of its flags, not limited to others. The
    variants are the reference and those in ``variants`` (null: every variant), and at a lower step count than the
    model's default (``lower_steps``) only those also in ``lower_step_variants`` (null: no further limit); every peer
    runs."""
    reference_group = comparison.get("reference_group", REFERENCE_GROUP)
    kept_variants = comparison.get("variants")
    lower = comparison.get("lower_step_variants") if lower_steps else None
    if lower is not None:
        kept_variants = [g for g in lower if kept_variants is None or g in kept_variants]
    out = []
    for values in comparison["entries"]:
        values = dict(values)
        skip_if = values.pop("skip_if", None) or []
        only = values.pop("models", None)  # an entry that answers a question about some models only
        if any(model_cfg.get(flag) for flag in skip_if) or (only is not None and model_cfg["name"] not in only):
            continue
        preset = values.pop("preset", None)  # a named CGTaylorConfig preset: its form for the model's family
        if preset is not None:
            values["params"] = {**_preset_form(values, preset, model_cfg), **(values.get("params") or {})}
        entry = Entry.from_dict(values)
        if (kept_variants is not None and entry.role == "variant" and entry.group != reference_group
                and entry.group not in kept_variants):
            continue
        out.append(entry)
    return out


def _preset_form(values: dict, preset, model_cfg: dict) -> dict:
    """Every field of the preset but those the protocol searches (threshold, warm-up), for the model's family."""
    from ..presets import preset_form

    try:
        return preset_form(preset, str(model_cfg.get("kind")))
    except ValueError as error:
        raise ValueError(f"comparison entry {values.get('group', values.get('method'))!r}: preset: {error} "
                         f"(model {model_cfg.get('name')!r}, kind {model_cfg.get('kind')!r})") from None


class ModelComparison:
    def __init__(self, model_cfg: dict, comparison: dict, results_dir, steps: int | None = None,
                 cache_dir=None, progress: bool = True, worker: Worker | None = None):
        self.model_cfg = _plain(model_cfg)
        self.cfg = check_comparison_cfg(_plain(comparison))
        self.name = self.model_cfg["name"]
        self.steps = int(steps or default_steps(self.model_cfg))
        if self.steps < 2:
            raise ValueError(f"comparison steps must be >= 2, got {self.steps}")
        self.results_dir = Path(results_dir)
        samples = (self.cfg.get("samples") or {}).get(self.name)
        if samples is None:
            raise ValueError(f"comparison.samples has no entry for model {self.name!r}")
        self.samples = dict(samples)
        self.progress = progress
        self.worker = worker or Worker()  # several processes on one model: each searches its share of entries first
        self.warmup_grid = [int(w) for w in self.model_cfg.get("warmup_grid") or [1, 3, 6]]
        workload = {"model": {k: v for k, v in self.model_cfg.items() if k != "method_params"},
                    "weights": weights_stamp(self.model_cfg), "samples": self.samples, "steps": self.steps}
        self.workload_id = digest(workload, 10)
        base_cache = Path(cache_dir) if cache_dir else self.results_dir / "comparison" / ".cache"
        self.cache_dir = base_cache / f"{self.name}-{self.workload_id}"
        self.rows_dir = self.results_dir / "comparison" / "rows" / f"{self.name}-{self.steps}steps-{self.workload_id}"
        self.stem = f"{self.name}-{self.steps}steps"

    @property
    def lower_steps(self) -> bool:
        return self.steps != default_steps(self.model_cfg)

    @property
    def tolerance(self) -> float:
        """The landing tolerance: ``lower_step_tolerance`` at a lower step count, where a fixed schedule's speedups
        are coarser (25 steps: 25/8 = 3.125x is the nearest to 3x), else ``tolerance``."""
        lower = self.cfg.get("lower_step_tolerance") if self.lower_steps else None
        return float(lower if lower is not None else self.cfg.get("tolerance", 0.04))

    def entries(self) -> list[Entry]:
        return model_entries(self.cfg, self.model_cfg, lower_steps=self.lower_steps)

    def evaluated_params(self, group: str, shown: dict) -> dict:
        """A table's ``params`` cell with what it leaves out put back (the model's module patterns for the method):
        the setting as it was evaluated."""
        entry = next((e for e in self.entries() if e.group == group), None)
        if entry is None:
            raise ValueError(f"{self.stem}: no entry {group!r} in this comparison profile")
        base = _entry_base(entry, self.model_cfg.get("method_params") or {})
        return {**{k: v for k, v in base.items() if k in _HIDDEN_PARAMS}, **shown}

    def run(self) -> pd.DataFrame:
        from tqdm.auto import tqdm

        ensure_ignored(self.cache_dir.parent)
        self.worker.bind_device()
        model = load_model(self.model_cfg)
        selection, test = make_sample_sets(model, **self.samples)
        evaluator = SettingEvaluator(model, self.steps, self.cache_dir, self.rows_dir, self.cache_dir,
                                     int(self.cfg.get("calibration_conditions", 4)))
        entries = self.entries()
        order = self.worker.order(len(entries))
        done: dict[int, tuple] = {}
        bar = tqdm([entries[i] for i in order], desc=f"comparison {self.stem}", disable=not self.progress, dynamic_ncols=True)
        for position, entry in zip(order, bar):
            bar.set_postfix_str(entry.group)
            base = _entry_base(entry, self.model_cfg.get("method_params") or {})
            search = EntrySearch(entry, base, self.warmup_grid, evaluator, selection, self.cfg["targets"],
                                 self.tolerance, int(self.cfg.get("max_evaluations", 6)))
            chosen = search.run()
            done[position] = (entry, search, [(c, evaluator.evaluate(entry.method, c.params, test)) for c in chosen])
        reference_group = self.cfg.get("reference_group", REFERENCE_GROUP)
        reference_points = next((list(search.points.values()) for entry, search, _ in done.values()
                                 if entry.group == reference_group), [])
        rows = []
        for position in sorted(done):
            entry, search, results = done[position]
            rows += [self._row(entry, chosen, tested, len(search.points), reference_points) for chosen, tested in results]
        frame = add_verdicts(pd.DataFrame(rows), reference_group, int(self.cfg.get("resamples", 10000)))
        self.write(frame, dict(evaluator.cost(), threads=torch.get_num_threads()))
        return frame

    def _row(self, entry: Entry, chosen, tested: dict, evaluated: int, reference_points: list) -> dict:
        interval = bootstrap_mean(tested["psnr"])
        return {
            "model": self.name, "steps": self.steps, "group": entry.group, "method": entry.method, "role": entry.role,
            "target": chosen.target, "tolerance": self.tolerance, "params": json.dumps(_shown(chosen.params), sort_keys=True),
            "selection_speedup": chosen.speedup, "selection_psnr": chosen.psnr, "on_target": chosen.on_target,
            "edges": "; ".join(chosen.edges), "selection_points": evaluated,
            "near_miss": _near_miss_record(chosen.near_miss, reference_points),
            "test_speedup": tested["speedup"], "test_psnr": interval.mean, "test_psnr_low": interval.low,
            "test_psnr_high": interval.high, "test_ssim": sum(tested["ssim"]) / len(tested["ssim"]),
            "test_rel_l2": sum(tested["rel_l2"]) / len(tested["rel_l2"]), "n_test": len(tested["psnr"]),
            "test_psnr_per_sample": json.dumps([round(v, 4) for v in tested["psnr"]]), "caveat": entry.caveat,
            "machine": machine(), "protocol": PROTOCOL_REVISION,
        }

    def write(self, frame: pd.DataFrame, cost: dict) -> None:
        out = self.results_dir / "comparison"
        atomic_write_text(frame.to_csv(index=False), out / f"{self.stem}.csv")
        atomic_write_text(json.dumps(cost, indent=1), out / f"{self.stem}.cost.json")
        shown = [c for c in frame.columns if c not in ("test_psnr_per_sample", "machine")]
        text = [f"# Equal-footing comparison: {self.name}, {self.steps} steps\n",
                f"Machine: {machine()}. Selection and test sets: {self.samples}. Warm-up grid: {self.warmup_grid}.\n",
                f"Compute: {describe_cost(cost)}\n",
                to_markdown(frame, shown)]
        atomic_write_text("\n".join(text), out / f"{self.stem}.md")


def describe_cost(cost: dict) -> str:
    """One sentence on what a table's evaluations cost when they were computed (from ``<stem>.cost.json``)."""
    untimed = cost["evaluations"] - cost["timed_evaluations"]
    if not cost["timed_evaluations"]:
        return (f"not recorded: its {cost['evaluations']} evaluations were computed before evaluations recorded "
                "their time")
    minutes = (cost["evaluation_seconds"] + cost["reference_seconds"]) / 60
    text = (f"{minutes:.1f} CPU-minutes, at {cost.get('threads', 1)} torch thread(s) per process, for "
            f"{cost['timed_evaluations']} evaluations and {cost['timed_references']} full-compute references")
    if untimed:
        text += f"; {untimed} more evaluations were computed before evaluations recorded their time and are not counted"
    return text


_HIDDEN_PARAMS = ("mag_ratios", "coefficients", "cache_identifiers", "skip_predict_identifiers")


def _shown(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in _HIDDEN_PARAMS}


def add_verdicts(frame: pd.DataFrame, reference_group: str, resamples: int) -> pd.DataFrame:
    """Paired bootstrap of the reference group's per-sample PSNR minus each other group's, per target."""
    if frame.empty:
        return frame
    frame = frame.copy()
    for column in ("reference_minus_this", "difference_low", "difference_high"):
        frame[column] = math.nan
    frame["verdict"] = ""
    for target, part in frame.groupby("target"):
        reference = part[part["group"] == reference_group]
        if reference.empty:
            continue
        ours = json.loads(reference.iloc[0]["test_psnr_per_sample"])
        for index, row in part.iterrows():
            if row["group"] == reference_group:
                continue
            interval = paired_difference(ours, json.loads(row["test_psnr_per_sample"]), resamples=resamples)
            frame.loc[index, ["reference_minus_this", "difference_low", "difference_high"]] = (
                interval.mean, interval.low, interval.high)
            frame.loc[index, "verdict"] = _verdict(interval, reference.iloc[0], row)
    return frame


def _verdict(interval, reference: pd.Series, row: pd.Series) -> str:
    """The interval's verdict, or why none is given: a side whose selection did not land on the target, a caveat,
    test speedups so far apart that the side that ran slower (spent more FLOPs) could owe its verdict to that, or a
    peer whose grid could not land closer than just outside the tolerance with a setting that beat the reference
    there (compared with the reference's best setting at least as fast)."""
    off = [f"{name} off target ({side['selection_speedup']:.2f}x)" for name, side in (("reference", reference),
                                                                                      ("peer", row))
           if not bool(side["on_target"])]
    if isinstance(row.get("caveat"), str) and row["caveat"]:
        off.append("see the caveat on this method")
    if off:
        return "n/a: " + ", ".join(off)
    said = verdict(interval)
    near = near_miss(row)
    if said == "ahead" and near is not None:
        matched = near.get("reference_psnr_at_least_as_fast")
        if matched is None or near["selection_psnr"] > matched:
            against = ("no reference setting ran as fast" if matched is None else
                       f"the reference's best at least as fast: {matched:.1f}")
            return (f"n/a: a peer setting just outside the tolerance ({near['selection_speedup']:.2f}x) scored "
                    f"{near['selection_psnr']:.1f} dB on selection ({against})")
    ratio = float(reference["test_speedup"]) / float(row["test_speedup"])
    tolerance = float(row.get("tolerance", 0.04))
    speeds = f"{float(reference['test_speedup']):.2f}x against {float(row['test_speedup']):.2f}x on the test set"
    if ratio < 1 - tolerance and said in ("ahead", "level"):
        return f"n/a: reference slower ({speeds})"
    if ratio > 1 + tolerance and said in ("behind", "level"):
        return f"n/a: peer slower ({speeds})"
    return said


def _near_miss_record(near, reference_points: list) -> str:
    """The near miss with the reference's best selection score at a speedup at least as high as the near miss's
    (None where the reference never ran that fast): the two are then compared at no advantage to the reference."""
    if near is None:
        return ""
    faster = [p.psnr for p in reference_points if p.speedup >= near.speedup]
    return json.dumps({"params": _shown(near.params), "selection_speedup": near.speedup, "selection_psnr": near.psnr,
                       "reference_psnr_at_least_as_fast": max(faster) if faster else None}, sort_keys=True)


def near_miss(row: pd.Series) -> dict | None:
    value = row.get("near_miss")
    return json.loads(value) if isinstance(value, str) and value else None


def expected_groups(comparison: dict, model_cfgs: dict) -> dict:
    """(model, steps) -> the groups the comparison config gives that model, for every step count it runs."""
    out = {}
    for name, model_cfg in model_cfgs.items():
        model_cfg = _plain(model_cfg)
        own = default_steps(model_cfg)
        for steps in [own, *comparison.get("step_counts", {}).get(name, [])]:
            entries = model_entries(comparison, model_cfg, lower_steps=steps != own)
            out[(name, steps)] = [entry.group for entry in entries]
    return out


def run_comparison(model_cfg, comparison, results_dir, steps: int | None = None, cache_dir=None,
                   progress: bool = True, worker: Worker | None = None) -> pd.DataFrame:
    return ModelComparison(model_cfg, comparison, results_dir, steps, cache_dir, progress, worker).run()
