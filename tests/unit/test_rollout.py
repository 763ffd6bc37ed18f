"""Rollout orchestration: zentral first, canary alone, bounded parallelism, halt threshold,
ledger and resume. Steps here are small functions; the lab test runs the real commands."""

from __future__ import annotations

import threading
import time

import pytest

from basisit.rollout import EXIT_UNREACHABLE, Ledger, Plan, Rollout, StepFailed, StepUnreachable


class Steps:
    """Records the order and concurrency of calls; fails the sites it is told to."""

    def __init__(self, fail: dict[str, str] | None = None, delay: float = 0.0, unreachable: set[str] = frozenset()):
        self.fail = fail or {}
        self.unreachable = unreachable  # sites whose verify finds hosts unreachable
        self.delay = delay
        self.calls: list[tuple[str, str]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def make(self, step: str):
        def fn(site: str) -> None:
            with self._lock:
                self.calls.append((site, step))
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                time.sleep(self.delay)
                if self.fail.get(site) == step:
                    raise StepFailed(f"{site} broke in {step}")
                if step == "verify" and site in self.unreachable:
                    raise StepUnreachable(f"unreachable: {site}-gw")
            finally:
                with self._lock:
                    self.active -= 1

        return fn

    def table(self):
        return {s: self.make(s) for s in ("realise", "converge", "verify")}


@pytest.fixture
def ledger(tmp_path):
    lg = Ledger(tmp_path / "ledger.sqlite")
    yield lg
    lg.close()


def roll(ledger, sites, steps, **kw) -> Rollout:
    ro = Rollout(Plan(sites, **kw), steps.table(), ledger, version=1, backend="lab")
    ro.ok = ro.run()
    return ro


def test_zentral_first_then_canary_alone_then_parallel(ledger):
    steps = Steps(delay=0.05)
    ro = roll(ledger, ["a", "b", "c", "d"], steps, parallel=2)
    assert ro.ok
    sites_in_order = [s for s, _ in steps.calls]
    assert sites_in_order[:2] == ["zentral", "zentral"]  # realise + converge
    assert sites_in_order[2:5] == ["a", "a", "a"]  # the canary runs alone, all three steps
    assert steps.calls[-1] == ("zentral", "verify")  # zentral is verified after the Kommunen using it
    assert ro.state["zentral"].result == "verified"
    assert steps.max_active == 2
    assert {st.result for s, st in ro.state.items() if s != "zentral"} == {"verified"}


def test_failure_of_one_kommune_does_not_stop_the_others_within_threshold(ledger):
    steps = Steps(fail={"c": "converge"})
    ro = roll(ledger, ["a", "b", "c", "d"], steps, parallel=2, max_failures=1)
    assert not ro.ok
    assert ro.state["c"].result == "failed" and "converge" in ro.state["c"].detail
    assert [ro.state[s].result for s in ("a", "b", "d")] == ["verified"] * 3
    assert ("c", "verify") not in steps.calls


def test_wave_halts_when_failures_exceed_threshold(ledger):
    steps = Steps(fail={"b": "realise", "c": "realise"})
    ro = roll(ledger, ["a", "b", "c", "d", "e"], steps, parallel=1, max_failures=1)
    assert ro.halted and not ro.ok
    assert ro.state["d"].result == "not started" and ro.state["e"].result == "not started"


def test_failed_canary_stops_the_wave(ledger):
    steps = Steps(fail={"a": "verify"})
    ro = roll(ledger, ["a", "b"], steps, max_failures=5)
    assert ro.state["a"].result == "failed" and ro.state["b"].result == "not started"


def test_rerun_skips_verified_and_resumes_the_rest(ledger):
    first = roll(ledger, ["a", "b", "c"], Steps(fail={"c": "converge"}), max_failures=1)
    assert first.state["c"].result == "failed"
    steps = Steps()
    again = roll(ledger, ["a", "b", "c"], steps)
    assert again.ok
    assert again.state["a"].result == "skipped" and again.state["b"].result == "skipped"
    assert {s for s, _ in steps.calls} == {"zentral", "c"}
    # --force redoes everything
    steps = Steps()
    forced = roll(ledger, ["a", "b", "c"], steps, force=True)
    assert {s for s, _ in steps.calls} == {"zentral", "a", "b", "c"} and forced.ok


def test_new_standard_version_is_not_skipped(ledger):
    roll(ledger, ["a"], Steps())
    steps = Steps()
    ro = Rollout(Plan(["a"]), steps.table(), ledger, version=2, backend="lab")
    assert ro.run()
    assert ("a", "verify") in steps.calls


def test_ledger_records_every_step_with_result(ledger):
    ro = roll(ledger, ["a", "b"], Steps(fail={"b": "verify"}), max_failures=1)
    rows = ledger.steps(ro.run_id)
    assert rows[0][:3] == ("zentral", "realise", "ok")
    assert ("b", "verify", "failed") in [r[:3] for r in rows]
    assert all(r[3] is not None for r in rows)


def test_zentral_failure_starts_no_kommune(ledger):
    steps = Steps(fail={"zentral": "converge"})
    ro = roll(ledger, ["a", "b"], steps)
    assert not ro.ok
    assert {s for s, _ in steps.calls} == {"zentral"}
    assert ro.state["a"].result == "not started"


def test_unreachable_canary_is_not_a_failure_and_not_verified(ledger):
    """A transport hiccup halts nothing: the unreachable canary neither fails nor stops the wave."""
    steps = Steps(unreachable={"a"})
    ro = roll(ledger, ["a", "b", "c"], steps, max_failures=0)
    assert ro.state["a"].result == "unreachable" and "a-gw" in ro.state["a"].detail
    assert ro.state["b"].result == "verified" and ro.state["c"].result == "verified"
    assert not ro.halted and ro.failures == 0 and not ro.ok and ro.unreachable_only
    assert ("a", "verify", "unreachable") in [r[:3] for r in ledger.steps(ro.run_id)]
    assert not ledger.verified("a", 1, "lab")  # a re-run verifies it again
    again = roll(ledger, ["a", "b", "c"], steps := Steps())
    assert again.ok and ("a", "verify") in steps.calls and ("b", "verify") not in steps.calls


def test_unreachable_zentral_counts_no_failure(ledger):
    ro = roll(ledger, ["a"], Steps(unreachable={"zentral"}))
    assert ro.state["zentral"].result == "unreachable" and ro.failures == 0 and ro.unreachable == ["zentral"]


def test_verify_exit_3_is_unreachable_naming_hosts(tmp_path):
    """Commands maps `basisit verify`'s exit 3 to StepUnreachable, with the hosts it listed (a real process)."""
    from basisit.rollout import Commands

    cmds = Commands(tmp_path / "inv", tmp_path / "state", "lab", tmp_path / "logs")
    script = "echo 'UNREACHABLE bous-gw (12 check(s) not judged): unreachable over ssh'; exit 3"
    with pytest.raises(StepUnreachable, match="unreachable: bous-gw"):
        cmds._run("bous", "verify", ["sh", "-c", script], timeout=30, unreachable_rc=EXIT_UNREACHABLE)
    with pytest.raises(StepFailed) as e:
        cmds._run("bous", "verify", ["sh", "-c", "echo '1 fail'; exit 1"], timeout=30, unreachable_rc=EXIT_UNREACHABLE)
    assert not isinstance(e.value, StepUnreachable) and "exited 1" in e.value.detail


def test_rollout_requires_a_selection(run):
    rc, _, err = run("rollout")
    assert rc == 2 and "nothing selected" in err


def test_cloud_backend_requires_imported_facts(tmp_path):
    from pathlib import Path

    from basisit.rollout import Commands

    cmds = Commands(Path("inventory"), tmp_path, "cloud", tmp_path / "logs")
    with pytest.raises(StepFailed, match="no site facts for tholey"):
        cmds.realise("tholey")
