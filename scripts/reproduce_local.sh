#!/usr/bin/env bash
# The sweeps run on the project's 2-core machine for the README's tables, in passes of growing seed
# counts (--max-seeds), so that every table has a few seeds early and more as time allows. Every command
# resumes: what is finished is skipped (runs shared by several sweeps are trained once), so this script
# can be stopped and started again, or continued on a larger machine (raise WORKERS, or use --ray).
# SEEDS="3 5 10" are the passes; give SEEDS=10 to go straight to the full sweeps.
set -uo pipefail  # not -e: a sweep with a failed run goes on to the next (the failure is in its status)
cd "$(dirname "$0")/.."
MARLKD=${MARLKD:-.venv/bin/marlkd}
RUN="$MARLKD experiment run --workers ${WORKERS:-2} --no-progress"
NATIVE="fill-in equal-space grid-world"

for seeds in ${SEEDS:-3 5 10}; do
  $RUN method --max-seeds "$seeds"                                 # ours against every baseline, good data
  $RUN table1 --only-env $NATIVE --max-seeds "$seeds"              # Table 1, native environments
  $RUN table3 --only-env grid-world --max-seeds "$seeds"           # Table 3 (ablations)
  $RUN convergence --only-env grid-world --max-seeds "$seeds"      # Section 4.5: return vs updates, time
  $RUN finetune --only-env grid-world --max-seeds "$seeds"         # Figure 6
  $RUN table1 --only-env highway smax-2s3z --only-method idt madt ours --max-seeds "$seeds"
  $RUN table2 --only-env grid-world --max-seeds "$seeds"           # Table 2
  $RUN precision --max-seeds "$seeds"                              # fp32 against bf16 autocast
  $RUN data-efficiency --only-env grid-world --only-method idt madt ours --max-seeds $((seeds - 1))  # Fig. 7
done

for spec in method table1 table2 table3 data-efficiency convergence finetune precision; do
  $MARLKD experiment report "$spec"
done
