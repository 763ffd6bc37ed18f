"""The rollout's plan and its waves: zentral, the canary, the rest with bounded parallelism."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from basisit.model import ZENTRAL
from basisit.rollout.ledger import Ledger, now
from basisit.rollout.steps import STEPS, StepFailed, StepFn, StepUnreachable


@dataclass
class SiteState:
    slug: str
    step: str = "waiting"
    started: float | None = None
    finished: float | None = None
    result: str = "pending"  # pending | running | verified | failed | unreachable | skipped | not started
    detail: str = ""

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started


@dataclass(frozen=True)
class Plan:
    """What to roll out and how: the typed options `basisit rollout` builds once from its command line."""

    sites: list[str]  # Kommunen in order; the first is the canary
    parallel: int = 2
    max_failures: int = 0
    force: bool = False
    include_zentral: bool = True


class Rollout:
    def __init__(
        self,
        plan: Plan,
        steps: dict[str, StepFn],
        ledger: Ledger,
        version: int,
        backend: str,
        zentral_inputs: Callable[[], str] | None = None,
    ):
        self.plan = plan
        self.steps = steps
        self.ledger = ledger
        self.version = version
        self.backend = backend
        # The digest of zentral's converge inputs; None: zentral is converged whenever it runs.
        self.zentral_inputs = zentral_inputs
        order = ([ZENTRAL] if plan.include_zentral else []) + plan.sites
        self.state = {s: SiteState(s) for s in order}
        self.failures = 0
        self.halted = False
        self.run_id = 0

    def _do(self, slug: str) -> None:
        st = self.state[slug]
        st.started = time.monotonic()
        st.result = "running"
        for step in STEPS:
            if slug == ZENTRAL and step == "verify":
                break  # zentral is verified at the end, after the Kommunen that use its services
            st.step = step
            if slug == ZENTRAL and step == "converge" and self._zentral_current():
                continue
            if not self._step(slug, step):
                return
        st.step = "done"
        st.result = "verified" if slug != ZENTRAL else "converged"
        st.finished = time.monotonic()

    def _inputs(self) -> str:
        """Zentral's inputs digest now ('' when it cannot be taken: then nothing is current)."""
        if self.zentral_inputs is None:
            return ""
        try:
            return self.zentral_inputs()
        except Exception:  # e.g. an inventory made invalid mid-run: converge, the step reports it
            return ""

    def _zentral_current(self) -> bool:
        """Skip zentral's converge (recorded as skipped) when its ledger entry is current: not
        --force, the last converge at this standard version and backend passed with the inputs
        digest it has now, and its last verify passed."""
        if self.plan.force or self.zentral_inputs is None:
            return False
        inputs = self._inputs()
        if not (
            self.ledger.converged(ZENTRAL, self.version, self.backend, inputs)
            and self.ledger.verified(ZENTRAL, self.version, self.backend)
        ):
            return False
        detail = f"current: converged and verified at standard v{self.version}, inputs {inputs[:12]} unchanged"
        self.ledger.record(self.run_id, ZENTRAL, "converge", self.version, now(), 0.0, "skipped", detail, inputs=inputs)
        self.state[ZENTRAL].detail = "converge skipped (" + detail + ")"
        return True

    def _step(self, slug: str, step: str) -> bool:
        """Run one step, record it in the ledger; False (and the site failed) when it failed."""
        st = self.state[slug]
        t0, started = time.monotonic(), now()
        try:
            self.steps[step](slug)
        except StepUnreachable as e:  # not verified, not failed: counts towards no threshold
            self.ledger.record(
                self.run_id, slug, step, self.version, started, time.monotonic() - t0, "unreachable", e.detail, e.log
            )
            st.result, st.detail, st.finished = "unreachable", f"{step}: {e.detail}", time.monotonic()
            return False
        except StepFailed as e:
            self.ledger.record(
                self.run_id, slug, step, self.version, started, time.monotonic() - t0, "failed", e.detail, e.log
            )
            st.result, st.detail, st.finished = "failed", f"{step}: {e.detail}", time.monotonic()
            return False
        except Exception as e:  # a bug in a step must fail this Kommune, not the others
            self.ledger.record(self.run_id, slug, step, self.version, started, time.monotonic() - t0, "failed", repr(e))
            st.result, st.detail, st.finished = "failed", f"{step}: {e!r}", time.monotonic()
            return False
        # Zentral's converge records what it was made of, taken after it ran (it creates the
        # secrets it applies): the next rollout compares against this.
        inputs = self._inputs() if (slug, step) == (ZENTRAL, "converge") else ""
        self.ledger.record(self.run_id, slug, step, self.version, started, time.monotonic() - t0, "ok", inputs=inputs)
        return True

    def _verify_zentral(self) -> None:
        """Zentral's own checks, once the Kommunen that use its services are through."""
        st = self.state[ZENTRAL]
        if st.result != "converged":
            return
        st.result, st.step = "running", "verify"
        if self._step(ZENTRAL, "verify"):
            st.step, st.result, st.finished = "done", "verified", time.monotonic()
        elif st.result == "failed":
            self.failures += 1

    def run(self) -> bool:
        self.run_id = self.ledger.start_run(self.backend, self.version, list(self.state))
        todo = []
        for slug in self.plan.sites:
            if not self.plan.force and self.ledger.verified(slug, self.version, self.backend):
                st = self.state[slug]
                st.result, st.step, st.detail = "skipped", "done", f"verified at standard v{self.version}"
                self.ledger.record(self.run_id, slug, "verify", self.version, now(), 0.0, "skipped", st.detail)
            else:
                todo.append(slug)
        if self.plan.include_zentral and (todo or self.plan.force):
            self._do(ZENTRAL)
            if self.state[ZENTRAL].result == "failed":
                self.halted = True
                for s in todo:
                    self.state[s].result = "not started"
                    self.state[s].detail = "zentral failed"
                self.ledger.finish_run(self.run_id, "failed")
                return False
        elif self.plan.include_zentral:
            self.state[ZENTRAL].result, self.state[ZENTRAL].step = "skipped", "done"
        if todo:
            canary, rest = todo[0], todo[1:]
            self._do(canary)
            if self.state[canary].result == "failed":
                self.failures += 1
            if self.failures > self.plan.max_failures or (self.state[canary].result == "failed" and rest):
                # A failed canary stops the wave: the rest would likely fail the same way.
                self.halted = bool(rest)
                rest_todo: list[str] = []
            else:
                rest_todo = rest
            self._pool(rest_todo)
            for s in rest:
                if self.state[s].result == "pending":
                    self.state[s].result = "not started"
                    self.state[s].detail = "wave halted"
        if self.plan.include_zentral:
            self._verify_zentral()
        ok = self.failures == 0 and not self.halted and not self.unreachable
        self.ledger.finish_run(self.run_id, "ok" if ok else ("incomplete" if self.unreachable_only else "failed"))
        return ok

    @property
    def unreachable(self) -> list[str]:
        """Sites whose verify found hosts unreachable (not verified, not failed)."""
        return [s for s, st in self.state.items() if st.result == "unreachable"]

    @property
    def unreachable_only(self) -> bool:
        """Nothing failed and the wave ran through, but some sites were unreachable."""
        return bool(self.unreachable) and self.failures == 0 and not self.halted

    def _pool(self, sites: list[str]) -> None:
        queue = list(sites)
        with ThreadPoolExecutor(max_workers=max(1, self.plan.parallel)) as pool:
            running: dict[Future, str] = {}
            while queue or running:
                while queue and len(running) < self.plan.parallel and not self.halted:
                    slug = queue.pop(0)
                    running[pool.submit(self._do, slug)] = slug
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    slug = running.pop(fut)
                    fut.result()
                    if self.state[slug].result == "failed":
                        self.failures += 1
                        if self.failures > self.plan.max_failures:
                            self.halted = True
