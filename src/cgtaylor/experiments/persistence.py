"""A table's results on disk, so that a stopped run resumes where it stopped and runs sharing a results folder
compute each file once: one JSON file per finished row, written under that row's lock, and the cached full-compute
references (git-ignored)."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import (atomic_torch_save, atomic_write_text, computed_once, file_lock, lock_path, read_json_record,
                  read_torch_record)
from .keys import json_default

ROW_KEYS = ("key", "method", "group", "setting")  # a row file without them is damaged: recomputed
REFERENCE_KEYS = ("output", "flops", "calls", "memo_flops_exact")


class RowStore:
    """The finished rows of one table on one workload: ``<rows_dir>/<row key>.json``."""

    def __init__(self, rows_dir: Path):
        self.rows_dir = Path(rows_dir)

    def path(self, key: str) -> Path:
        return self.rows_dir / f"{key}.json"

    def finished(self) -> dict[str, dict]:
        """Every readable row by key (a damaged one is left out, so it is recomputed)."""
        done = {}
        for path in sorted(self.rows_dir.glob("*.json")):
            row = read_json_record(path, ROW_KEYS)
            if row is not None:
                done[path.stem] = row
        return done

    def write_once(self, key: str, compute) -> bool:
        """Write ``compute()`` as the row ``key`` unless it is finished; False when another run into this results
        folder finished it (while this one waited for the lock)."""
        path = self.path(key)
        with file_lock(lock_path(path)):
            if read_json_record(path, ROW_KEYS) is not None:
                return False
            atomic_write_text(json.dumps(compute(), default=json_default), path)
        return True


def cached_reference(path: Path, compute) -> dict:
    """The full-compute reference saved at ``path``, computed (once, under its lock) when missing or damaged."""
    return computed_once(path, lambda p: read_torch_record(p, REFERENCE_KEYS), compute, atomic_torch_save)


def ensure_ignored(cache_dir: Path) -> None:
    """Create ``cache_dir`` with a ``.gitignore`` that ignores everything in it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")

