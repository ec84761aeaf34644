"""Writing results so that a stopped run never leaves a half-written file."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def atomic_write_csv(frame, path: str | Path) -> None:
    atomic_write_text(frame.to_csv(index=False), path)
