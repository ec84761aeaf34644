#!/usr/bin/env python
"""Measure the shipped zoo models: sample quality (evaluator metrics), sampling speed, sample grids.

    python scripts/eval_zoo.py [--n-images 100] [--n-videos 20] [--steps 50]

Writes results/zoo.md, results/zoo.json and results/figures/zoo_{dit,flux,wan}_samples.png. Every number
in those files is measured by this script from the weights in src/cgtaylor/zoo/weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see scripts/train_zoo.py
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cgtaylor import zoo  # noqa: E402
from cgtaylor.io import atomic_write_text  # noqa: E402
from cgtaylor.zoo import data, evaluator, families, models, recipes, train  # noqa: E402

BARS = {  # metric -> minimum, per model (from the zoo's quality bar)
    "dit-digits": {"digit_accuracy": 0.90},
    "flux-digits": {"digit_accuracy": 0.85, "colour_accuracy": 0.90, "position_accuracy": 0.90},
    "wan-digits": {"digit_accuracy": 0.80, "direction_accuracy": 0.90},
}
SPEED = {"dit-digits": (16, 20.0), "flux-digits": (16, 20.0), "wan-digits": (4, 40.0)}  # batch, max seconds


def time_sampling(model, steps, batch, repeats):
    conds = model.default_conditions(batch, seed=123)
    model(conds, num_inference_steps=2, seed=0)  # warm-up (same shapes as the timed calls)
    ts = []
    for r in range(repeats):
        t0 = time.perf_counter()
        model(conds, num_inference_steps=steps, seed=r)
        ts.append(time.perf_counter() - t0)
    return ts


def time_training_steps(name, threads, steps, warmup=2, timed=4):
    """What a from-scratch retrain of ``steps`` steps of ``name``'s recipe (conf/zoo) costs here, at the torch thread
    count its run used: seconds per step of a freshly initialised model (and per guidance-distillation step, which
    also runs the teacher, where the recipe distils) and the minutes that makes."""
    from omegaconf import OmegaConf

    path = ROOT / "conf" / "zoo" / f"{name}.yaml"
    recipe, _ = recipes.split_model_config(OmegaConf.to_container(OmegaConf.load(path)), str(path))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = models.new_model(name, families.NAME_KIND[name])
        params = train.parameters(model)
        opt = train.new_optimiser(params, recipe["lr"])
        ema = [p.detach().clone() for p in params]

        def seconds_per_step(recipe, teacher=None):
            times = []
            for step in range(warmup + timed):
                start = time.perf_counter()
                train.optimisation_step(model, params, opt, ema, step, recipe, teacher)
                times.append(time.perf_counter() - start)
            return statistics.median(times[warmup:])

        start = recipe["guidance_distillation_from_step"]
        plain = seconds_per_step(dict(recipe, guidance_distillation_from_step=None))
        if start is None or start >= steps:
            return {"threads": threads, "seconds_per_step": plain, "minutes_estimate": plain * steps / 60}
        distil = seconds_per_step(dict(recipe, guidance_distillation_from_step=0), train.frozen_copy(model, ema))
        return {"threads": threads, "seconds_per_step": plain, "seconds_per_distillation_step": distil,
                "minutes_estimate": (plain * start + distil * (steps - start)) / 60}
    finally:
        torch.set_num_threads(previous)


def _label(name, cond):
    if name == "dit-digits":
        return str(cond)
    if name == "flux-digits":
        d, c, p = zoo.parse_flux_caption(cond)
        return f"{d} {c}\n{p}"
    return cond.replace("a ", "", 1)


def grid_images(name, x, conds, want, preds, path, cols, steps):
    n = x.shape[0]
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.35, rows * (2.0 if name == "flux-digits" else 1.6)))
    for k, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if k >= n:
            continue
        img = x[k].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ok = preds[k] == want[k]
        ax.set_title(f"{_label(name, conds[k])}\npred {preds[k]}", fontsize=6, color="black" if ok else "red")
    fig.suptitle(f"{name}: {steps}-step samples (title: condition / evaluator's digit; red = digit wrong)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def grid_videos(name, v, conds, dirs, path, steps):
    n, _, f = v.shape[:3]
    fig, axes = plt.subplots(n, f, figsize=(f * 1.0, n * 1.1))
    for i in range(n):
        for j in range(f):
            ax = axes[i, j]
            ax.imshow(v[i, 0, j].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{conds[i].replace('a ', '', 1)}\n(seen: {dirs[i]})", fontsize=6)
            if i == 0:
                ax.set_title(f"frame {j}", fontsize=6)
    fig.suptitle(f"{name}: {steps}-step videos, one row per caption", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def real_baselines(ev_dir=None):
    """The evaluator's metrics on real held-out digits built into the same scenes (an upper reference)."""
    x, y = data.digits16("test")
    g = torch.Generator().manual_seed(0)
    out = {"dit-digits": evaluator.evaluate("dit-digits", x, [int(v) for v in y], ev_dir)}
    imgs, caps = [], []
    for k in range(len(x)):
        c = list(data.COLOURS)[int(torch.randint(0, 7, (1,), generator=g))]
        p = data.POSITIONS[int(torch.randint(0, 5, (1,), generator=g))]
        imgs.append(data.colour_scene(x[k], c, p)); caps.append(zoo.flux_caption(int(y[k]), c, p))
    out["flux-digits"] = evaluator.evaluate("flux-digits", torch.stack(imgs), caps, ev_dir)
    vids, caps = [], []
    for k in range(0, len(x), 4):
        d = data.DIRECTIONS[(k // 4) % 4]
        vids.append(data.motion_video(x[k], d, int(torch.randint(4, 13, (1,), generator=g))))
        caps.append(zoo.wan_caption(int(y[k]), d))
    out["wan-digits"] = evaluator.evaluate("wan-digits", torch.stack(vids), caps, ev_dir)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--n-videos", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--models", nargs="+", default=list(zoo.MODEL_NAMES), choices=list(zoo.MODEL_NAMES),
                    help="models to (re)measure; others keep their entries from an existing zoo.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite zoo.md from an existing zoo.json")
    ap.add_argument("--weights-dir", default=None, help="evaluate weights saved here instead of the shipped ones")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    if args.render_only:
        atomic_write_text(render(json.loads((out / "zoo.json").read_text()), args), out / "zoo.md")
        return
    wdir = Path(args.weights_dir) if args.weights_dir else zoo.WEIGHTS_DIR
    ev_dir = str(wdir) if args.weights_dir else None
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "diffusers": __import__("diffusers").__version__, "python": platform.python_version()},
              "evaluator": json.loads((wdir / "evaluator.json").read_text()),
              "real_reference": real_baselines(ev_dir), "models": {}, "settings": vars(args)}
    old = out / "zoo.json"
    if set(args.models) != set(zoo.MODEL_NAMES) and old.exists():
        report["models"] = json.loads(old.read_text()).get("models", {})
    for name in args.models:
        m = zoo.load(wdir / f"{name}.json")
        batch, limit = SPEED[name]
        n = args.n_videos if name == "wan-digits" else args.n_images
        print(f"[{name}] timing {batch} x {args.steps} steps ...", flush=True)
        ts = time_sampling(m, args.steps, batch, args.repeats)
        print(f"[{name}] sampling {n} for quality ...", flush=True)
        conds = m.default_conditions(n, seed=0)
        x = m.sample_in_batches(conds, batch, seed=1000, num_inference_steps=args.steps)
        metrics = evaluator.evaluate(name, x, conds, ev_dir)
        bars = {k: {"bar": v, "measured": metrics[k], "met": metrics[k] >= v} for k, v in BARS[name].items()}
        speed = {"batch": batch, "steps": args.steps, "seconds_median": statistics.median(ts), "seconds_all": ts,
                 "bar_seconds": limit, "met": statistics.median(ts) <= limit}
        train_threads = int(m.meta.get("training", {}).get("threads", 1))
        retrain = time_training_steps(name, train_threads, m.meta.get("training", {}).get("steps", 0))
        report["models"][name] = {"class": type(m.transformer).__name__, "num_blocks": m.num_blocks,
                                  "params_M": round(sum(p.numel() for p in m.transformer.parameters()) / 1e6, 3),
                                  "sampler": m.sampler_defaults, "training": m.meta.get("training", {}),
                                  "metrics": metrics, "bars": bars, "speed": speed,
                                  "retrain": retrain}
        print(f"[{name}] {metrics} speed {speed['seconds_median']:.2f}s", flush=True)
        short = name.split("-")[0]
        fig = out / "figures" / f"zoo_{short}_samples.png"
        if name == "wan-digits":
            k = min(8, n)
            grid_videos(name, x[:k], conds[:k], evaluator.direction_of(x[:k]), fig, args.steps)
        else:
            k = min(40 if name == "dit-digits" else 24, n)
            preds = evaluator.classify(x[:k], evaluator.load_evaluator(ev_dir)).tolist()
            want = [a["digit"] for a in m.condition_attributes(conds[:k])]
            grid_images(name, x[:k], conds[:k], want, preds, fig, cols=10 if name == "dit-digits" else 8, steps=args.steps)
        report["models"][name]["figure"] = str(fig.relative_to(out))
        report["models"][name]["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        report["models"][name]["eval_settings"] = {"threads": args.threads, "repeats": args.repeats, "steps": args.steps}
    report["models"] = {n: report["models"][n] for n in zoo.MODEL_NAMES if n in report["models"]}
    atomic_write_text(json.dumps(report, indent=2), out / "zoo.json")
    atomic_write_text(render(report, args), out / "zoo.md")
    print((out / "zoo.md").read_text())


def _retrain(model_report, key, digits):
    retrain = model_report.get("retrain", {})
    value = retrain.get(key)
    text = "-" if value is None else f"{value:.{digits}f}"
    if key == "seconds_per_step" and retrain.get("seconds_per_distillation_step") is not None:
        text += f" (distillation {retrain['seconds_per_distillation_step']:.{digits}f})"
    return text


def _f(v, d=3):
    return f"{v:.{d}f}" if isinstance(v, float) else str(v)


def render(r, args) -> str:
    mc = r["machine"]
    L = ["# Demo model zoo: measured quality and speed", "",
         f"Generated by `python scripts/eval_zoo.py` from the shipped weights in `src/cgtaylor/zoo/weights/`. "
         f"Machine: {mc['cores']}-core CPU ({mc['cpu']}), torch threads: {mc['threads']}, torch {mc['torch']}, "
         f"diffusers {mc['diffusers']}, Python {mc['python']}. All samples use {args.steps} sampler steps at full "
         f"compute (no accelerator).", "",
         "Sampling numbers per model were measured when its row says; wall-clock figures on this 2-core machine "
         "move with any other load on it, so read them as upper bounds.", "",
         "Three small diffusers transformers trained on the real handwritten digits of "
         "`sklearn.datasets.load_digits` (a fixed, seeded 20% test split is held out from every model and from "
         "the evaluator), standing in for DiT-XL/2, FLUX.1-dev and Wan2.1:", "",
         "| model | stands in for | diffusers class | blocks | params (M) | sampler | training steps | batch | train minutes (recorded) | s / training step here | retrain here (min) | final loss |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    stand = {"dit-digits": "DiT-XL/2", "flux-digits": "FLUX.1-dev", "wan-digits": "Wan2.1"}
    samp = {"dit-digits": "DDIM, batch-doubled CFG", "flux-digits": "flow-match Euler, guidance-embedded (distilled), no CFG",
            "wan-digits": "flow-match Euler, cond/uncond CFG"}
    for n, m in r["models"].items():
        t = m["training"]
        L.append(f"| {n} | {stand[n]} | `{m['class']}` | {m['num_blocks']} | {m['params_M']} | {samp[n]} "
                 f"({', '.join(f'{k}={v}' for k, v in m['sampler'].items())}) | {t.get('steps')} | {t.get('batch_size')} | "
                 f"{t.get('train_minutes')} | {_retrain(m, 'seconds_per_step', 2)} | {_retrain(m, 'minutes_estimate', 0)} | "
                 f"{t.get('final_loss')} |")
    L += ["", "Training: AdamW lr 1e-3 with linear warm-up (and a linear cool-down where listed below), "
          "gradient clipping 1.0, EMA of the weights "
          "(decay min(0.999, (1+k)/(10+k)) at step k) is what ships. *train minutes (recorded)* is the wall-clock "
          "time the training run recorded, part of it on a CPU shared with other jobs; *s / training step here* is "
          "measured by this script (median of 4 steps of a freshly initialised model, the recipe's batch size, "
          "the torch thread count the run used; in brackets, a guidance-distillation step, which also runs the teacher), "
          "and *retrain here* is training steps x those times: about what a "
          "from-scratch `scripts/train_zoo.py` run of the recipe takes on this machine (the goal is at most 30 "
          "minutes per model).", "",
          "## Quality (evaluator metrics on generated samples)", "",
          f"Evaluator: a small CNN trained on the real training split only; accuracy on the {r['evaluator']['num_test']} "
          f"held-out real test digits {r['evaluator']['test_accuracy']:.3f} (placed-and-recropped: "
          f"{r['evaluator']['test_accuracy_augmented']:.3f}). The *classifier Fréchet distance* is the Fréchet "
          "distance between Gaussian fits of this CNN's 64-d features on the samples and on the held-out real "
          "test digits (not an FID: the feature network is this small CNN).", "",
          "| model | samples | metric | measured | 95% interval | bar | met | real held-out digits in the same scenes |",
          "|---|---|---|---|---|---|---|---|"]
    for n, m in r["models"].items():
        ref = r["real_reference"][n]
        count = m["metrics"]["num_samples"]
        for k, v in m["metrics"].items():
            if k == "num_samples":
                continue
            b = m["bars"].get(k)
            accuracy = k.endswith("_accuracy")
            interval = "[{:.2f}, {:.2f}]".format(*evaluator.wilson_interval(v, count)) if accuracy else "-"
            L.append(f"| {n} | {count} | {k} | {_f(v)} | {interval} | {'>= ' + _f(b['bar'], 2) if b else '-'} | "
                     f"{('yes' if b['met'] else '**no**') if b else '-'} | {_f(ref.get(k, float('nan')))} |")
    L += ["", "digit_accuracy for wan-digits is per frame (every frame of every video cropped around the digit's "
          "centre of mass and classified). Conditions are `model.default_conditions(n, seed=0)` (all digits, colours, "
          "positions, directions), seeds 1000 + batch offset. The 95% interval is Wilson's over the samples (for "
          "wan-digits, over videos: frames of one video are not independent); *met* compares the measured value with "
          "the bar. The last column scores real held-out digits built into "
          "the same kind of image/scene/video with the same checks; for dit-digits it is the held-out set itself, so its "
          "classifier Fréchet distance is 0 by construction. Guidance (wan-digits' classifier-free guidance, "
          "flux-digits' distilled guidance) draws bolder, fully saturated strokes than the real digits' soft grey "
          "levels: it buys conditional accuracy and costs distribution fidelity, which shows as classifier Fréchet "
          "distances far above those of the real digits in the same scenes.", "",
          "## Speed (full compute, median of repeats after a warm-up call)", "",
          "| model | batch | steps | transformer calls / step | torch threads | seconds (median) | all repeats | bar | met | measured at (UTC) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    calls = {"dit-digits": "1 (CFG batch-doubled)", "flux-digits": "1", "wan-digits": "2 (cond + uncond)"}
    for n, m in r["models"].items():
        s = m["speed"]
        L.append(f"| {n} | {s['batch']} | {s['steps']} | {calls[n]} | {m['eval_settings']['threads']} | {s['seconds_median']:.2f} | "
                 f"{', '.join(f'{t:.2f}' for t in s['seconds_all'])} | <= {s['bar_seconds']:.0f} s | {'yes' if s['met'] else '**no**'} | "
                 f"{m['measured_at']} |")
    L += ["", "Wall-clock on this shared CPU varies with other load on the machine; the speedup measurements of the "
          "project use ratios of interleaved repeats, not these absolute figures.", ""]
    missed = [f"{n}: {k} {_f(b['measured'])} (bar {_f(b['bar'], 2)})" for n, m in r["models"].items()
              for k, b in m["bars"].items() if not b["met"]]
    missed += [f"{n}: {m['speed']['batch']} samples x {m['speed']['steps']} steps took {m['speed']['seconds_median']:.1f} s "
               f"(bar {m['speed']['bar_seconds']:.0f} s)" for n, m in r["models"].items() if not m["speed"]["met"]]
    missed += [f"{n}: a from-scratch retrain here takes about {m['retrain']['minutes_estimate']:.0f} min (goal 30 min)"
               for n, m in r["models"].items() if m.get("retrain", {}).get("minutes_estimate", 0) > 30]
    L += ["## Bars not met", ""] + ([f"- {x}" for x in missed] or ["- none"]) + [""]
    L += ["## How the shipped weights were trained", "",
          "`scripts/train_zoo.py` with the recipes in `conf/zoo/*.yaml`, which fix each model's step count "
          "(`max_steps`) to the one its shipped weights reached; the batch, noise and caption dropout of step k "
          "depend only on the seed and k, so a run resumed from a checkpoint takes the same steps as one that "
          "never stopped, and a from-scratch run reproduces the recipe step for step. The shipped weights were "
          "trained in stages resumed from checkpoints: dit-digits in one run on a CPU shared with other jobs; "
          "flux-digits and wan-digits first on that shared CPU, then continued on the idle machine, two runs in "
          "parallel with one torch thread each (on this 2-core virtual machine one thread per process trained "
          "faster than two threads in one process); flux-digits' last stages are a learning-rate cool-down, caption dropout "
          "and guidance distillation (below). "
          "Each model's JSON (`src/cgtaylor/zoo/weights/<name>.json`) "
          "records the steps, the recorded minutes and the thread count; checkpoints go to `checkpoints/zoo/` "
          "(not shipped).", "",
          "The flow-matching models first drew noise levels from a plain logit-normal, which puts about 1% of the "
          "training samples above sigma 0.9, where a 50-step sampler spends its first five steps and where the "
          "caption alone decides which digit is drawn: by then flux-digits had learned colour, position and "
          "digit-like strokes but drew a digit unrelated to the caption. From the step given below, training "
          "shifted the noise levels "
          "towards noise as SD3 and FLUX do (`sigma_shift` in `conf/zoo/`):", ""]
    for n, m in r["models"].items():
        t = m["training"]
        if t.get("sigma_shift", 1.0) != 1.0:
            L.append(f"- {n}: shift {t['sigma_shift']:g} from step {t['sigma_shift_from_step']} of {t['steps']}")
    distilled = [(n, m["training"]) for n, m in r["models"].items()
                 if m["training"].get("guidance_distillation_from_step") is not None]
    if distilled:
        L += ["", "Guidance distillation, as FLUX.1-dev was made (`guidance_distillation_from_step` in `conf/zoo/`): "
              "the model first learned a null caption (captions dropped at rate `label_dropout` from "
              "`label_dropout_from_step` on); then a frozen copy of its EMA weights served as a teacher sampled "
              "with classifier-free guidance, and the model learned to give the teacher's guided velocity at "
              "strength w in one call, w entering through FLUX's guidance embedding and drawn per sample from "
              "`guidance_range`. Sampling passes the strength as `guidance`, still one transformer call per step:", ""]
        for n, t in distilled:
            lo, hi = t["guidance_range"]
            L.append(f"- {n}: captions dropped at {t['label_dropout']:g} from step {t['label_dropout_from_step']}, "
                     f"distilled from step {t['guidance_distillation_from_step']} with w in [{lo:g}, {hi:g}]; "
                     f"sampled at guidance {families.SAMPLER_DEFAULTS[families.NAME_KIND[n]]['guidance']:g}")
    schedules = [(n, m["training"], recipes.lr_knots(m["training"])) for n, m in r["models"].items()]
    schedules = [(n, t, knots) for n, t, knots in schedules if knots]
    if schedules:
        L += ["", "Learning-rate schedule (`lr_schedule` in `conf/zoo/`): constant after warm-up, then linear between "
              "the steps listed and held after the last, so the EMA that ships averages weights taken at a small "
              "step size:", ""]
        for n, t, knots in schedules:
            points = ", ".join(f"{t['lr'] * f:g} at step {s}" for s, f in knots)
            L.append(f"- {n}: lr {points}; {t['steps']} steps in all")
    L += ["",
          "## Samples", ""]
    for n, m in r["models"].items():
        L.append(f"![{n} samples]({m['figure']})")
        L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    main()
