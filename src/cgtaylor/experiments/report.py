"""The results section, written from the comparison's rows so that no claim in it can go stale.

``write_results_readme(results_dir)`` reads ``<results_dir>/comparison/*steps.csv`` and writes
``<results_dir>/comparison/summary.{csv,md}`` and ``<results_dir>/README.md``: per model and step count, each
method's test PSNR at each target speedup with its interval, CG-Taylor's paired difference against it and the
verdict, the interval half-widths the sample sizes gave, the verdict counts, and every cell that needs a caveat (a
setting off its target, a best setting at the top of its grid). ``results/README.md`` then carries the other
benches' measurements as their own files state them (``measured_sections``): real scale on a GPU, torch.compile,
the gate explorer in a browser.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ..io import atomic_write_text, read_json_record
from .comparison import describe_cost, near_miss
from .compute_cost import cost_table, test_set_cost
from .drift import speed_drift
from .report_compile import compile_section
from .report_explorer import explorer_section
from .report_real_scale import real_scale_sections
from .run_time import run_time_section
from .step_gains import step_gains_section
from .tables import to_markdown
from .variant_cost import cost_section
from .variants import best_against_peers, peers_only, preset_agreement, reach_against_peers, variant_table

HEADER = """# Results

Written by `scripts/write_results.py` (step of `scripts/reproduce_all.sh`) from the rows under `{folder}/`; every
number below is read from them. Machine: {machine}. Comparison profile: `{profile}` (`conf/comparison/{profile}.yaml`).
{scope}

## Equal-footing comparison (`results/comparison/`)

Each method is landed on each target FLOPs speedup on a selection set: methods with a threshold have it searched
(CG-Taylor's budget entries search their forecast budget instead, and sweep the threshold as a discrete setting)
until the selection speedup is within {tolerance} of the target, for every combination of their discrete settings
(interval, order) and of the model's warm-up grid, which every method with a warm-up shares (a grid whose top is
chosen grows past it, the warm-up grid up to three steps, for every method alike); methods without a threshold are enumerated over the
same grids. The setting with the best mean selection PSNR at the target is then
run once on a disjoint test set (other seeds and conditions, the same batch size). PSNR is against the full-compute
output with the same seeds (capped at 100 dB). The difference column is CG-Taylor's per-sample PSNR minus the
method's on the same test samples, with a paired bootstrap 95% interval; the verdict says whether CG-Taylor is
`ahead` (interval above 0), `level` (interval contains 0) or `behind` (interval below 0). It gives no verdict where
either side's selection could not land within the tolerance, where CG-Taylor is ahead of a peer that had a setting
just outside the tolerance (a discrete grid that cannot land closer) scoring above CG-Taylor's best setting at least
as fast on selection, nor where the two test speedups (adaptive methods
skip a different number of steps on other samples) differ by more than the tolerance and the verdict favours the
side that ran slower, or calls them level: that side spent more FLOPs.
"""


def load_comparison(results_dir: str | os.PathLike) -> pd.DataFrame:
    folder = Path(results_dir) / "comparison"
    frames = [pd.read_csv(path) for path in sorted(folder.glob("*steps.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _cell(row: pd.Series) -> str:
    return f"{row['test_psnr']:.1f} [{row['test_psnr_low']:.1f}, {row['test_psnr_high']:.1f}] @ {row['test_speedup']:.2f}x"


def _difference(row: pd.Series) -> str:
    if pd.isna(row.get("reference_minus_this")):
        return "(reference)"
    return f"{row['reference_minus_this']:+.1f} [{row['difference_low']:+.1f}, {row['difference_high']:+.1f}]"


def model_table(part: pd.DataFrame) -> pd.DataFrame:
    """One row per group, per target: test PSNR with its interval and speedup, CG-Taylor minus it, verdict."""
    rows = {}
    for _, row in part.iterrows():
        out = rows.setdefault(row["group"], {"method": row["group"]})
        label = f"{row['target']:g}x"
        out[f"PSNR {label}"] = _cell(row)
        out[f"CG-Taylor − it {label}"] = _difference(row)
        out[f"verdict {label}"] = row["verdict"] if isinstance(row["verdict"], str) else ""
    return pd.DataFrame(list(rows.values()))


def _count_verdicts(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """How many of each verdict per ``keys``, every withheld one ("n/a: ...") counted as "no verdict"."""
    said = frame.assign(verdict=frame["verdict"].astype(str).str.replace(r"^n/a.*", "no verdict", regex=True))
    return said.groupby([*keys, "verdict"]).size().unstack(fill_value=0).reset_index()


def verdict_counts(df: pd.DataFrame) -> pd.DataFrame:
    peers = peers_only(df)
    return _count_verdicts(peers[peers["verdict"].fillna("").astype(str) != ""], ["model", "steps", "target"])


def variant_sections(df: pd.DataFrame) -> list[str]:
    variants = variant_table(df)
    if variants.empty:
        return []
    best = best_against_peers(df)
    parts = ["\n### CG-Taylor's variants against the project default (ablation)\n",
             "Rows with `role: variant` in `conf/comparison/`: settings of CG-Taylor itself, each landed and tested "
             "like a peer; the difference is the project default's PSNR minus the variant's on the same test "
             "samples.\n", to_markdown(variants)]
    if not best.empty:
        counts = _count_verdicts(best, ["model", "steps", "target", "best variant"])
        parts += ["\n### The best variant against each peer\n",
                  "Per model and target, the variant with the best selection PSNR among those on target (chosen "
                  "without the test samples), compared with every peer on the test set by the same rules. The near-miss "
                  "rule compares a peer's near miss with the project default's selection points (the only ones the "
                  "table records), so it can only withhold a verdict in the variant's favour.\n",
                  to_markdown(counts), "\n", to_markdown(best)]
    from ..zoo.families import NAME_KIND

    agreement = preset_agreement(df, NAME_KIND)
    if agreement:
        parts += ["\n### The `best` preset against the comparison's choice\n",
                  "The presets were fitted on the extended profile, which runs every variant; a profile with fewer "
                  "variants (or a preset entry searched on its own, whose warm-up grid grows only by its own choices) "
                  "may choose otherwise.\n", "\n".join(agreement) + "\n"]
    return parts


def reach_section(df: pd.DataFrame) -> list[str]:
    reach = reach_against_peers(df)
    if reach.empty:
        return []
    return ["\n### CG-Taylor one target further than the best peer\n",
            "The project default, the paper's form, the `best` preset and the best variant on selection, each at the "
            "highest target, against the peer with the best selection PSNR at the target below it (on target, no "
            "caveat), paired on the same test samples: `ahead` or `level` means the gate keeps at the higher speedup "
            "what the best peer keeps at the lower one.\n",
            to_markdown(reach)]


HALF_WIDTH_GOAL = 1.0  # dB: the interval half-width the sample sizes are meant to reach


def half_widths(df: pd.DataFrame) -> pd.DataFrame:
    """The widest PSNR and paired-difference intervals per cell, and the test-set size that would bring the wider of
    the two to ``HALF_WIDTH_GOAL`` if it shrinks as 1/sqrt(n), as a bootstrap interval of a mean does."""
    widths = df.assign(psnr_half_width=(df["test_psnr_high"] - df["test_psnr_low"]) / 2,
                       difference_half_width=(df["difference_high"] - df["difference_low"]) / 2)
    table = (widths.groupby(["model", "steps", "target"])
             .agg(n_test=("n_test", "max"), max_psnr_half_width=("psnr_half_width", "max"),
                  max_difference_half_width=("difference_half_width", "max"))
             .reset_index())
    widest = table[["max_psnr_half_width", "max_difference_half_width"]].max(axis=1)
    needed = (table["n_test"] * (widest / HALF_WIDTH_GOAL) ** 2).apply(math.ceil)
    table["n_test_for_1_db"] = needed.where(widest > HALF_WIDTH_GOAL, table["n_test"]).astype(int)
    return table


def half_width_section(results_dir: Path, df: pd.DataFrame) -> list[str]:
    widths = half_widths(df)
    parts = ["\n### Interval half-widths (dB) at these sample sizes\n",
             f"`n_test_for_1_db`: the test samples that would bring the wider interval to {HALF_WIDTH_GOAL:g} dB, "
             "extrapolated as 1/sqrt(n) from this run.\n", to_markdown(widths)]
    sizes = test_set_cost(results_dir, widths)
    if not sizes.empty:
        added = sizes["added_cpu_min"].sum()
        parts += ["\nWhat those test sets would cost: a table's test set serves both targets, so it takes the larger "
                  "size; its evaluations grow in proportion (CPU-minutes at one torch thread, from this run's "
                  f"`<table>.cost.json`). In all, {added:.0f} CPU-minutes more than this run's test sets: about "
                  f"{added / 2:.0f} minutes more on two cores.\n", to_markdown(sizes)]
    return parts


def caveats(df: pd.DataFrame) -> list[str]:
    lines = []
    for (model, steps, group), part in df.groupby(["model", "steps", "group"], sort=False):
        caveat = part["caveat"].iloc[0] if "caveat" in part else ""
        if isinstance(caveat, str) and caveat:
            lines.append(f"- {model} {steps} steps, {group}: {caveat} No verdict is given for it.")
    for _, row in df.iterrows():
        where = f"{row['model']} {row['steps']} steps, {row['group']} at {row['target']:g}x"
        if not bool(row["on_target"]):
            lines.append(f"- {where}: no setting within the tolerance on the selection set; nearest "
                         f"{row['selection_speedup']:.2f}x")
        if isinstance(row.get("edges"), str) and row["edges"]:
            lines.append(f"- {where}: best setting at the end of its search ({row['edges']})")
        near = near_miss(row)
        if near is not None:
            lines.append(f"- {where}: a setting just outside the tolerance, {near['params']} at "
                         f"{near['selection_speedup']:.2f}x, scored {near['selection_psnr']:.1f} dB on selection, "
                         f"above the landed {row['selection_psnr']:.1f} dB")
    return lines


def unfinished(results_dir: Path) -> list[str]:
    """Comparisons that stored evaluations but wrote no table yet (a run still going, or stopped)."""
    folder = results_dir / "comparison"
    lines = []
    for rows in sorted((folder / "rows").glob("*")):
        stem = rows.name.rsplit("-", 1)[0]
        if not (folder / f"{stem}.csv").exists():
            counts = {name: len(list((rows / name).glob("*.json"))) for name in ("selection", "test")}
            lines.append(f"- {stem}: not finished in this folder ({counts['selection']} selection and {counts['test']} "
                         "test evaluations stored; `scripts/run_comparison.py` resumes from them)")
    return lines


def against_sweeps(df: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    """Each cell of the comparison next to the value the sweep tables read off at the same speedup (interpolated
    along the sweep, on the samples that chose it): how much the protocol moved each number."""
    path = results_dir / "tables" / "summary.csv"
    if not path.exists():
        return pd.DataFrame()
    sweeps = pd.read_csv(path)
    rows = []
    for _, row in df.iterrows():
        match = sweeps[(sweeps["model"] == row["model"]) & (sweeps["group"] == row["group"])]
        column = f"psnr@{row['target']:g}x"
        if match.empty or column not in match:
            continue
        swept = match.iloc[0][column]
        rows.append({"model": row["model"], "steps": row["steps"], "group": row["group"],
                     "target": f"{row['target']:g}x", "sweep reading (dB)": None if pd.isna(swept) else round(swept, 1),
                     "protocol, test set (dB)": round(row["test_psnr"], 1),
                     "test speedup": round(row["test_speedup"], 2)})
    return pd.DataFrame(rows)


def measured_sections(results_dir: Path) -> list[str]:
    """The other benches' pages, each from its own file under ``results_dir`` (a line instead where it is absent)."""
    return [run_time_section(results_dir), *real_scale_sections(results_dir), compile_section(results_dir),
            explorer_section(results_dir)]


def older_protocol(df: pd.DataFrame) -> list[str]:
    """Tables computed under an earlier protocol revision (rows without a revision are revision 1)."""
    from .protocol import PROTOCOL_REVISION

    revision = df["protocol"].fillna(1).astype(int) if "protocol" in df else pd.Series(1, index=df.index)
    lines = []
    for (model, steps), part in df.assign(protocol=revision).groupby(["model", "steps"], sort=False):
        if part["protocol"].min() < PROTOCOL_REVISION:
            lines.append(f"- {model}, {steps} steps: its table was computed under protocol revision "
                         f"{part['protocol'].min()}, not the current {PROTOCOL_REVISION} (see "
                         "`PROTOCOL_REVISION` in src/cgtaylor/experiments/protocol.py); `scripts/run_comparison.py` "
                         "recomputes it, reusing every stored evaluation the new revision asks for again")
    return lines


def missing_entries(df: pd.DataFrame, expected: dict | None) -> list[str]:
    """Entries of the comparison config that a model's table does not hold yet (its run stopped before them)."""
    lines = []
    for (model, steps), groups in (expected or {}).items():
        have = set(df[(df["model"] == model) & (df["steps"] == steps)]["group"])
        if not have:
            continue  # no table at all: `unfinished` says so
        missing = [g for g in dict.fromkeys(groups) if g not in have]
        if missing:
            lines.append(f"- {model}, {steps} steps: not yet in its table: {', '.join(missing)} "
                         "(`scripts/run_comparison.py` resumes from the stored evaluations)")
    return lines


def tolerance_text(df: pd.DataFrame) -> str:
    """The landing tolerance(s) of the tables, e.g. "±4% (±5% at 25 steps)"."""
    by_steps = df.groupby("steps")["tolerance"].max()
    main = float(by_steps.loc[by_steps.index.max()])
    other = {float(t): sorted(int(s) for s in by_steps.index[by_steps == t]) for t in set(by_steps) if t != main}
    extra = "; ".join(f"±{t:.0%} at {', '.join(map(str, steps))} steps" for t, steps in sorted(other.items()))
    return f"±{main:.0%}" + (f" ({extra})" if extra else "")


def compute_section(results_dir: Path, tables: list) -> list[str]:
    costs = cost_table(results_dir, tables)
    if costs.empty:
        return []
    total = costs.iloc[-1]
    said = ("" if pd.isna(total["estimated_cpu_min"]) else
            f" From nothing, with its untimed evaluations estimated, the comparison takes about "
            f"{total['estimated_cpu_min']:.0f} CPU-minutes: about {total['estimated_cpu_min'] / 2:.0f} minutes on two "
            "cores at one process per core, before the other steps of `reproduce_all.sh`.")
    return ["\n### What the comparison costs\n",
            "CPU-minutes per table at one torch thread per process: measured (the evaluations that recorded their "
            "time, and the full-compute references), and estimated from nothing (each untimed evaluation at the mean "
            f"of the same table's timed evaluations of the same sample set; `src/cgtaylor/experiments/compute_cost.py`).{said}\n",
            to_markdown(costs)]


# The extended profile writes the comparison alone, into its own folder; the other profiles write every bench's page
COMPARISON_ONLY_PROFILES = ("extended", "reach")


def scope_text(profile: str, targets=()) -> str:
    if profile == "reach":
        at = " and ".join(f"{t:g}x" for t in sorted(targets)) or "its targets"
        return ("This folder holds the comparison alone (`scripts/reproduce_all.sh --reach`): every peer, the project "
                f"default, the paper's form and the `best` preset at {at}, on the default profile's sample sets; "
                "the other benches are in `results/README.md`. A cell at a target that `results/` also has may "
                "differ from it: each entry's search ran for every target here, and a setting found for one target "
                "may land on another.\n")
    if profile in COMPARISON_ONLY_PROFILES:
        return ("This folder holds the comparison alone (`scripts/reproduce_all.sh --extended`): every variant of "
                "CG-Taylor, and the lower step counts; the other benches are in `results/README.md`.\n")
    return ("Every variant of CG-Taylor, and the lower step counts (the harder regime), are compared in "
            "`results-extended/README.md` (`scripts/reproduce_all.sh --extended`, on the same sample sets).\n")


def write_results_readme(results_dir: str | os.PathLike = "results", expected: dict | None = None,
                         profile: str = "default") -> str:
    """``expected``: (model, steps) -> the comparison config's groups for it, to list any its table lacks;
    ``profile``: the conf/comparison profile the rows come from (the extended one writes the comparison alone)."""
    results_dir = Path(results_dir)
    df = load_comparison(results_dir)
    if df.empty:
        raise FileNotFoundError(f"no comparison rows under {results_dir / 'comparison'}; run scripts/run_comparison.py")
    parts = [HEADER.format(machine=df["machine"].iloc[0], tolerance=tolerance_text(df), folder=results_dir.name,
                           profile=profile, scope=scope_text(profile, df["target"].unique()))]
    for (model, steps), part in df.groupby(["model", "steps"], sort=False):
        parts.append(f"### {model}, {steps} steps\n")
        parts.append(f"Test set: {int(part['n_test'].max())} samples. Cells: test PSNR (dB) [95% interval] @ test FLOPs "
                     "speedup; CG-Taylor − it: paired difference (dB) [95% interval].\n")
        cost = read_json_record(results_dir / "comparison" / f"{model}-{steps}steps.cost.json",
                                ("evaluations", "evaluation_seconds"))
        if cost is not None:
            parts.append(f"Compute: {describe_cost(cost)}.\n")
        parts.append(to_markdown(model_table(part)))
    parts += compute_section(results_dir, list(df.groupby(["model", "steps"], sort=False).groups))
    parts += ["\n### Verdicts (CG-Taylor against each peer)\n", to_markdown(verdict_counts(df))]
    parts += variant_sections(df)
    parts += reach_section(df)
    parts += step_gains_section(results_dir)
    parts += cost_section(results_dir, df)
    parts += half_width_section(results_dir, df)
    parts += ["\n### How far each method's speedup moved from selection to test\n",
              "Over every model, step count and target: the cells whose selection speedup landed within the tolerance, "
              "how many of them left it on the test set (those carry no verdict), and the relative change of the "
              "speedup (%).\n", to_markdown(speed_drift(df))]
    moved = against_sweeps(df, results_dir)
    if not moved.empty:
        parts += ["\n### The same cells as the sweep tables read them (`results/tables/summary.md`)\n",
                  "The sweep tables interpolate each method's sweep at the speedup, on the samples that chose the "
                  "sweep's points, with each method's preset warm-up; the protocol lands each method there, over the "
                  "shared warm-up grid, and scores it on other samples.\n", to_markdown(moved)]
    notes = caveats(df)
    parts += ["\n### Cells with a caveat\n", "\n".join(notes) + "\n" if notes else "None.\n"]
    pending = unfinished(results_dir) + older_protocol(df) + missing_entries(df, expected)
    if pending:
        parts += ["\n### Not yet measured\n", "\n".join(pending) + "\n"]
    text = "\n".join(parts)
    atomic_write_text(df.drop(columns=["test_psnr_per_sample"]).to_csv(index=False),
                      results_dir / "comparison" / "summary.csv")
    atomic_write_text(text, results_dir / "comparison" / "summary.md")
    others = [] if profile in COMPARISON_ONLY_PROFILES else measured_sections(results_dir)
    readme = "\n".join([text, *others])
    atomic_write_text(readme, results_dir / "README.md")
    return readme
