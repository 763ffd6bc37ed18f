"""`basisit rollout`: realise → converge → verify, per Kommune, wave by wave.

Zentral first; then the first Kommune of the selection alone as a canary; then the rest with
bounded parallelism. The wave halts (no new Kommune starts) once more than `max_failures`
Kommunen failed. A ledger (SQLite in the state directory) records every step with times, the
standard version and the result; a re-run skips Kommunen already verified at the current
standard version (unless --force) and resumes the rest.

Zentral is converged first when the selection has anything to do, unless its ledger entry is
current: its last converge at this standard version and backend passed, its last verify passed,
and the digest of everything its converge is made of (`zentral_inputs`: the model data its roles
consume, incl. the rosters of every Kommune it serves, its facts and host keys, the secrets it
applies, the code) is the one recorded then. --force converges it anyway.

A Kommune whose verify found hosts unreachable (`basisit verify` exit 3: nothing failed, but not
every host answered over SSH) is *unreachable*: not verified (a re-run verifies it again), not
failed either — it neither counts towards --max-failures nor stops the wave as a canary. The
summary lists it apart; the rollout exits 3 when nothing failed but a Kommune was unreachable.

The package: `ledger` (the SQLite record of runs and steps), `steps` (the real commands a step
runs), `waves` (the plan and its orchestration: zentral, canary, the rest), `cli` (the command,
its live table and summary). The names other modules use are exported here.
"""

from basisit.rollout.cli import cmd_rollout, execute, register
from basisit.rollout.ledger import SCHEMA, STEP_COLUMNS, Ledger
from basisit.rollout.steps import EXIT_UNREACHABLE, ROOT, STEPS, Commands, StepFailed, StepFn, StepUnreachable
from basisit.rollout.waves import Plan, Rollout, SiteState

__all__ = [
    "EXIT_UNREACHABLE",
    "ROOT",
    "SCHEMA",
    "STEPS",
    "STEP_COLUMNS",
    "Commands",
    "Ledger",
    "Plan",
    "Rollout",
    "SiteState",
    "StepFailed",
    "StepFn",
    "StepUnreachable",
    "cmd_rollout",
    "execute",
    "register",
]
