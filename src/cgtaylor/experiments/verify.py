"""A reviewer's check: numbers recomputed from nothing against the committed ones.

``compare_results(committed_dir, fresh_dir)`` pairs every CSV under ``committed_dir`` with the same file under
``fresh_dir`` and compares them cell by cell: FLOPs, step and sample counts exactly; PSNR within ``psnr_db`` dB;
other scores within ``relative`` of each other; wall-clock columns are listed but never fail the check (a machine's
timing is not reproducible). Columns are matched by name. Text cells must match, except the machine description; a
cell holding JSON (a setting, a list of per-sample PSNRs) is compared value by value, each number by the rule of its
key or of its column. Files that other benches write (the GPU benches, the compile probe: not steps of
`reproduce_all.sh`) are listed as not rebuilt and do not fail it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

EXACT = ("flops", "full_steps", "n_test", "num_inference_steps", "steps", "samples", "num_conditions")
TIMING = ("wall", "seconds", "time", "minutes", "overhead")
IGNORED_TEXT = ("machine", "platform", "torch_version", "cpu_count", "torch_threads", "weights")
# results written by benches outside reproduce_all.sh (scripts/bench_real_scale.py on a GPU, scripts/probe_compile.py)
OTHER_BENCHES = ("real_scale", "compile_probe")


@dataclass(frozen=True)
class Difference:
    file: str
    row: int
    column: str
    committed: object
    fresh: object
    kind: str  # "exact", "psnr", "relative", "text", "shape", "missing"; informational: "timing", "other bench"

    @property
    def fails(self) -> bool:
        return self.kind not in ("timing", "other bench")


def _rule(column: str) -> str:
    name = column.lower()
    if any(word in name for word in TIMING) or name.endswith("_s"):  # `_s`: seconds, as in calibration_s
        return "timing"
    if any(word in name for word in EXACT):
        return "exact"
    if "psnr" in name:
        return "psnr"
    return "relative"


def _numbers_differ(a: float, b: float, rule: str, psnr_db: float, relative: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return False
    if math.isinf(a) or math.isinf(b):
        return a != b
    if rule == "exact":
        return a != b
    if rule == "psnr":
        return abs(a - b) > psnr_db
    return abs(a - b) > relative * max(abs(a), abs(b), 1e-12)


def _json_or_none(text: object):
    if not isinstance(text, str) or text[:1] not in "[{":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _values_differ(a: object, b: object, name: str, psnr_db: float, relative: float) -> bool:
    """Whether two parsed JSON values differ: dicts key by key (a number by its key's rule), lists item by item."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(_values_differ(a[k], b[k], k, psnr_db, relative) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) != len(b) or any(_values_differ(x, y, name, psnr_db, relative) for x, y in zip(a, b))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        rule = _rule(name)
        return rule != "timing" and _numbers_differ(float(a), float(b), rule, psnr_db, relative)
    return a != b


def _text_differs(a: object, b: object, column: str, psnr_db: float, relative: float) -> bool:
    if pd.isna(a) and pd.isna(b):
        return False
    parsed_a, parsed_b = _json_or_none(a), _json_or_none(b)
    if parsed_a is not None and parsed_b is not None:
        return _values_differ(parsed_a, parsed_b, column, psnr_db, relative)
    return str(a) != str(b)


def compare_frames(name: str, committed: pd.DataFrame, fresh: pd.DataFrame, psnr_db: float = 0.5,
                   relative: float = 0.02) -> list[Difference]:
    if committed.shape != fresh.shape or set(committed.columns) != set(fresh.columns):
        return [Difference(name, -1, "*", committed.shape, fresh.shape, "shape")]
    fresh = fresh[list(committed.columns)]  # the same columns in another order: compared by name
    out = []
    for column in committed.columns:
        if column in IGNORED_TEXT:
            continue
        numeric = pd.api.types.is_numeric_dtype(committed[column]) and pd.api.types.is_numeric_dtype(fresh[column])
        rule = _rule(column) if numeric else "text"
        for row, (a, b) in enumerate(zip(committed[column], fresh[column])):
            differ = (_numbers_differ(float(a), float(b), rule, psnr_db, relative) if numeric
                      else _text_differs(a, b, column, psnr_db, relative))
            if differ:
                out.append(Difference(name, row, column, a, b, rule))
    return out


def compare_results(committed_dir: str | os.PathLike, fresh_dir: str | os.PathLike, **tolerances) -> list[Difference]:
    committed_dir, fresh_dir = Path(committed_dir), Path(fresh_dir)
    out = []
    for path in sorted(committed_dir.rglob("*.csv")):
        relative_path = path.relative_to(committed_dir)
        if "rows" in relative_path.parts or relative_path.parts[0].startswith("."):
            continue
        other = fresh_dir / relative_path
        if not other.exists():
            kind = "other bench" if path.name.startswith(OTHER_BENCHES) else "missing"
            out.append(Difference(str(relative_path), -1, "*", "present", "missing", kind))
            continue
        out += compare_frames(str(relative_path), pd.read_csv(path), pd.read_csv(other), **tolerances)
    return out
