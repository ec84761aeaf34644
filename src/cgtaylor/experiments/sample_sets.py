"""The samples a comparison selects on and the disjoint samples it tests on.

A :class:`SampleSet` is a list of conditions sampled in batches of ``batch_size``, the batch that starts at condition
``i`` seeded ``seed + i``. Selection and test sets use different seeds (and condition offsets), so no test sample is
ever seen while a method's setting is chosen. Every method runs both sets in the same batches, so gates that average
their decision over a batch (CG-Taylor, FBCache, TeaCache, MagCache) see the same batch size in selection and test.
"""

from __future__ import annotations

from dataclasses import dataclass

SELECTION_SEED = 500
TEST_SEED = 2000  # calibration runs use seed 1000 and their own conditions (see methods.make_generator)


@dataclass(frozen=True)
class SampleSet:
    name: str
    conditions: tuple
    batch_size: int
    seed: int

    def batches(self):
        for start in range(0, len(self.conditions), self.batch_size):
            yield list(self.conditions[start:start + self.batch_size]), self.seed + start

    def identity(self) -> dict:
        return {"name": self.name, "conditions": [str(c) for c in self.conditions], "batch_size": self.batch_size,
                "seed": self.seed}

    def __len__(self) -> int:
        return len(self.conditions)


def _positive_int(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"comparison samples: {field} must be a positive integer, got {value!r}")
    return value


def make_sample_sets(model, batch_size: int, selection_batches: int, test_batches: int) -> tuple[SampleSet, SampleSet]:
    """The selection and test sets of ``model`` (an object with ``default_conditions(n, seed)``)."""
    batch_size = _positive_int(batch_size, "batch_size")
    selection_batches = _positive_int(selection_batches, "selection_batches")
    test_batches = _positive_int(test_batches, "test_batches")
    selection = model.default_conditions(batch_size * selection_batches, seed=SELECTION_SEED)
    test = model.default_conditions(batch_size * test_batches, seed=TEST_SEED)
    return (SampleSet("selection", tuple(selection), batch_size, SELECTION_SEED),
            SampleSet("test", tuple(test), batch_size, TEST_SEED))
