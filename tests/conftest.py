import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def tiny_dit():
    """A tiny random-weight DiT pipeline for one test module; CG-Taylor is taken off it at the end."""
    from cgtaylor import remove_cg_taylor
    from tiny_pipelines import tiny_dit_pipeline

    pipe = tiny_dit_pipeline()
    yield pipe
    remove_cg_taylor(pipe)
