"""README.md keeps method prose and commands; every measurement lives in the generated ``results/README.md``."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import yaml

from cgtaylor.experiments.bootstrap import bootstrap_mean
from cgtaylor.experiments.verify import compare_frames

ROOT = Path(__file__).resolve().parents[1]
# A number with a unit of time, size, ratio or fidelity, ranges included; or a bare decimal.
MEASUREMENT = re.compile(
    r"(?<![\w.\-])\d+(?:\.\d+)?(?:\s*[-–/]\s*\d+(?:\.\d+)?)*\s*(?:x|×|dB|ms|s|GiB|MiB|GB|MB|min|minutes?|hours?|%|B|M)"
    r"(?!\w)|(?<![\w.\-])\d+\.\d+(?:\s*[-–/]\s*\d+(?:\.\d+)?)*(?![\w.])")


def _allowed() -> dict[str, str]:
    """Numbers that are settings or identifiers, each read from where it is set, so a change there shows here."""
    targets = yaml.safe_load((ROOT / "conf" / "comparison" / "default.yaml").read_text())["targets"]
    level = inspect.signature(bootstrap_mean).parameters["level"].default
    psnr_db = inspect.signature(compare_frames).parameters["psnr_db"].default
    allowed = {f"{target:g}x": "a target speedup of the comparison (conf/comparison/default.yaml)" for target in targets}
    allowed[f"{level:.0%}"] = "the bootstrap intervals' level (bootstrap_mean)"
    allowed[f"{psnr_db:g} dB"] = "--verify's PSNR tolerance (verify.compare_frames)"
    allowed["2508.02240"] = "the paper's arXiv identifier"
    return allowed


def measurements(markdown: str) -> list[str]:
    """Measurement-looking numbers outside fenced code blocks and inline code."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return [match.group() for match in MEASUREMENT.finditer(prose)]


def test_the_pattern_catches_measurements_and_skips_code():
    found = measurements("took 71 minutes, 0.98-1.01 of ideal, 22.7 / 22.8 GiB, 8.7 s, 4%, 3.17x\n"
                         "`--budget-s 340 --out 1.5x` and\n```\nrun 12 s\n```\nFLUX 1024x1024, Wan2.1-T2V-1.3B")
    assert found == ["71 minutes", "0.98-1.01", "22.7 / 22.8 GiB", "8.7 s", "4%", "3.17x"]


def test_readme_has_no_measured_number_outside_code():
    allowed = _allowed()
    stray = [number for number in measurements((ROOT / "README.md").read_text()) if number not in allowed]
    assert not stray, (f"README.md states measurements {stray}; put them in a generated section of results/README.md "
                       "(src/cgtaylor/experiments/report*.py) and point to it")
