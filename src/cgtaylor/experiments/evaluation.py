"""One setting of one method on one sample set: FLOPs speedup and per-sample fidelity, kept on disk.

``SettingEvaluator(model, steps, cache_dir, rows_dir)`` computes the full-compute reference of a sample set once
(outputs and FLOPs, cached in ``cache_dir``) and, for ``evaluate(method, params, sample_set)``, samples the set with
the method applied under FLOP counting and scores every sample against the reference: PSNR (dB, capped at
``PSNR_CAP`` for identical outputs), SSIM and relative L2. Each result is a JSON file in ``rows_dir``; an unreadable
one is recomputed (with a warning naming it), so a stopped run loses nothing it finished, and two runs sharing a
results folder compute each file once (:func:`cgtaylor.io.computed_once`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ..io import atomic_torch_save, atomic_write_text, computed_once, read_json_record, read_torch_record
from ..meters import CheckedFlops, MemoFlops, flops_meter
from ..metrics import psnr_per_sample, relative_l2, ssim
from . import hooks as skip_hooks
from .methods import make_generator
from .keys import digest
from .sample_sets import SampleSet

PSNR_CAP = 100.0  # dB; identical outputs would give infinity


def per_sample_scores(output: torch.Tensor, reference: torch.Tensor) -> dict[str, list[float]]:
    psnr = psnr_per_sample(output, reference).clamp(max=PSNR_CAP).nan_to_num(PSNR_CAP)
    return {
        "psnr": [float(v) for v in psnr],
        "ssim": [ssim(output[i:i + 1], reference[i:i + 1]) for i in range(len(output))],
        "rel_l2": [relative_l2(output[i], reference[i]) for i in range(len(output))],
    }


def _read_row(path: Path) -> dict | None:
    return read_json_record(path, required=("flops", "speedup", "psnr"))


def _write_row(row: dict, path: Path) -> None:
    atomic_write_text(json.dumps(row), path)


class SettingEvaluator:
    def __init__(self, model, steps: int, cache_dir: Path, rows_dir: Path, calibration_dir: Path,
                 calibration_conditions: int = 4):
        self.model = model
        self.steps = int(steps)
        self.cache_dir = Path(cache_dir)
        self.rows_dir = Path(rows_dir)
        self.calibration_dir = Path(calibration_dir)
        self.calibration_conditions = int(calibration_conditions)
        self._references: dict[str, dict] = {}
        self.computed = 0  # evaluations run (not read from disk) by this evaluator
        self.used: dict[Path, float | None] = {}  # every evaluation asked for -> its recorded seconds (None: older row)

    def reference(self, sample_set: SampleSet) -> dict:
        key = digest([sample_set.identity(), self.steps])
        if key in self._references:
            return self._references[key]
        path = self.cache_dir / f"full-{sample_set.name}-{key}.pt"
        self._references[key] = computed_once(
            path, lambda p: read_torch_record(p, required=("output", "flops", "memo_flops_exact")),
            lambda: self._full(sample_set), atomic_torch_save)
        return self._references[key]

    def _full(self, sample_set: SampleSet) -> dict:
        transformer = self.model.transformer
        skip_hooks.remove_all_hooks(transformer)
        started = time.perf_counter()
        outputs, flops, exact = [], 0, True
        for index, (conditions, seed) in enumerate(sample_set.batches()):
            if index == 0:  # exact counting is slow; the memoised count is checked against it on the first batch
                with CheckedFlops(transformer) as counted:
                    outputs.append(self.model(conditions, num_inference_steps=self.steps, seed=seed))
                exact = counted.memo_exact
            else:
                with MemoFlops(transformer) as counted:
                    outputs.append(self.model(conditions, num_inference_steps=self.steps, seed=seed))
            flops += counted.total
        return {"output": torch.cat(outputs), "flops": flops, "memo_flops_exact": exact,
                "seconds": time.perf_counter() - started}

    def calibration_file(self, method: str) -> Path:
        return self.calibration_dir / f"{method}-calibration-v2-{self.steps}.json"

    def row_path(self, method: str, params: dict, sample_set: SampleSet) -> Path:
        key = digest([method, params, sample_set.identity(), self.steps])
        return self.rows_dir / sample_set.name / f"{method}-{key}.json"

    def stored(self, method: str, params: dict, sample_set: SampleSet) -> dict | None:
        """The evaluation as stored, without computing it (None where it was never computed)."""
        return _read_row(self.row_path(method, params, sample_set))

    def evaluate(self, method: str, params: dict, sample_set: SampleSet) -> dict:
        reference = self.reference(sample_set)
        path = self.row_path(method, params, sample_set)

        def compute() -> dict:
            self.computed += 1
            return self._run(method, params, sample_set, reference)

        row = computed_once(path, _read_row, compute, _write_row)
        self.used[path] = row.get("seconds")
        return row

    def cost(self) -> dict:
        """What the evaluations asked for so far cost when they were computed: the stored seconds of those that
        record them, and of the full-compute references held in memory."""
        timed = [s for s in self.used.values() if s is not None]
        references = [r.get("seconds") for r in self._references.values()]
        by_set: dict[str, dict] = {}  # a test evaluation runs several batches: its cost is estimated apart
        for path, seconds in self.used.items():
            counts = by_set.setdefault(path.parent.name, {"evaluations": 0, "timed_evaluations": 0,
                                                          "evaluation_seconds": 0.0})
            counts["evaluations"] += 1
            if seconds is not None:
                counts["timed_evaluations"] += 1
                counts["evaluation_seconds"] += seconds
        return {"evaluations": len(self.used), "timed_evaluations": len(timed), "evaluation_seconds": sum(timed),
                "references": len(references), "timed_references": sum(s is not None for s in references),
                "reference_seconds": sum(s for s in references if s is not None), "by_set": by_set}

    def _run(self, method: str, params: dict, sample_set: SampleSet, reference: dict) -> dict:
        model, transformer = self.model, self.model.transformer
        started = time.perf_counter()  # the evaluation's cost, calibration of the method included
        generator = make_generator(
            model, method, params, num_inference_steps=self.steps,
            calibration_conditions=model.default_conditions(self.calibration_conditions, 1000),
            calibration_seed=1000, calibration_file=self.calibration_file(method),
        )
        counter = flops_meter(reference["memo_flops_exact"])
        outputs, flops = [], 0
        try:
            for conditions, seed in sample_set.batches():
                with counter(transformer) as counted:
                    outputs.append(generator(conditions, seed))
                flops += counted.total
        finally:
            generator.remove()
        output = torch.cat(outputs)
        return {
            "method": method,
            "params": params,
            "sample_set": sample_set.name,
            "samples": len(sample_set),
            "flops": flops,
            "full_flops": reference["flops"],
            "speedup": reference["flops"] / flops if flops else math.inf,
            **per_sample_scores(output, reference["output"]),
            "seconds": time.perf_counter() - started,
            "threads": torch.get_num_threads(),
        }
