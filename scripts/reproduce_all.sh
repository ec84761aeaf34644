#!/usr/bin/env bash
# Rebuild results/ from the shipped demo models: experiment tables, zoo quality, flux-digits' guidance sweep,
# calibration, then every notebook through papermill. Installs what it needs into .venv on first use.
#   bash scripts/reproduce_all.sh            default profile (about an hour from nothing on a 2-core CPU)
#   bash scripts/reproduce_all.sh --full     more conditions and seeds, every sweep point
#   bash scripts/reproduce_all.sh --quick    a smoke run of the whole chain (minutes), into results-quick/
# A stopped run resumes: finished table rows, cached references and executed notebooks are kept.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(( $# <= 1 )) || { echo "usage: $0 [option]: one option at most (listed above in this script), got: $*" >&2; exit 2; }
profile=default
results="$root/results"
guidance_eval=(--n-images 192)
zoo_eval=(--n-images 192 --n-videos 16 --repeats 2)  # 192 samples: a 95% interval of about +-0.05 on an accuracy near 0.85
case "${1:-}" in
  --full) profile=full; zoo_eval=(--n-images 480 --n-videos 40 --repeats 3) ;;
  --quick) profile=quick; results="$root/results-quick"; zoo_eval=(--n-images 4 --n-videos 2 --steps 10 --repeats 1)
           guidance_eval=(--n-images 16 --strengths 1 1.5) ;;
  "") ;;
  *) echo "usage: $0 [--full|--quick]" >&2; exit 2 ;;
esac
python="$("$root/scripts/ensure_env.sh")"
cd "$root"
export PYTHONUNBUFFERED=1
started=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - started ))s] $*"; }

step "1/5 experiment tables (profile $profile)"
"$python" scripts/run_experiments.py all=true profile="$profile" results_dir="$results"
step "2/5 zoo quality and sampling speed"
"$python" scripts/eval_zoo.py "${zoo_eval[@]}" --out "$results"
step "3/5 flux-digits against its distilled guidance strength"
"$python" scripts/eval_flux_guidance.py "${guidance_eval[@]}" --out "$results"
step "4/5 calibration: targets in speedup or PSNR"
"$python" scripts/eval_calibration.py --profile "$profile" --out "$results"
step "5/5 notebooks"
"$python" scripts/run_notebooks.py "$profile" --results-dir "$results"
step "done: tables in $results/tables, figures in $results/figures, executed notebooks in $results/notebooks"
