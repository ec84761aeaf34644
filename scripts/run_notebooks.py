"""Execute every notebook with papermill for one profile: python scripts/run_notebooks.py [quick|default|full]."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from cgtaylor.notebooks import execute_notebooks
from cgtaylor.zoo import MODEL_NAMES, WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_TABLES = ("table_dit", "table_flux", "table_wan", "ablations")


def notebook_inputs(results: Path) -> list[Path]:
    """Files whose change re-executes a finished notebook: the zoo weights and the experiment tables."""
    return [WEIGHTS_DIR / f"{name}.safetensors" for name in MODEL_NAMES] + \
        [results / "tables" / f"{table}.csv" for table in EXPERIMENT_TABLES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", nargs="?", default="default", choices=["quick", "default", "full"])
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--force", action="store_true", help="re-execute notebooks that already finished")
    args = parser.parse_args()
    plan = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "notebooks" / f"{args.profile}.yaml"), resolve=True)
    results = Path(args.results_dir).resolve()
    runs = []
    for run in plan["runs"]:
        parameters = dict(run.get("parameters", {}), results_dir=str(results))
        runs.append({**run, "parameters": parameters, "inputs": notebook_inputs(results)})
    for path in execute_notebooks(runs, ROOT / "notebooks", results / "notebooks", cwd=ROOT, force=args.force):
        print(path.relative_to(results.parent) if results.parent in path.parents else path)


if __name__ == "__main__":
    main()
