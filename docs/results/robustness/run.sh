#!/usr/bin/env bash
# The robustness study (docs/robustness.md): every command, in order. Each training run and
# each kept evaluation resumes where it stopped, so rerunning this script after an
# interruption continues the study. Run from the repository root:
#   nohup docs/results/robustness/run.sh >> runs/robustness/log.txt 2>&1 &
set -euo pipefail
W=${W:-runs/robustness}
PERTURB=(--perturb='obs_noise=0;0.1;0.3;0.6;1' --perturb='action_noise=0;0.1;0.3;0.6;1'
         --perturb='latency=0;1;2;4;8' --perturb='sticky=0;0.1;0.3;0.6;0.9'
         --perturb='mass=0;-0.5;0.5;1;3' --perturb='friction=0;-0.5;0.5;1;3'
         --perturb='push=0;1;2;5;10')

# 1. quick: DFP, QC-FQL and MVP, 5 seeds each (the comparison's configs).
for m in dfp qc_fql mvp; do
  python -m experiments.train --config=experiments/configs/$m.py:quick --seeds=0,1,2,3,4 \
    --workdir=$W/quick/$m
done
python -m experiments.robustness $W/quick/dfp $W/quick/qc_fql $W/quick/mvp "${PERTURB[@]}" \
  --reference=dfp --out=$W/report_quick

# 2. Noisy demonstrations: DFP and QC-FQL on quick data with action noise 0.1 and 0.3
#    (3 seeds; sigma 0 is step 1's seeds 0-2).
for m in dfp qc_fql; do
  for s in 0.1 0.3; do
    python -m experiments.train --config=experiments/configs/$m.py:quick --seeds=0,1,2 \
      --config.env.dataset_action_noise=$s --workdir=$W/noisy/$m/sigma=$s
  done
done

# 3. quick-lift: the three methods, 3 seeds each, under the same perturbations.
for m in dfp qc_fql mvp; do
  python -m experiments.train --config=experiments/configs/$m.py:quick-lift --seeds=0,1,2 \
    --workdir=$W/lift/$m
done
python -m experiments.robustness $W/lift/dfp $W/lift/qc_fql $W/lift/mvp "${PERTURB[@]}" \
  --reference=dfp --out=$W/report_lift
