#!/usr/bin/env python
"""Compare numbers recomputed from nothing with the committed ones (run by `reproduce_all.sh --verify`).

    python scripts/verify_results.py results results-verify [--psnr-db 0.5] [--relative 0.02]

FLOPs and counts must match exactly, PSNR within --psnr-db dB, other scores within --relative; wall-clock columns are
listed but do not fail the check. Exit status 1 when anything else differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cgtaylor.experiments.verify import compare_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("committed", type=Path)
    parser.add_argument("fresh", type=Path)
    parser.add_argument("--psnr-db", type=float, default=0.5)
    parser.add_argument("--relative", type=float, default=0.02)
    args = parser.parse_args(argv)
    for folder in (args.committed, args.fresh):
        if not folder.is_dir():
            parser.error(f"{folder} is not a results folder")
    differences = compare_results(args.committed, args.fresh, psnr_db=args.psnr_db, relative=args.relative)
    failing = [d for d in differences if d.fails]
    for d in differences:
        tag = "DIFFERS" if d.fails else ("timing " if d.kind == "timing" else "not rebuilt (another bench)")
        print(f"{tag} {d.file} row {d.row} {d.column}: committed {d.committed!r}, fresh {d.fresh!r} ({d.kind})")
    print(f"{len(failing)} difference(s) beyond tolerance, {len(differences) - len(failing)} timing difference(s) or "
          "other benches' files listed only")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
