"""Writing results so that a stopped run never leaves a half-written file; content digests of inputs."""

from __future__ import annotations

import hashlib
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


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks (large weights files)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
