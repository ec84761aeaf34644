"""CG-Taylor's own settings in the comparison: the ablation of its variants, and the best of them against the peers.

Entries with ``role: variant`` are settings of CG-Taylor (the paper's, module forecasts, other forecasting bases,
gate options); every other entry is a peer. Verdict counts in the results section are over peers only. Per model,
step count and target, the best variant is the one with the highest mean PSNR on the *selection* set among those that
landed on the target, so the choice takes no look at the test samples; its test samples are then compared with each
peer's by the same paired bootstrap and verdict rules as the project default's.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from .bootstrap import paired_difference, verdict
from .comparison import add_verdicts


def roles(df: pd.DataFrame) -> pd.Series:
    """Each row's role; tables written before roles were recorded count every ``cg-taylor*`` group as a variant."""
    guessed = df["group"].astype(str).str.startswith("cg-taylor").map({True: "variant", False: "peer"})
    if "role" not in df:
        return guessed
    return df["role"].where(df["role"].isin(["peer", "variant"]), guessed)


def peers_only(df: pd.DataFrame) -> pd.DataFrame:
    return df[roles(df) == "peer"]


def variant_table(df: pd.DataFrame) -> pd.DataFrame:
    """The variants of CG-Taylor against the project default on the same test samples."""
    part = df[roles(df) == "variant"]
    columns = {"model": "model", "steps": "steps", "target": "target", "group": "variant",
               "selection_psnr": "selection PSNR (dB)", "test_speedup": "test speedup", "test_psnr": "test PSNR (dB)",
               "reference_minus_this": "default − it (dB)", "difference_low": "low", "difference_high": "high",
               "verdict": "verdict of the default"}
    shown = part[list(columns)].rename(columns=columns).sort_values(["model", "steps", "target"], kind="stable")
    return shown.round({"selection PSNR (dB)": 1, "test speedup": 2, "test PSNR (dB)": 1, "default − it (dB)": 1,
                        "low": 1, "high": 1})


def best_on_selection(part: pd.DataFrame) -> pd.Series | None:
    """The row with the best selection PSNR among those on target (None where none landed)."""
    candidates = part[part["on_target"].astype(bool)]
    return None if candidates.empty else candidates.loc[candidates["selection_psnr"].idxmax()]


def best_variant(part: pd.DataFrame) -> pd.Series | None:
    """The variant with the best selection PSNR among those on target (None where no variant landed)."""
    return best_on_selection(part[roles(part) == "variant"])


def best_against_peers(df: pd.DataFrame, resamples: int = 10000) -> pd.DataFrame:
    """Per model, step count and target: the best variant (chosen on selection) against every peer, on test."""
    frames = []
    for (model, steps, target), part in df.groupby(["model", "steps", "target"], sort=False):
        best = best_variant(part)
        if best is None:
            continue
        scored = add_verdicts(pd.concat([part[roles(part) == "peer"], best.to_frame().T]), best["group"], resamples)
        scored = scored[scored["group"] != best["group"]]
        frames.append(pd.DataFrame({
            "model": model, "steps": steps, "target": target, "best variant": best["group"],
            "its test PSNR (dB)": round(float(best["test_psnr"]), 1), "peer": scored["group"],
            "peer test PSNR (dB)": scored["test_psnr"].astype(float).round(1),
            "best − peer (dB)": scored["reference_minus_this"].astype(float).round(1),
            "low": scored["difference_low"].astype(float).round(1),
            "high": scored["difference_high"].astype(float).round(1), "verdict": scored["verdict"]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


REACH_GROUPS = ("cg-taylor", "cg-taylor-paper", "cg-taylor-best")  # the project default, the paper's form, the preset


def reach_against_peers(df: pd.DataFrame, resamples: int = 10000) -> pd.DataFrame:
    """Per model and step count with two targets or more: the CG-Taylor entries of ``REACH_GROUPS`` and the best
    variant on selection, each landed on the highest target, against the best peer (highest selection PSNR, on
    target, no caveat) at the target below it, on the same test samples.
    ``ahead`` or ``level``: the gate keeps at the higher speedup what the best peer keeps at the lower one."""
    rows = []
    for (model, steps), part in df.groupby(["model", "steps"], sort=False):
        targets = sorted(part["target"].unique())
        if len(targets) < 2:
            continue
        high, low = targets[-1], targets[-2]
        peers = part[(roles(part) == "peer") & (part["target"] == low)]
        if "caveat" in peers:
            peers = peers[~peers["caveat"].apply(lambda c: isinstance(c, str) and bool(c))]
        peer = best_on_selection(peers)
        if peer is None:
            continue
        peer_samples = json.loads(peer["test_psnr_per_sample"])
        ours = part[(roles(part) == "variant") & (part["target"] == high)]
        best = best_variant(ours)
        shown = set(REACH_GROUPS) | ({best["group"]} if best is not None else set())
        ours = ours[ours["group"].isin(shown)]
        for _, row in ours.iterrows():
            if not bool(row["on_target"]):
                said, interval = f"n/a: off target ({float(row['selection_speedup']):.2f}x)", None
            else:
                interval = paired_difference(json.loads(row["test_psnr_per_sample"]), peer_samples, resamples=resamples)
                said = verdict(interval)
            rows.append({"model": model, "steps": steps, "CG-Taylor entry": row["group"],
                         "its test PSNR (dB)": round(float(row["test_psnr"]), 1),
                         "its test speedup": round(float(row["test_speedup"]), 2),
                         "best peer at the lower target": peer["group"],
                         "peer test PSNR (dB)": round(float(peer["test_psnr"]), 1),
                         "peer test speedup": round(float(peer["test_speedup"]), 2),
                         "it − peer (dB)": None if interval is None else round(interval.mean, 1),
                         "low": None if interval is None else round(interval.low, 1),
                         "high": None if interval is None else round(interval.high, 1), "verdict": said,
                         "targets": f"{high:g}x against {low:g}x"})
    return pd.DataFrame(rows)


def _config_fields(params: dict) -> dict:
    from dataclasses import asdict

    from ..config import CGTaylorConfig

    values = {k: v for k, v in params.items() if k != "num_inference_steps"}
    fitted = values.get("step_scales") == "fit"  # fitted on the model when it runs: the form names the fit
    fields = asdict(CGTaylorConfig(**dict(values, step_scales=None) if fitted else values))
    return dict(fields, step_scales="fit") if fitted else fields


def preset_agreement(df: pd.DataFrame, family_of: dict[str, str], name: str = "best", target: float = 2.0) -> list[str]:
    """Per model, whether ``CGTaylorConfig.preset(name, family)`` is the setting the comparison chose at ``target``:
    the same form (every field but the threshold and the warm-up) and the same threshold and warm-up. Only the
    model's default step count (its highest) is checked: the presets are fitted there, and the lower step counts run
    a few of the variants only."""
    import json

    from ..presets import PRESETS, SEARCHED, preset_values

    lines = []
    default_steps = df.groupby("model")["steps"].transform("max")
    for (model, steps), part in df[df["steps"] == default_steps].groupby(["model", "steps"], sort=False):
        family = family_of.get(model)
        if family is None or family not in PRESETS.get(name, {}):
            continue
        best = best_variant(part[part["target"] == target])
        if best is None:
            lines.append(f"- {model}, {steps} steps: no variant landed on {target:g}x; preset {name!r} unchecked")
            continue
        chosen, preset = _config_fields(json.loads(best["params"])), _config_fields(preset_values(name, family))
        differs = sorted(k for k in chosen if k not in SEARCHED and chosen[k] != preset[k])
        searched = [k for k in SEARCHED if not math.isclose(chosen[k], preset[k], rel_tol=0.01)]  # presets round
        said = (f"matches {best['group']}" if not differs else
                f"differs from {best['group']} in {', '.join(differs)}")
        if not differs and searched:
            said += f" except its {' and '.join(searched)}, which the protocol landed elsewhere"
        lines.append(f"- {model}, {steps} steps: `CGTaylorConfig.preset({name!r}, {family!r})` {said}, the best "
                     f"variant at {target:g}x on selection")
    return lines
