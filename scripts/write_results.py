#!/usr/bin/env python
"""Re-render results/README.md (the results section) from the comparison rows already under results/ and the files
the other benches wrote there (real_scale*.csv/md, compile_probe.csv/md, explorer_browser.md); run it after any of
those benches.

    python scripts/write_results.py [--results-dir results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from cgtaylor.experiments import compose
from cgtaylor.experiments.comparison import expected_groups
from cgtaylor.experiments.report import write_results_readme


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--comparison", default="default",
                        help="the conf/comparison profile whose entries each model's table should hold (default: default)")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.error(f"--results-dir {args.results_dir} is not a folder")
    comparison = OmegaConf.to_container(compose([f"comparison={args.comparison}"]).comparison, resolve=True)
    models = {name: compose([f"model={name}"]).model for name in comparison["models"]}
    write_results_readme(args.results_dir, expected_groups(comparison, models), args.comparison)
    print(f"-> {args.results_dir / 'README.md'}")


if __name__ == "__main__":
    main()
