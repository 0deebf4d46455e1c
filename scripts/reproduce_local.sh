#!/usr/bin/env bash
# The sweeps run on the project's 2-core machine for the README's tables, in priority order. Every
# command resumes: what is finished is skipped (runs shared by several sweeps are trained once), so this
# script can be stopped and started again, or continued on a larger machine (raise --workers, or --ray).
set -euo pipefail
cd "$(dirname "$0")/.."
MARLKD=${MARLKD:-.venv/bin/marlkd}
RUN="$MARLKD experiment run --workers ${WORKERS:-2} --no-progress"

$RUN method                                       # issues 3 and 4: 9 methods x Grid-World, Fill-In x 5 seeds
$RUN finetune --only-env grid-world               # Figure 6 on Grid-World
$RUN table3 --only-env grid-world                 # Table 3 (ablations) on Grid-World
$RUN precision                                    # fp32 against bf16 autocast
$RUN convergence --only-env grid-world            # Section 4.5: return against updates and wall time
$RUN table2 --only-env grid-world                 # Table 2 on Grid-World (good data shared with `method`)
$RUN data-efficiency --only-env grid-world        # Figure 7 on Grid-World
$RUN table1 --only-env equal-space fill-in grid-world
$RUN table1 --only-env highway smax-2s3z --only-method idt madt ours

for spec in method finetune table3 precision convergence table2 data-efficiency table1; do
  $MARLKD experiment report "$spec"
done
