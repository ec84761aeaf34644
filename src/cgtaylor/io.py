"""Writing results so that a stopped run never leaves a half-written file."""

from __future__ import annotations

import os
from pathlib import Path


def _temporary(path: Path) -> Path:
    # One temporary per process: parallel Hydra multirun jobs may write the same file.
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    temporary = _temporary(path)
    temporary.write_text(text)
    os.replace(temporary, path)


def atomic_write_csv(frame, path: str | Path) -> None:
    atomic_write_text(frame.to_csv(index=False), path)


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    path = Path(path)
    temporary = _temporary(path)
    torch.save(obj, temporary)
    os.replace(temporary, path)
