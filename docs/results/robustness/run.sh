#!/usr/bin/env bash
# The robustness study (docs/robustness.md, results in this directory): every command, in order.
# Run from the repository root:
#   nohup docs/results/robustness/run.sh >> runs/robustness/log.txt 2>&1 &
# A method is trained, then evaluated at every strength; its evaluations are kept under
# docs/results/robustness/<part>/evaluations/ (commit them) and `done/<method>` marks it
# finished, so a rerun on another machine, whose runs/ is gone, goes on with the next method.
# Training runs and evaluations also resume where they stopped.
set -euo pipefail
W=${W:-runs/robustness}                # training runs (not committed)
OUT=${OUT:-docs/results/robustness}    # kept evaluations, tables, curves (committed)
EPISODES=${EPISODES:-100}              # seeded evaluation episodes per member and strength
PERTURB=(--perturb='obs_noise=0;0.1;0.3;0.6;1' --perturb='action_noise=0;0.1;0.3;0.6;1'
         --perturb='latency=0;1;2;4;8' --perturb='sticky=0;0.1;0.3;0.6;0.9'
         --perturb='mass=0;-0.5;0.5;1;3' --perturb='friction=0;-0.5;0.5;1;3'
         --perturb='push=0;1;2;5;10')

# same_evals KEPT RUN: every eval.csv under KEPT has the same step/success/return/length rows
# as its counterpart under RUN.
same_evals() {
  python - "$1" "$2" <<'PY'
import csv, glob, os, sys
kept, run = sys.argv[1:]
rows = lambda p: [[r[k] for k in ("step", "success", "return", "length")]
                  for r in csv.DictReader(open(p))]
files = glob.glob(os.path.join(kept, "**", "eval.csv"), recursive=True)
sys.exit(0 if files and all(os.path.exists(os.path.join(run, os.path.relpath(f, kept)))
                            and rows(f) == rows(os.path.join(run, os.path.relpath(f, kept)))
                            for f in files) else 1)
PY
}

# study PART RUN PRESET SEEDS PERTURB_FLAGS -- [TRAIN_OVERRIDES...]: train RUN (METHOD or
# METHOD/VARIANT), evaluate it at every strength, keep its curves and config (no checkpoints)
# beside the evaluations, mark it done.
study() {
  local part=$1 run=$2 preset=$3 seeds=$4 perturb=()
  shift 4
  while [[ $1 != -- ]]; do perturb+=("$1"); shift; done
  shift
  [[ -e $OUT/$part/done/$run ]] && return
  python -m experiments.train --config=experiments/configs/${run%%/*}.py:$preset --seeds=$seeds \
    "$@" --workdir=$W/$part/$run
  # Evaluations kept from an earlier machine are reused only if this training reproduced that
  # one's evaluation rows (training is deterministic on a CPU); else they are made again.
  if [[ -d $OUT/$part/curves/$run ]] && ! same_evals $OUT/$part/curves/$run $W/$part/$run; then
    echo "$run: retrained run differs from the kept one; its kept evaluations are dropped"
    rm -rf $OUT/$part/curves/$run $OUT/$part/evaluations/$(tr / _ <<< "$W/$part/$run")_*
  fi
  python -m experiments.robustness $W/$part/$run "${perturb[@]}" --episodes=$EPISODES \
    --out=$OUT/$part
  mkdir -p $OUT/$part/curves/$run
  tar -C $W/$part/$run --exclude=checkpoints --exclude=checkpoints.lock --exclude=tb -cf - . \
    | tar -C $OUT/$part/curves/$run -xf -
  mkdir -p "$(dirname "$OUT/$part/done/$run")" && date -u +%FT%TZ > "$OUT/$part/done/$run"
}

# 1. quick: DFP, QC-FQL and MVP, 5 seeds each (the comparison's configs).
for m in dfp qc_fql mvp; do study quick $m quick 0,1,2,3,4 "${PERTURB[@]}" --; done
python -m experiments.robustness "${PERTURB[@]}" --episodes=$EPISODES --reference=dfp \
  --out=$OUT/quick

# 2. quick-lift: the three methods, 3 seeds each, under the same perturbations.
for m in dfp qc_fql mvp; do study lift $m quick-lift 0,1,2 "${PERTURB[@]}" --; done
python -m experiments.robustness "${PERTURB[@]}" --episodes=$EPISODES --reference=dfp \
  --out=$OUT/lift

# 3. Noisy demonstrations: DFP and QC-FQL on quick data with action noise 0.1 and 0.3 (3 seeds),
#    evaluated unperturbed; sigma 0 is step 1's unperturbed evaluations (5 seeds).
for m in dfp qc_fql; do
  for s in 0.1 0.3; do
    study noisy $m/sigma=$s quick 0,1,2 --perturb=action_noise=0 -- \
      --config.env.dataset_action_noise=$s
  done
  for d in $OUT/quick/evaluations/*_quick_${m}_*; do
    mkdir -p $OUT/noisy/evaluations/$(basename $d) && cp -r $d/none $OUT/noisy/evaluations/$(basename $d)/
  done
done
python -m experiments.robustness --perturb=action_noise=0 --episodes=$EPISODES \
  --label_key=method,env.dataset_action_noise --out=$OUT/noisy
