"""The rows of a table: one per (entry, sweep point), each with its method, group, setting and parameters.

A row's parameters are merged in this order, later ones winning: the table's method defaults, the model's
parameters for the method (module patterns, orders), the entry's own, then the sweep point (or, for a single-method
run, ``method.params``). The row's key names its file under ``results/tables/rows/``.
"""

from __future__ import annotations

import itertools
import json
import math

from .keys import digest
from .methods import METHOD_NAMES


def sweep_points(sweep: dict | None, mode: str) -> list[dict]:
    """Every combination of the sweep's values (a scalar is a one-value list); only the first with ``mode="first"``."""
    if not sweep:
        return [{}]
    keys = list(sweep)
    values = [v if isinstance(v, list) else [v] for v in sweep.values()]
    points = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    if mode == "first":
        return points[:1]
    return points


def format_value(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def method_params(method: str, table_methods: dict, model_cfg: dict, entry_params: dict | None) -> dict:
    """A method's parameters before any sweep point: table defaults <- the model's parameters <- the entry's."""
    params = dict((table_methods.get(method) or {}).get("params") or {})
    model_params = model_cfg.get("method_params") or {}
    if method == "cg-taylor-target":  # the model's CG-Taylor settings (orders, warm-up) apply as for cg-taylor
        params.update(model_params.get("cg-taylor") or {})
    params.update(model_params.get(method) or {})
    params.update(entry_params or {})
    return params


def _entry_points(entry: dict, table_methods: dict, mode: str) -> list[dict]:
    sweep = entry.get("default_sweep") if mode == "default" and entry.get("default_sweep") else entry.get("sweep")
    sweep = sweep or (table_methods.get(entry["method"]) or {}).get("sweep")
    return sweep_points(sweep, mode)


def _entry_rows(entry: dict, base: dict, points: list[dict], only_method: dict | None) -> list[dict]:
    rows = []
    for point in points:
        shown = dict(entry.get("show") or {}, **point)
        if only_method is not None:
            shown.update(only_method.get("params") or {})
        setting = " ".join(f"{k}={format_value(v)}" for k, v in shown.items()) or "default"
        rows.append({"method": entry["method"], "group": entry.get("group", entry["method"]), "setting": setting,
                     "params": dict(base, **point)})
    return rows


def _once_per_group(rows: list[dict]) -> list[dict]:
    """The same method+params in two groups is measured once per group: drop repeats within a group."""
    seen, unique = set(), []
    for row in rows:
        key = (row["group"], row["method"], json.dumps(row["params"], sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def expand_rows(table_cfg: dict, model_cfg: dict, profile_cfg: dict, only_method: dict | None = None) -> list[dict]:
    """The rows of a table: one per (entry, sweep point), each a dict with method, group, setting, params.

    ``only_method`` (``{"name": ..., "params": ...}``) keeps that method's entries, each at ``params`` alone."""
    table_methods = table_cfg.get("methods") or {}
    mode = profile_cfg.get("sweep", "default")
    rows = []
    for entry in table_cfg["entries"]:
        method = entry["method"]
        if method not in METHOD_NAMES:
            raise ValueError(f"table {table_cfg['name']}: unknown method {method!r}; available {list(METHOD_NAMES)}")
        if only_method is not None and method != only_method["name"]:
            continue
        if entry.get("skip_if") and any(model_cfg.get(flag) for flag in entry["skip_if"]):
            continue
        base = method_params(method, table_methods, model_cfg, entry.get("params"))
        if only_method is not None:
            base.update(only_method.get("params") or {})
            points = [{}]
        else:
            points = _entry_points(entry, table_methods, mode)
        rows += _entry_rows(entry, base, points, only_method)
    return _once_per_group(rows)


def row_key(row: dict) -> str:
    """The name of a row's file: its method and a digest of (group, method, params)."""
    return f"{row['method']}-{digest([row['group'], row['method'], row['params']])}"
