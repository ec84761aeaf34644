"""Writing results so that a stopped run never leaves a half-written file; reading them back so that a damaged
one counts as missing; per-file locks for runs that share a results folder; content digests of inputs."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path


def _temporary(path: Path) -> Path:
    # One temporary per process and thread: parallel Hydra multirun jobs (or two runs into one results folder) may
    # write the same file.
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")


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


class DamagedFileWarning(UserWarning):
    """A cached result or row could not be read: it is treated as missing, recomputed and replaced."""


def _damaged(path: Path, reason: str) -> None:
    warnings.warn(f"{path}: {reason}; treating it as missing: it is recomputed and this file replaced",
                  DamagedFileWarning, stacklevel=4)


def _read_record(path: Path, load, errors: tuple, what: str, required: tuple[str, ...]) -> dict | None:
    if not path.exists():
        return None
    try:
        record = load(path)
    except errors as error:
        _damaged(path, f"unreadable ({type(error).__name__}: {str(error)[:120]})")
        return None
    missing = [key for key in required if key not in record] if isinstance(record, dict) else list(required)
    if not isinstance(record, dict) or missing:
        _damaged(path, f"not {what} with the keys {list(required)} (missing {missing})")
        return None
    return record


def read_json_record(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict | None:
    """The JSON object in ``path``, or None when the file is missing or is not a JSON object holding the keys
    ``required`` (random bytes, ``null``, ``[]``, ``{}``, a truncated write), with a :class:`DamagedFileWarning`
    naming the file in the second case."""
    return _read_record(Path(path), lambda p: json.loads(p.read_text()),
                        (OSError, UnicodeDecodeError, json.JSONDecodeError), "a JSON object", required)


def read_torch_record(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict | None:
    """The dict saved with ``torch.save`` in ``path`` (tensors and plain values only), or None when the file is
    missing or unreadable or lacks the keys ``required``, with a :class:`DamagedFileWarning` naming it then."""
    import torch

    # torch.load raises many types on a damaged file (RuntimeError, UnpicklingError, EOFError, ...)
    return _read_record(Path(path), lambda p: torch.load(p, weights_only=True), (Exception,), "a saved dict",
                        required)


@contextmanager
def file_lock(path: str | os.PathLike):
    """Hold an exclusive lock on the file ``path`` (created if needed) for the ``with`` block: another process
    asking for the same lock waits until it is released (``fcntl.flock``; released on exit or process death)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file that guards the result file ``path``: a hidden sibling (``.gitignore`` lists ``.*.lock``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def computed_once(path: str | os.PathLike, read, compute, write):
    """``read(path)`` when it gives a value, else ``compute()`` written with ``write(value, path)``, under the lock
    :func:`lock_path` of ``path``: a second process asking for the same file meanwhile waits, then reads what the
    first wrote instead of computing it again."""
    value = read(path)
    if value is not None:
        return value
    with file_lock(lock_path(path)):
        value = read(path)
        if value is None:
            value = compute()
            write(value, path)
    return value
