#!/usr/bin/env python
"""CG-Taylor step cost, end-to-end speedup and peak memory on FLUX.1-dev, DiT-XL/2 and Wan2.1-1.3B at real size.

One command on a GPU machine (random weights, nothing downloaded; 333 s on one H200 with --budget-s 340):

    python scripts/bench_real_scale.py --budget-s 340 --out results/real_scale.md

CPU smoke run of the same code path:  python scripts/bench_real_scale.py --reduced --out /tmp/real_scale.md
See ``cgtaylor.bench.real_scale`` for what is measured and how schedules are forced.
"""

from cgtaylor.bench.real_scale import main

if __name__ == "__main__":
    main()
