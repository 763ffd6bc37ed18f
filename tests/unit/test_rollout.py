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


# --- zentral's converge skipped while its ledger entry is current -----------------------------


class Inputs:
    """A stand-in for the zentral inputs digest: returns `value`, counts the calls."""

    def __init__(self, value: str = "h1"):
        self.value = value
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def roll_z(ledger, sites, steps, inputs, version: int = 1, **kw) -> Rollout:
    ro = Rollout(Plan(sites, **kw), steps.table(), ledger, version=version, backend="lab", zentral_inputs=inputs)
    ro.ok = ro.run()
    return ro


def zentral_rows(ledger, ro) -> list[tuple]:
    return [r[1:3] for r in ledger.steps(ro.run_id) if r[0] == "zentral"]


def test_zentral_converge_is_skipped_when_its_ledger_entry_is_current(ledger):
    inputs = Inputs("h1")
    roll_z(ledger, ["a"], Steps(), inputs)
    steps = Steps()
    ro = roll_z(ledger, ["b"], steps, inputs)  # b is new: something to do, zentral current
    assert ro.ok
    assert ("zentral", "converge") not in steps.calls
    assert ("zentral", "realise") in steps.calls  # still brought up (idempotent, cheap)
    assert steps.calls[-1] == ("zentral", "verify")  # and verified after the Kommune
    assert zentral_rows(ledger, ro) == [("realise", "ok"), ("converge", "skipped"), ("verify", "ok")]
    assert ro.state["zentral"].result == "verified" and "converge skipped" in ro.state["zentral"].detail
    assert ro.state["b"].result == "verified"


def test_zentral_is_converged_when_its_inputs_changed(ledger):
    """A new Kommune in its rosters, a rotated key, a changed role: another digest."""
    roll_z(ledger, ["a"], Steps(), Inputs("h1"))
    steps = Steps()
    ro = roll_z(ledger, ["b"], steps, Inputs("h2"))
    assert ("zentral", "converge") in steps.calls and ro.ok
    assert zentral_rows(ledger, ro)[1] == ("converge", "ok")
    steps = Steps()
    roll_z(ledger, ["c"], steps, Inputs("h2"))  # h2 recorded now: current again
    assert ("zentral", "converge") not in steps.calls


def test_force_converges_a_current_zentral(ledger):
    roll_z(ledger, ["a"], Steps(), Inputs("h1"))
    steps = Steps()
    roll_z(ledger, ["a"], steps, Inputs("h1"), force=True)
    assert ("zentral", "converge") in steps.calls and ("a", "converge") in steps.calls


def test_zentral_is_converged_after_a_failed_verify_or_converge(ledger):
    roll_z(ledger, ["a"], Steps(fail={"zentral": "verify"}), Inputs("h1"))
    steps = Steps()
    roll_z(ledger, ["b"], steps, Inputs("h1"))
    assert ("zentral", "converge") in steps.calls  # its last verify failed: not current
    failed = roll_z(ledger, ["c"], Steps(fail={"zentral": "converge"}), Inputs("h2"))
    assert zentral_rows(ledger, failed)[1] == ("converge", "failed")
    steps = Steps()
    roll_z(ledger, ["c"], steps, Inputs("h2"))
    assert ("zentral", "converge") in steps.calls  # its last converge failed: not current


def test_zentral_is_converged_at_a_new_standard_version_or_without_a_digest(ledger):
    roll_z(ledger, ["a"], Steps(), Inputs("h1"))
    steps = Steps()
    roll_z(ledger, ["b"], steps, Inputs("h1"), version=2)
    assert ("zentral", "converge") in steps.calls
    steps = Steps()
    roll_z(ledger, ["c"], steps, Inputs(RuntimeError("inventory unreadable")), version=2)
    assert ("zentral", "converge") in steps.calls  # no digest: never current
    steps = Steps()
    roll_z(ledger, ["d"], steps, None, version=2)
    assert ("zentral", "converge") in steps.calls  # no digest function: always converged


def test_nothing_to_do_still_skips_zentral_entirely(ledger):
    inputs = Inputs("h1")
    roll_z(ledger, ["a"], Steps(), inputs)
    steps, before = Steps(), inputs.calls
    ro = roll_z(ledger, ["a"], steps, inputs)
    assert steps.calls == [] and ro.state["zentral"].result == "skipped" and inputs.calls == before


def test_the_recorded_digest_is_taken_after_the_converge(ledger):
    """Zentral's converge creates the secrets it applies (a new Kommune's WireGuard key): the
    ledger keeps the digest of the state after it, which the next rollout finds unchanged."""
    inputs = Inputs("before")
    steps = Steps()
    real = steps.make("converge")

    def converge(site: str) -> None:
        real(site)
        if site == "zentral":
            inputs.value = "after"

    table = {**steps.table(), "converge": converge}
    ro = Rollout(Plan(["a"]), table, ledger, version=1, backend="lab", zentral_inputs=inputs)
    assert ro.run()
    assert ledger.converged("zentral", 1, "lab", "after") and not ledger.converged("zentral", 1, "lab", "before")
    again = Steps()
    roll_z(ledger, ["b"], again, inputs)
    assert ("zentral", "converge") not in again.calls


def test_a_ledger_from_before_the_digest_gains_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT,"
        " backend TEXT NOT NULL, standard_version INTEGER NOT NULL, selection TEXT NOT NULL, result TEXT);"
        "CREATE TABLE steps (run_id INTEGER NOT NULL, site TEXT NOT NULL, step TEXT NOT NULL,"
        " standard_version INTEGER NOT NULL, started TEXT NOT NULL, finished TEXT, seconds REAL, result TEXT,"
        " detail TEXT, log TEXT);"
        "INSERT INTO runs VALUES (1, 't', 't', 'lab', 1, 'zentral a', 'ok');"
        "INSERT INTO steps VALUES (1, 'zentral', 'converge', 1, 't', 't', 1.0, 'ok', '', '');"
        "INSERT INTO steps VALUES (1, 'a', 'verify', 1, 't', 't', 1.0, 'ok', '', '');"
    )
    db.commit()
    db.close()
    lg = Ledger(path)
    try:
        assert lg.verified("a", 1, "lab")  # old rows still count
        assert not lg.converged("zentral", 1, "lab", "h1")  # an old converge has no digest: not current
        steps = Steps()
        roll_z(lg, ["b"], steps, Inputs("h1"))
        assert ("zentral", "converge") in steps.calls
    finally:
        lg.close()


def test_a_bumped_standard_reconverges_the_wave_canary_first(ledger):
    """Every Kommune verified at version 1; the standard goes to 2: the next rollout of the wave
    converges zentral, then the canary alone (all its steps), then the rest — nothing is skipped
    as current. A canary that fails at the new version stops the wave before the others change."""
    roll(ledger, ["a", "b", "c"], Steps())
    steps = Steps()
    ro = Rollout(Plan(["a", "b", "c"], parallel=2), steps.table(), ledger, version=2, backend="lab")
    assert ro.run()
    order = [s for s, _ in steps.calls]
    assert order[:2] == ["zentral", "zentral"] and order[2:5] == ["a", "a", "a"]
    assert {s for s, st in ro.state.items() if st.result == "verified"} == {"zentral", "a", "b", "c"}
    # the same bump with a canary that fails under the new standard: b and c keep version 1
    steps = Steps(fail={"a": "verify"})
    halted = Rollout(Plan(["a", "b", "c"]), steps.table(), ledger, version=3, backend="lab")
    assert not halted.run()
    assert [halted.state[s].result for s in ("b", "c")] == ["not started", "not started"]
    assert not any(site in ("b", "c") for site, _ in steps.calls)
