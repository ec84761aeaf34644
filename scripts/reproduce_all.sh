#!/usr/bin/env bash
# Rebuild results/ from the shipped demo models: the equal-footing comparison and the results section written from
# it, experiment tables, zoo quality, flux-digits' guidance sweep, calibration, then every notebook through
# papermill. Installs what it needs into .venv on first use.
#   bash scripts/reproduce_all.sh            default profile
#   bash scripts/reproduce_all.sh --extended the comparison alone with every variant and the lower step counts, on the
#                                            default profile's sample sets, into results-extended/ (about 3 hours)
#   bash scripts/reproduce_all.sh --reach    the comparison alone at 3x and 4x (every peer, the project default, the
#                                            paper's form, the `best` preset) into results-reach/, reading the 3x
#                                            evaluations stored under results/
#   bash scripts/reproduce_all.sh --full     more conditions and seeds, every sweep point, every variant, lower step
#                                            counts too
#   bash scripts/reproduce_all.sh --quick    a smoke run of the whole chain, into results-quick/
#   bash scripts/reproduce_all.sh --verify   the default profile from nothing into results-verify/ (no stored rows or
#                                            caches are read), then every number compared with results/
# A stopped run resumes: finished rows, cached references and executed notebooks are kept. A plain rerun re-reads the
# committed rows (it re-renders); --verify re-measures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(( $# <= 1 )) || { echo "usage: $0 [option]: one option at most (listed above in this script), got: $*" >&2; exit 2; }
profile=default
results="$root/results"
guidance_eval=(--n-images 192)
zoo_eval=(--n-images 192 --n-videos 16 --repeats 2)  # 192 samples: a 95% interval of about +-0.05 on an accuracy near 0.85
verify=false
comparison_only=false
case "${1:-}" in
  --extended) profile=extended; results="$root/results-extended"; comparison_only=true ;;
  --reach) profile=reach; results="$root/results-reach"; comparison_only=true ;;
  --full) profile=full; zoo_eval=(--n-images 480 --n-videos 40 --repeats 3) ;;
  --quick) profile=quick; results="$root/results-quick"; zoo_eval=(--n-images 4 --n-videos 2 --steps 10 --repeats 1)
           guidance_eval=(--n-images 16 --strengths 1 1.5) ;;
  --verify) verify=true; results="$root/results-verify"; rm -rf "$results" ;;
  "") ;;
  *) echo "usage: $0 [--extended|--reach|--full|--quick|--verify]" >&2; exit 2 ;;
esac
python="$("$root/scripts/ensure_env.sh")"
cd "$root"
export PYTHONUNBUFFERED=1
started=$(date +%s)
timings=()  # "step=seconds" for each finished step
current="" current_start=$started
step() {
  local now; now=$(date +%s)
  [ -z "$current" ] || timings+=("$current=$(( now - current_start ))")
  current="$*" current_start=$now
  echo; echo "== [$(( now - started ))s] $*"
}
# One process per CPU core (CGTAYLOR_WORKERS to change it), each with one torch thread: each takes its own share of
# the rows first and then reads the others' (cgtaylor.experiments.workers), so the cores never wait on one another.
workers="${CGTAYLOR_WORKERS:-$(nproc)}"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "CGTAYLOR_WORKERS must be a positive integer, got '$workers'" >&2; exit 2; }
in_parallel() {
  local pids=() status=0
  for (( rank = 0; rank < workers; rank++ )); do
    "$python" "$@" worker="$rank/$workers" threads=1 progress="$([ "$rank" = 0 ] && echo true || echo false)" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  return "$status"
}

if [ "$profile" = reach ] && [ -d "$root/results/comparison/rows" ]; then
  # the default profile's evaluations (a row's file name is the key of its setting, sample set and step count)
  mkdir -p "$results/comparison" && cp -rn "$root/results/comparison/rows" "$results/comparison/"
fi
step "1/7 equal-footing comparison and the results section (profile $profile)"
in_parallel scripts/run_comparison.py comparison="$profile" results_dir="$results"
if [ "$profile" != reach ]; then
  step "2/7 what a forecast step of each CG-Taylor variant costs, and its cache memory"
  "$python" scripts/measure_variant_cost.py --comparison "$profile" --results-dir "$results" --threads "$workers"
fi
if [ "$comparison_only" = true ]; then
  step "done: the comparison in $results/README.md"
  exit 0
fi
step "3/7 experiment tables (profile $profile)"
in_parallel scripts/run_experiments.py all=true profile="$profile" results_dir="$results"
step "4/7 zoo quality and sampling speed"
"$python" scripts/eval_zoo.py "${zoo_eval[@]}" --out "$results"
# two independent benches, one torch thread each, side by side (their outputs interleave in the log)
step "5-6/7 flux-digits against its distilled guidance strength; calibration: targets in speedup or PSNR"
"$python" scripts/eval_flux_guidance.py "${guidance_eval[@]}" --out "$results" --threads 1 & guidance=$!
"$python" scripts/eval_calibration.py --profile "$profile" --out "$results" --threads 1 & calibration=$!
status=0
wait "$guidance" || status=$?
wait "$calibration" || status=$?
(( status == 0 )) || { echo "guidance or calibration bench failed (status $status)" >&2; exit "$status"; }
step "7/7 notebooks"
"$python" scripts/run_notebooks.py "$profile" --results-dir "$results"
step "done: results section in $results/README.md, tables in $results/tables, figures in $results/figures"
if [ "$verify" = true ]; then
  # the step times of a run that read no stored row or cache: the profile's cost from nothing, kept with the results
  "$python" -m cgtaylor.experiments.run_time "$root/results/run_time_from_nothing.json" "$profile" "${timings[@]}"
  "$python" scripts/write_results.py --results-dir "$root/results"
  step "verify: fresh numbers in $results against the committed ones in $root/results"
  "$python" scripts/verify_results.py "$root/results" "$results"
fi
