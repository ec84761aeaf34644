"""Named settings of CG-Taylor per model family: the paper's, and the best variant of the equal-footing comparison.

``"paper"``: the paper's orders, warm-ups and the low end of its thresholds (50 steps), with its absolute
last-block forecast and TaylorSeer's recursion.

``"best"``: per family, the variant of CG-Taylor with the best selection PSNR at 2x FLOPs speedup in the comparison
on the family's demo model in the extended profile, which runs every variant (``results-extended/README.md``, "The
best variant against each peer"), with the threshold and warm-up the protocol landed on there.
``scripts/write_results.py`` checks these against the committed comparison and says in the results section where the
comparison's choice and the preset differ. The zoo's models are small:
on a real checkpoint, keep the form and calibrate the threshold (``calibrate_cg_taylor``).
"""

from __future__ import annotations

_PAPER_FORM = dict(forecast="last_block", taylor_formula="taylorseer")
_MODULES_CAPPED_FORM = dict(forecast="modules", taylor_formula="taylorseer")
_BDF2_HEUN_FORM = dict(forecast="residual", taylor_formula="bdf2_heun")

PRESETS: dict[str, dict[str, dict]] = {
    "paper": {
        "dit": dict(_PAPER_FORM, threshold=0.008, first_block_order=3, last_block_order=1, warmup_steps=3),
        "flux": dict(_PAPER_FORM, threshold=0.03, first_block_order=1, last_block_order=1, warmup_steps=5),
        "wan": dict(_PAPER_FORM, threshold=0.18, first_block_order=3, last_block_order=1, warmup_steps=6),
    },
    # dit-digits and flux-digits: per-module forecasts with TaylorSeer's expansion and a cap on forecasts in a row won
    # the selection at 2x (protocol revision 3); on DiT's test set it is still behind diffusers' TaylorSeer.
    # wan-digits: the last-block residual forecast by BDF2 with a Heun correction won it (warm-up grid grown to 12)
    "best": {
        "dit": dict(_MODULES_CAPPED_FORM, threshold=0.02558, first_block_order=3, last_block_order=1,
                    max_consecutive_forecasts=4, warmup_steps=9),
        "flux": dict(_MODULES_CAPPED_FORM, threshold=0.004404, first_block_order=1, last_block_order=3,
                     max_consecutive_forecasts=2, warmup_steps=2),
        "wan": dict(_BDF2_HEUN_FORM, threshold=0.00541, first_block_order=3, last_block_order=2, warmup_steps=12),
    },
}

# Settings the protocol searches (the threshold) or sweeps over a shared grid (the warm-up): a preset's *form* is the
# rest, and that is what must match the comparison's best variant.
SEARCHED = ("threshold", "warmup_steps")


def preset_values(name: str, family: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"CGTaylorConfig.preset name must be one of {sorted(PRESETS)}, got {name!r}")
    families = PRESETS[name]
    if family not in families:
        raise ValueError(f"CGTaylorConfig.preset({name!r}, family) family must be one of {sorted(families)}, "
                         f"got {family!r}")
    return dict(families[family])


def preset_form(name: str, family: str) -> dict:
    return {k: v for k, v in preset_values(name, family).items() if k not in SEARCHED}
