"""Several processes (or GPUs) on one table or comparison: each takes its own share of the work first.

A table's rows and a comparison's evaluations are files guarded by per-file locks (:func:`cgtaylor.io.computed_once`),
so any number of processes can run the same table into one results folder and each file is computed once. What
makes them useful together is the order: worker ``rank`` of ``world`` starts with the items ``rank, rank + world,
...`` and only then walks the others' from the last one back, where it mostly reads what the other workers wrote
(or computes what they have not reached yet).
Every worker ends with the whole table and writes the same files.

Under ``torchrun`` the worker comes from the launcher's ``RANK`` / ``WORLD_SIZE`` and the GPU from ``LOCAL_RANK``;
no process group is created, since the workers never exchange tensors. By hand: ``worker=1/2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Worker:
    rank: int = 0
    world: int = 1

    def __post_init__(self):
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"worker must be RANK/WORLD with 0 <= RANK < WORLD, got {self.rank}/{self.world}")

    @classmethod
    def parse(cls, text) -> "Worker":
        """``"1/2"`` -> the second of two workers; ``None`` or ``""`` -> from torchrun's environment."""
        if text is None or text == "":
            return cls.from_environment()
        parts = str(text).split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"worker must look like RANK/WORLD (e.g. 0/2), got {text!r}")
        return cls(int(parts[0]), int(parts[1]))

    @classmethod
    def from_environment(cls) -> "Worker":
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            return cls()
        return cls.parse(f"{rank}/{world}")

    def order(self, count: int) -> list[int]:
        """Indices of ``count`` items: this worker's share first, then the others' from the last one back.

        The others' owners reach their last items last, so a worker that finishes its share early computes those
        itself and meets the owners in the middle; walked from the front it would queue behind them on the item
        they are computing (a comparison entry's search is a sequence of evaluations, so one core would idle).
        """
        own = list(range(self.rank, count, self.world))
        return own + [i for i in reversed(range(count)) if i % self.world != self.rank]

    def bind_device(self) -> str | None:
        """Under torchrun on a GPU machine, make ``cuda`` mean this process's GPU; returns it (None on a CPU)."""
        import torch

        if not torch.cuda.is_available():
            return None
        local = int(os.environ.get("LOCAL_RANK", self.rank)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        return f"cuda:{local}"

    def __str__(self) -> str:
        return f"{self.rank}/{self.world}"
