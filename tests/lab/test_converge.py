"""The roles converge on a fresh lab site and change nothing on a converged one.

Uses the session lab of tests/lab/conftest.py (nalbach, bous and zentral) and its session
fixture `converged` (the first `playbooks/site.yml -l nalbach,zentral`): asserts from the PLAY
RECAP that the first run succeeds everywhere and that a second run reports changed=0 on every host.
That check mode on the converged site reports no change is tests/lab/test_drift.py's first test
(`basisit drift --kommune nalbach --zentral`: the same `--check --diff` run, with its recorder).
The converged site stays up for tests/lab/test_verify.py and test_rollout.py (conftest orders the
modules).
"""

from __future__ import annotations

from string import ascii_lowercase, ascii_uppercase, digits

import playbook
import pytest

from basisit import secrets

pytestmark = pytest.mark.lab


def test_recap_parser():
    out = "PLAY RECAP ***\nnalbach-gw                 : ok=40   changed=3    unreachable=0    failed=0    skipped=5    rescued=0    ignored=0\n"
    assert playbook.recap(out) == {
        "nalbach-gw": {"ok": 40, "changed": 3, "unreachable": 0, "failed": 0, "skipped": 5, "rescued": 0, "ignored": 0}
    }


def test_first_run_converges(converged):
    _, first, seconds = converged
    playbook.assert_recap(first, "first run")
    print(f"first converge of {playbook.LIMIT}: {seconds:.1f} s")


def test_policy_violating_secret_replaced_before_provisioning(converged):
    """The letters-only Administrator password seeded by conftest was replaced, visibly, never shown."""
    lab, first, _ = converged
    path = lab.state / "secrets" / "nalbach" / "ad-administrator"
    assert secrets.is_encrypted(path)  # the plaintext seed was re-written ansible-vault encrypted
    value = secrets.value(path)
    assert value != playbook.LETTERS_ONLY_ADMIN_PASSWORD
    assert len(value) >= 12 and all(
        any(c in k for c in value) for k in (ascii_uppercase, ascii_lowercase, digits, "-._")
    )
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = " ".join((first.stdout + first.stderr).split())  # warnings may be wrapped
    assert "AD Administrator password of nalbach" in text and "regenerated" in text
    assert playbook.LETTERS_ONLY_ADMIN_PASSWORD not in text and value not in text


def test_no_secret_on_disk_in_clear(converged):
    """Every file the converge left under state/secrets is ansible-vault encrypted, 0600."""
    lab, _, _ = converged
    found = secrets.files(lab.state / "secrets")
    names = {f.name for f in found}
    assert {"ad-administrator", "probe.secret", "restic-repository", "restic-rest", "wireguard.key"} <= names
    clear = [str(f.relative_to(lab.state)) for f in found if not f.read_bytes().startswith(b"$ANSIBLE_VAULT;")]
    assert clear == [], f"plaintext secrets: {clear}"
    assert [f for f in found if f.stat().st_mode & 0o077] == []


def test_second_run_changes_nothing(converged):
    lab, first, _ = converged
    if first.returncode != 0:
        pytest.fail("the first run failed; see test_first_run_converges")
    second, seconds = playbook.run(lab)
    r = playbook.assert_recap(second, "second run")
    changed = {h: v["changed"] for h, v in r.items() if v["changed"]}
    assert not changed, f"second run changed {changed}:\n{second.stdout[-8000:]}"
    print(f"idempotent re-run of {playbook.LIMIT}: {seconds:.1f} s")
