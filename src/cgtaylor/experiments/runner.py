"""Running one table: rows of (method, setting) on one model, measured against ``full``.

``run_table(cfg) -> pandas.DataFrame`` takes a composed Hydra config (``conf/config.yaml``) and:

1. loads the model (:func:`.models.load_model`) and the profile's workload (conditions x seeds x steps);
2. computes (or reads from ``<cache_dir>``) the full-compute reference of each seed: output and FLOPs;
3. expands the table's entries into rows (method defaults <- model-specific patterns <- entry params <- sweep point);
4. for each row not already finished: samples with the method under FLOP counting (transformer calls actually run;
   :class:`MemoFlops`, checked against ``FlopCounterMode`` on the reference) and a cache-memory meter, scores fidelity against the reference and the zoo evaluator, then times full and the
   method interleaved (``profile.wallclock_repeats`` pairs, medians);
5. writes each finished row atomically (``<results_dir>/tables/rows/<table>/<workload>/<key>.json``) and rebuilds
   ``<results_dir>/tables/<table>.csv`` and ``.md``. A killed run restarts where it stopped.

A row whose FLOPs are not below ``full``'s has ``valid = False`` (and a ``note``); summaries skip it.
``cg-taylor`` rows also carry the per-call overhead of a forecast step against its FLOPs share (the ideal).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import _diffusers
from ..blocks import find_blocks
from ..checks import positive_int
from ..io import (atomic_torch_save, atomic_write_text, computed_once, file_lock, lock_path, read_json_record,
                  read_torch_record)
from ..metrics import fidelity, flop_counter, input_signature
from . import hooks as skip_hooks
from .methods import METHOD_NAMES, make_generator
from .models import _plain, evaluate_samples, load_model
from .tables import write_table
from .workers import Worker

# ----------------------------------------------------------------------------------------------------------------------
# Small utilities
# ----------------------------------------------------------------------------------------------------------------------
ROW_KEYS = ("key", "method", "group", "setting")  # a row file without them is damaged: recomputed
REFERENCE_KEYS = ("output", "flops", "calls", "memo_flops_exact")


def _digest(value, n: int = 12) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:n]


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "device": "cpu",
    }


class PerCallFlops:
    """FLOPs of each call of ``module`` (as ``cgtaylor.metrics.ModuleFlops``, one number per call)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.calls: list[int] = []
        self._active: list[FlopCounterMode] = []
        self._handles = []

    def __enter__(self):
        def enter(module, args):
            self._active.append(flop_counter())
            self._active[-1].__enter__()

        def leave(module, args, output):
            counter = self._active.pop()
            counter.__exit__(None, None, None)
            self.calls.append(counter.get_total_flops())

        self._handles = [self.module.register_forward_pre_hook(enter), self.module.register_forward_hook(leave)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()

    @property
    def total(self) -> int:
        return sum(self.calls)


class MemoFlops:
    """The same per-call FLOPs as :class:`PerCallFlops`, several times cheaper on long runs.

    ``FlopCounterMode`` routes every op through Python; here each leaf module (and each module with a ``processor``,
    i.e. diffusers' attention, for the attention product outside its leaves) is counted with ``FlopCounterMode`` the
    first time it runs on given input shapes, and the count is reused afterwards. A module that returns without
    running its children (a forecast) counts nothing. The runner checks it against ``PerCallFlops`` on the full
    reference and falls back to ``PerCallFlops`` where the two disagree.
    """

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.calls: list[int] = []
        self._memo: dict = {}
        self._handles = []
        self._stack: list = []
        self._leaf_runs = 0
        self._current = 0

    def __enter__(self):
        units = [m for m in self.module.modules() if not list(m.children())]
        composites = [m for m in self.module.modules() if list(m.children()) and hasattr(m, "processor")]

        def hooked(module) -> bool:  # a diffusers hook may replace its forward (e.g. a TaylorSeer forecast)
            registry = _diffusers.hook_registry(module)
            return registry is not None and bool(registry.hooks)

        def pre(module, args, kwargs):
            key = (id(module), input_signature(args, kwargs))
            counter = None
            if key not in self._memo or (not list(module.children()) and hooked(module)):
                counter = flop_counter()
                counter.__enter__()
            self._stack.append((key, counter, self._leaf_runs, self._current))

        def post_leaf(module, args, kwargs, output):
            key, counter, _, _ = self._stack.pop()
            if counter is not None:
                counter.__exit__(None, None, None)
                flops = counter.get_total_flops()
                if not hooked(module):
                    self._memo[key] = flops
            else:
                flops = self._memo[key]
            self._current += flops
            if flops:
                self._leaf_runs += 1

        def post_composite(module, args, kwargs, output):
            key, counter, leaf_runs_before, current_before = self._stack.pop()
            children = self._current - current_before
            if counter is not None:
                counter.__exit__(None, None, None)
                if self._leaf_runs > leaf_runs_before:
                    self._memo[key] = counter.get_total_flops() - children
            if self._leaf_runs > leaf_runs_before and key in self._memo:  # it computed (not a forecast)
                self._current += self._memo[key]

        for unit in units:
            self._handles.append(unit.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(unit.register_forward_hook(post_leaf, with_kwargs=True))
        for composite in composites:
            self._handles.append(composite.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(composite.register_forward_hook(post_composite, with_kwargs=True))

        def begin(module, args):
            self._current = 0

        def end(module, args, output):
            self.calls.append(self._current)

        self._handles.append(self.module.register_forward_pre_hook(begin))
        self._handles.append(self.module.register_forward_hook(end))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def total(self) -> int:
        return sum(self.calls)


class CallTimer:
    """Wall time of each call of ``module``."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.times: list[float] = []
        self._start = 0.0
        self._handles = []

    def __enter__(self):
        def enter(module, args):
            self._start = time.perf_counter()

        def leave(module, args, output):
            self.times.append(time.perf_counter() - self._start)

        self._handles = [self.module.register_forward_pre_hook(enter), self.module.register_forward_hook(leave)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()


class FullStepCounter:
    """How many steps ran the network in full: calls of the linear layers of a middle block (the fewest-called one,
    so that modules forecast by TaylorSeer count as not computed), per transformer call."""

    def __init__(self, transformer: torch.nn.Module):
        blocks = find_blocks(transformer).blocks
        block = blocks[len(blocks) // 2]
        self.transformer = transformer
        self.leaves = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
        self.counts = [0] * len(self.leaves)
        self.calls = 0
        self._handles = []

    def __enter__(self):
        def counter(index):
            def hook(module, args):
                self.counts[index] += 1

            return hook

        self._handles = [leaf.register_forward_pre_hook(counter(i)) for i, leaf in enumerate(self.leaves)]

        def call(module, args):
            self.calls += 1

        self._handles.append(self.transformer.register_forward_pre_hook(call))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()

    def full_steps(self, trajectories: int, steps: int) -> float:
        """Full steps per trajectory (and per cache context when a step makes several calls, e.g. Wan's CFG)."""
        if not self.calls or not self.leaves:
            return float("nan")
        contexts = self.calls / (trajectories * steps)
        return min(self.counts) / trajectories / contexts


# ----------------------------------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------------------------------


def _sweep_points(sweep: dict | None, mode: str) -> list[dict]:
    if not sweep:
        return [{}]
    keys = list(sweep)
    values = [v if isinstance(v, list) else [v] for v in sweep.values()]
    points = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    if mode == "first":
        return points[:1]
    return points


def _format_value(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)


def expand_rows(table_cfg: dict, model_cfg: dict, profile_cfg: dict, only_method: dict | None = None) -> list[dict]:
    """The rows of a table: one per (entry, sweep point), each a dict with method, group, setting, params."""
    methods = table_cfg.get("methods") or {}
    mode = profile_cfg.get("sweep", "default")
    rows = []
    for entry in table_cfg["entries"]:
        method = entry["method"]
        if method not in METHOD_NAMES:
            raise ValueError(f"table {table_cfg['name']}: unknown method {method!r}; available {list(METHOD_NAMES)}")
        if only_method is not None and method != only_method["name"]:
            continue
        base = dict((methods.get(method) or {}).get("params") or {})
        model_params = model_cfg.get("method_params") or {}
        if method == "cg-taylor-target":  # the model's CG-Taylor settings (orders, warm-up) apply as for cg-taylor
            base.update(model_params.get("cg-taylor") or {})
        base.update(model_params.get(method) or {})
        base.update(entry.get("params") or {})
        if only_method is not None:
            base.update(only_method.get("params") or {})
            points = [{}]
        else:
            sweep = entry.get("default_sweep") if mode == "default" and entry.get("default_sweep") else entry.get("sweep")
            sweep = sweep or (methods.get(method) or {}).get("sweep")
            points = _sweep_points(sweep, mode)
        if entry.get("skip_if") and any(model_cfg.get(flag) for flag in entry["skip_if"]):
            continue
        for point in points:
            params = dict(base, **point)
            shown = dict(entry.get("show") or {}, **point)
            if only_method is not None:
                shown.update(only_method.get("params") or {})
            setting = " ".join(f"{k}={_format_value(v)}" for k, v in shown.items()) or "default"
            rows.append(
                {
                    "method": method,
                    "group": entry.get("group", method),
                    "setting": setting,
                    "params": params,
                }
            )
    seen, unique = set(), []
    for row in rows:  # the same method+params in two groups is measured once per group
        key = (row["group"], row["method"], json.dumps(row["params"], sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def row_key(row: dict) -> str:
    return f"{row['method']}-{_digest([row['group'], row['method'], row['params']])}"


# ----------------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------------


class TableRunner:
    def __init__(self, cfg):
        self.cfg = _plain(cfg)
        self.table = self.cfg["table"]
        self.model_cfg = self.cfg["model"]
        self.profile = dict(self.cfg["profile"])
        # a table may lighten a profile for an expensive model (e.g. fewer videos for Wan)
        self.profile.update((self.table.get("profile_overrides") or {}).get(self.profile.get("name"), {}) or {})
        self.only_method = self.cfg.get("method")
        self.results_dir = Path(self.cfg.get("results_dir", "results"))
        self.tables_dir = self.results_dir / "tables"
        self.cache_dir = Path(self.cfg.get("cache_dir") or self.tables_dir / ".cache")
        self.progress = bool(self.cfg.get("progress", True))
        steps_from = "profile" if self.profile.get("num_inference_steps") is not None else "model"
        steps = (self.profile if steps_from == "profile" else self.model_cfg).get("num_inference_steps", 50)
        self.steps = positive_int(f"{steps_from}.num_inference_steps", steps)
        self.seeds = [int(s) for s in self.profile.get("seeds", [0])]
        self.num_conditions = int(self.profile.get("num_conditions", 8))
        self.repeats = int(self.profile.get("wallclock_repeats", 2))
        self.evaluate = bool(self.profile.get("evaluate", True))
        self.worker = Worker.parse(self.cfg.get("worker"))  # several processes on one table: own share of rows first
        self._model = None
        self._workload = None

    # --- workload -----------------------------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            if self.cfg.get("threads"):
                torch.set_num_threads(int(self.cfg["threads"]))
            _ = self.workload  # stamp the weights before reading them
            self.worker.bind_device()
            self._model = load_model(self.model_cfg)
        return self._model

    @property
    def workload(self) -> dict:
        if self._workload is None:  # fixed for the run, even if the weights file changes under it
            identity = {k: v for k, v in self.model_cfg.items() if k not in ("method_params",)}
            self._workload = {"model": identity, "conditions": self.num_conditions, "seeds": self.seeds,
                              "steps": self.steps, "weights": _weights_stamp(self.model_cfg)}
        return self._workload

    def calibration_file(self, method: str) -> Path:
        """Where a calibrated method (MagCache, TeaCache, CG-Taylor with a target) keeps what it fitted on this
        model: keyed by the model, its weights and the step count, so retrained weights are calibrated afresh."""
        key = _digest({"model": self.workload["model"], "weights": self.workload["weights"], "steps": self.steps}, 10)
        return self.cache_dir / self.model_cfg["name"] / f"{method}-calibration-{self.steps}-{key}.json"

    @property
    def workload_id(self) -> str:
        return f"{self.profile.get('name', 'custom')}-{_digest(self.workload, 10)}"

    def conditions(self):
        return self.model.default_conditions(self.num_conditions, seed=0)

    def rows_dir(self) -> Path:
        return self.tables_dir / "rows" / self.table["name"] / self.workload_id

    def reference(self, seed: int) -> dict:
        path = self.cache_dir / self.model_cfg["name"] / f"full-{_digest(self.workload, 10)}-seed{seed}.pt"
        _ensure_ignored(self.cache_dir)
        return computed_once(path, lambda p: read_torch_record(p, REFERENCE_KEYS), lambda: self._full_reference(seed),
                             atomic_torch_save)

    def _full_reference(self, seed: int) -> dict:
        transformer = self.model.transformer
        skip_hooks.remove_all_hooks(transformer)
        with PerCallFlops(transformer) as flops, MemoFlops(transformer) as memo:
            output = self.model(self.conditions(), num_inference_steps=self.steps, seed=seed)
        start = time.perf_counter()
        self.model(self.conditions(), num_inference_steps=self.steps, seed=seed)
        seconds = time.perf_counter() - start
        return {"output": output, "flops": flops.total, "calls": len(flops.calls), "seconds": seconds,
                "memo_flops_exact": memo.calls == flops.calls}

    # --- rows ---------------------------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        return expand_rows(self.table, self.model_cfg, self.profile, self.only_method)

    def finished(self) -> dict[str, dict]:
        done = {}
        for path in sorted(self.rows_dir().glob("*.json")):
            row = read_json_record(path, ROW_KEYS)  # None for a damaged row, which is then recomputed
            if row is not None:
                done[path.stem] = row
        return done

    def run(self) -> pd.DataFrame:
        from tqdm.auto import tqdm

        rows = self.rows()
        done = self.finished()
        todo = [rows[i] for i in self.worker.order(len(rows)) if row_key(rows[i]) not in done]
        computed = []
        if todo:
            self.model(self.conditions()[:1], num_inference_steps=2, seed=0)  # the first call is many times slower
            refs = [self.reference(seed) for seed in self.seeds]
            bar = tqdm(todo, desc=f"{self.table['name']} ({self.model_cfg['name']})", disable=not self.progress,
                       mininterval=2, dynamic_ncols=True)
            same = {(r["method"], r["params"]): r for r in done.values()}  # one measurement per method+params
            for row in bar:
                bar.set_postfix_str(f"{row['method']} {row['setting']}"[:60])
                path = self.rows_dir() / f"{row_key(row)}.json"
                with file_lock(lock_path(path)):
                    if read_json_record(path, ROW_KEYS) is not None:
                        continue  # another run into this results folder finished the row while this one waited
                    params = json.dumps(row["params"], sort_keys=True, default=_json_default)
                    if (row["method"], params) in same:  # e.g. an ablation's base point shared by several groups
                        result = dict(same[(row["method"], params)], group=row["group"], setting=row["setting"],
                                      key=row_key(row))
                    else:
                        result = self.measure(row, refs)
                        same[(row["method"], params)] = result
                    atomic_write_text(json.dumps(result, default=_json_default), path)
                computed.append(row_key(row))
                self.write(rows)
        self.computed_keys = computed
        return self.write(rows)

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        done = self.finished()
        records = [done[row_key(r)] for r in rows if row_key(r) in done]
        if self.only_method is not None:  # a single-method run adds to what other runs of this table finished
            keys = {row_key(r) for r in rows}
            records += [r for k, r in done.items() if k not in keys]
        return pd.DataFrame(records)

    def write(self, rows: list[dict]) -> pd.DataFrame:
        df = self.frame(rows)
        if self.only_method is None or not (self.tables_dir / f"{self.table['name']}.csv").exists() or len(df):
            write_table(df, self.tables_dir, self.table["name"], title=self.table.get("title"))
        return df

    def measure(self, row: dict, refs: list[dict]) -> dict:
        model, transformer = self.model, self.model.transformer
        conditions = self.conditions()
        method, params = row["method"], row["params"]
        full_flops = sum(r["flops"] for r in refs)
        base = {
            "table": self.table["name"],
            "model": self.model_cfg["name"],
            "group": row["group"],
            "method": method,
            "setting": row["setting"],
            "params": json.dumps(params, sort_keys=True, default=_json_default),
            "profile": self.profile.get("name", "custom"),
            "num_conditions": self.num_conditions,
            "num_seeds": len(self.seeds),
            "num_inference_steps": self.steps,
            "key": row_key(row),
            "weights": self.workload["weights"],
        }
        if method == "full":
            output = torch.cat([r["output"] for r in refs])
            result = dict(base, flops=full_flops, full_flops=full_flops, flops_speedup=1.0, wall_speedup=1.0,
                          full_steps=float(self.steps), cache_bytes=0, valid=True, note="baseline",
                          psnr=math.inf, ssim=1.0, rel_l2=0.0)
            result.update(self._evaluate(output, conditions))
            return dict(result, **machine_info())

        generator = make_generator(
            model, method, params, num_inference_steps=self.steps,
            calibration_conditions=model.default_conditions(int(self.profile.get("calibration_conditions", 4)), 1000),
            calibration_seed=1000, calibration_file=self.calibration_file(method),
        )
        try:
            outputs, flops, cache_bytes = [], 0, 0
            per_call_flops: list[int] = []
            computed_flags: list[bool] = []
            counter = FullStepCounter(transformer)
            counter_class = MemoFlops if all(r.get("memo_flops_exact") for r in refs) else PerCallFlops
            with skip_hooks.CacheBytesMeter(transformer) as meter, counter:
                for seed in self.seeds:
                    with counter_class(transformer) as calls:
                        outputs.append(generator(conditions, seed))
                    flops += calls.total
                    stats = generator.cg_taylor_stats()
                    if stats is not None:
                        cache_bytes = max(cache_bytes, stats.total_cache_bytes)
                    if seed == self.seeds[0]:  # the seed that is timed
                        per_call_flops = calls.calls
                        computed_flags = [r.computed for r in stats.records] if stats is not None else []
            if generator.cg_taylor_stats() is None:
                cache_bytes = meter.peak
            output = torch.cat(outputs)
            reference = torch.cat([r["output"] for r in refs])
            scores = fidelity(output, reference)
            full_steps = counter.full_steps(len(self.seeds), generator.num_inference_steps)
            if method == "fewer-steps":
                full_steps = float(generator.num_inference_steps)

            wall, call_times = self._time(generator, conditions, refs)
        finally:
            generator.remove()

        speedup = full_flops / flops if flops else math.inf
        valid = flops < full_flops
        result = dict(
            base,
            flops=flops,
            full_flops=full_flops,
            flops_speedup=speedup,
            wall_speedup=wall,
            wall_over_flops=wall / speedup if speedup and not math.isnan(wall) else math.nan,
            full_steps=full_steps,
            cache_bytes=int(cache_bytes),
            valid=bool(valid),
            note="" if valid else "invalid: FLOPs not below full",
            **scores,
        )
        if getattr(generator, "calibration", None) is not None:
            result["calibrated_threshold"] = generator.params["threshold"]
            result["calibration_reached"] = generator.calibration.get("reached")
        if computed_flags and len(computed_flags) == len(per_call_flops):
            result.update(_forecast_overhead(computed_flags, per_call_flops, call_times))
        result.update(self._evaluate(output, conditions))
        return dict(result, **machine_info())

    def _evaluate(self, output, conditions) -> dict:
        if not self.evaluate:
            return {}
        conds = list(conditions) * len(self.seeds)
        with warnings.catch_warnings():  # few samples: the feature covariances are singular (said in the tables)
            warnings.simplefilter("ignore")
            return evaluate_samples(self.model, output, conds)

    def _time(self, generator, conditions, refs) -> tuple[float, list[float]]:
        """Median full time over median method time, interleaved in this process (first seed's batch)."""
        if self.repeats <= 0:
            return math.nan, []
        model, transformer, seed = self.model, self.model.transformer, self.seeds[0]
        full_times, method_times, call_times = [], [], []
        for _ in range(self.repeats):
            generator.remove()
            start = time.perf_counter()
            model(conditions, num_inference_steps=self.steps, seed=seed)
            full_times.append(time.perf_counter() - start)
            generator.attach()
            with CallTimer(transformer) as timer:
                start = time.perf_counter()
                generator(conditions, seed)
                method_times.append(time.perf_counter() - start)
            call_times = timer.times
        return statistics.median(full_times) / statistics.median(method_times), call_times


def _forecast_overhead(computed: list[bool], call_flops: list[int], call_times: list[float]) -> dict:
    """A forecast call's share of a full call, in FLOPs (the ideal: first block + head) and in measured time."""
    full_idx = [i for i, c in enumerate(computed) if c and i > 0]  # the first call carries one-off costs
    fc_idx = [i for i, c in enumerate(computed) if not c]
    if not full_idx or not fc_idx:
        return {}
    flops_ratio = statistics.median(call_flops[i] for i in fc_idx) / statistics.median(call_flops[i] for i in full_idx)
    out = {"forecast_flops_share": flops_ratio}
    if len(call_times) == len(computed):
        time_ratio = statistics.median(call_times[i] for i in fc_idx) / statistics.median(call_times[i] for i in full_idx)
        out.update(forecast_time_share=time_ratio, forecast_overhead=time_ratio / flops_ratio)
    return out


def _weights_stamp(model_cfg: dict) -> str | None:
    """Which weights a table was measured with: a content hash of a zoo model's weights, else the checkpoint path."""
    if model_cfg.get("source") != "zoo":
        return model_cfg.get("path")
    from ..zoo import weights_id

    try:
        return weights_id(model_cfg.get("zoo_name", model_cfg["name"]))
    except FileNotFoundError:
        return None


def _ensure_ignored(cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")


def _json_default(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, torch.dtype):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run_table(cfg) -> pd.DataFrame:
    """Run (or resume) the table described by the composed config ``cfg``; returns its rows."""
    return TableRunner(cfg).run()
