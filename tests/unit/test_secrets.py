"""basisit/secrets.py — control-host secrets ansible-vault encrypted at rest, the vault key, rotation."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from basisit import secrets
from basisit.drift import redact


def _key(path: Path, text: str = "a vault password", mode: int = 0o600) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_written_encrypted_0600_and_read_back(tmp_path, vault_key_home, capsys):
    path = tmp_path / "secrets" / "nalbach" / "probe.secret"
    secrets.write(path, "Abc-123-def-456-ghi")
    data = path.read_bytes()
    assert data.startswith(b"$ANSIBLE_VAULT;1.1;AES256\n") and b"Abc-123" not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert secrets.value(path) == "Abc-123-def-456-ghi"
    assert [p.name for p in path.parent.iterdir()] == ["probe.secret"]  # no temporary left
    # the default key was made on first use, 0600, outside the state, and said so once
    key = vault_key_home / "basisit" / "vault-password"
    assert secrets.key_file() == key and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) >= 32
    err = capsys.readouterr().err
    assert err.count("created the vault key") == 1 and str(key) in err
    secrets.write(path, "another")
    assert "created the vault key" not in capsys.readouterr().err


def test_plaintext_of_an_older_state_is_read_and_migrated(tmp_path):
    path = tmp_path / "ad-administrator"
    path.write_text("Abcdefghij0123456789-x salt=abc\n", encoding="utf-8")
    assert secrets.value(path) == "Abcdefghij0123456789-x"
    assert secrets.migrate(path) is True and secrets.is_encrypted(path)
    assert secrets.migrate(path) is False
    assert secrets.value(path) == "Abcdefghij0123456789-x"


def test_key_from_the_environment_must_exist_and_be_private(tmp_path, monkeypatch):
    missing = tmp_path / "nokey"
    monkeypatch.setenv(secrets.VAULT_ENV, str(missing))
    with pytest.raises(secrets.SecretError, match=f"BASISIT_VAULT_PASSWORD_FILE: {missing} does not exist"):
        secrets.write(tmp_path / "s", "x")
    loose = _key(tmp_path / "loose", mode=0o644)
    monkeypatch.setenv(secrets.VAULT_ENV, str(loose))
    with pytest.raises(secrets.SecretError, match=f"{loose} is mode 644: it must be 0600 or 0400"):
        secrets.write(tmp_path / "s", "x")
    assert not (tmp_path / "s").exists()
    monkeypatch.setenv(secrets.VAULT_ENV, str(_key(tmp_path / "ro", mode=0o400)))
    secrets.write(tmp_path / "s", "x-value")
    assert secrets.value(tmp_path / "s") == "x-value"


def test_wrong_key_names_the_file_and_the_key(tmp_path, monkeypatch):
    path = tmp_path / "restic-repository"
    secrets.write(path, "Abcdefghij0123456789-x")
    other = _key(tmp_path / "other")
    monkeypatch.setenv(secrets.VAULT_ENV, str(other))
    with pytest.raises(secrets.SecretError) as e:
        secrets.read_text(path)
    assert f"{path}: cannot be decrypted with the vault key {other}" in str(e.value)
    assert "Abcdefghij" not in str(e.value)


def test_no_default_key_for_an_encrypted_file(tmp_path, vault_key_home):
    path = tmp_path / "s"
    secrets.write(path, "Abcdefghij0123456789-x")
    (vault_key_home / "basisit" / "vault-password").unlink()
    with pytest.raises(secrets.SecretError, match=r"no vault key .*restore the key"):
        secrets.read_text(path)
    assert not (vault_key_home / "basisit" / "vault-password").exists()  # reading never makes a new key


def test_redaction_masks_the_decrypted_values(tmp_path):
    d = tmp_path / "secrets" / "nalbach"
    secrets.write(d / "restic-rest", "Rest-credential-0123")
    (d / "legacy").write_text("Legacy-plain-0123\n", encoding="utf-8")
    r = redact.Redactor.from_dir(tmp_path / "secrets")
    out = r.text("url rest:http://nalbach:Rest-credential-0123@host and Legacy-plain-0123")
    assert "Rest-credential" not in out and "Legacy-plain" not in out and out.count(redact.MASK) == 2


# --- rotation --------------------------------------------------------------------------------


def _public(private_b64: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _converged_state(state: Path) -> dict[str, str]:
    d = state / "secrets" / "nalbach"
    values = {
        "wireguard.key": secrets.wireguard_private_key(),
        "ad-administrator": "Admin-0123456789-abcXYZ",
        "probe.secret": "Probe-0123456789-abcXYZ",
        "restic-repository": "Repo-0123456789-abcXYZ",
        "restic-rest": "Rest-0123456789-abcXYZ",
    }
    for name, v in values.items():
        secrets.write(d / name, v)
    return values


def test_rotate_wireguard_gives_a_new_encrypted_key(tmp_path, run):
    state = tmp_path / "state"
    old = _converged_state(state)
    rc, out, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", "--what", "wireguard")
    assert rc == 0, err
    path = state / "secrets" / "nalbach" / "wireguard.key"
    new = secrets.read_text(path).strip()
    assert new != old["wireguard.key"] and len(base64.b64decode(new)) == 32
    assert secrets.is_encrypted(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in out and "next converge" in out
    assert new not in out + err and old["wireguard.key"] not in out + err
    for name in ("ad-administrator", "probe.secret", "restic-repository", "restic-rest"):
        assert secrets.value(state / "secrets" / "nalbach" / name) == old[name]


def _policy_ok(value: str, length: int) -> bool:
    classes = [set(chars) for _, chars in secrets.CLASSES]
    return len(value) == length and all(set(value) & c for c in classes) and value[0].isalnum()


@pytest.mark.parametrize(("what", "name"), [("probe", "probe.secret"), ("ad-admin", "ad-administrator")])
def test_rotate_a_domain_password_keeps_no_old_value(tmp_path, run, what, name):
    """probe and ad-admin: the DC resets the password without the old one, so none is kept."""
    state = tmp_path / "state"
    old = _converged_state(state)
    rc, out, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", "--what", what)
    assert rc == 0, err
    d = state / "secrets" / "nalbach"
    new = secrets.value(d / name)
    assert new != old[name] and _policy_ok(new, 24) and secrets.is_encrypted(d / name)
    assert not (d / (name + secrets.PREVIOUS)).exists() and secrets.pending(state / "secrets", "nalbach") == []
    assert "next converge" in out and "password.yml" in out and new not in out + err and old[name] not in out + err
    for other, value in old.items():
        if other != name and other != "wireguard.key":
            assert secrets.value(d / other) == value


def test_rotate_restic_keeps_the_old_repository_password_until_the_converge(tmp_path, run):
    state = tmp_path / "state"
    old = _converged_state(state)
    rc, out, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", "--what", "restic")
    assert rc == 0, err
    d = state / "secrets" / "nalbach"
    repo, rest, previous = d / "restic-repository", d / "restic-rest", d / "restic-repository.previous"
    assert _policy_ok(secrets.value(repo), 40) and _policy_ok(secrets.value(rest), 32)
    assert secrets.value(repo) != old["restic-repository"] and secrets.value(rest) != old["restic-rest"]
    assert secrets.value(previous) == old["restic-repository"]  # the converge's `restic key add` needs it
    assert secrets.is_encrypted(previous) and stat.S_IMODE(previous.stat().st_mode) == 0o600
    assert not (d / "restic-rest.previous").exists()  # the server re-hashes it: no old value needed
    assert secrets.pending(state / "secrets", "nalbach") == [previous]
    assert "-l SLUG,zentral" in out and not any(v in out + err for v in old.values())
    assert previous in secrets.files(state / "secrets")  # drift's redaction masks the old value too


@pytest.mark.parametrize("what", [["--what", "restic"], []])
def test_rotate_while_a_restic_rotation_is_pending_is_refused_and_changes_nothing(tmp_path, run, what):
    state = tmp_path / "state"
    _converged_state(state)
    rc, _, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", "--what", "restic")
    assert rc == 0, err
    before = {p: p.read_bytes() for p in secrets.files(state / "secrets")}
    values = {p: secrets.value(p) for p in before}
    rc, out, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", *what)
    assert rc == 2 and "previous rotation is not applied yet" in err and "nothing was rotated" in err, err
    assert "restic-repository.previous" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in secrets.files(state / "secrets")} == before  # nothing half-done
    assert not any(v in out + err for v in values.values())
    # the converge dropped the old value (roles/backup_client): rotating again works
    (state / "secrets" / "nalbach" / "restic-repository.previous").unlink()
    rc, _, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", *what)
    assert rc == 0, err


def test_an_interrupted_rotation_leaves_a_usable_state(tmp_path, monkeypatch):
    """A crash after the old value was kept and before the new one was written leaves .previous
    equal to the current value: the converge has nothing to switch, and a new rotation proceeds."""
    state = tmp_path / "state"
    old = _converged_state(state)
    d = state / "secrets" / "nalbach"
    real_write, calls = secrets.write, []

    def failing_write(path, text):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(path, text)

    monkeypatch.setattr(secrets, "write", failing_write)
    with pytest.raises(OSError):
        secrets.rotate(state / "secrets", "nalbach", ["restic"])
    monkeypatch.setattr(secrets, "write", real_write)
    assert calls == ["restic-repository.previous", "restic-repository"]
    assert secrets.value(d / "restic-repository") == old["restic-repository"]
    assert secrets.value(d / "restic-repository.previous") == old["restic-repository"]
    assert secrets.value(d / "restic-rest") == old["restic-rest"]
    secrets.rotate(state / "secrets", "nalbach", ["restic"])
    assert secrets.value(d / "restic-repository.previous") == old["restic-repository"]
    assert secrets.value(d / "restic-repository") != old["restic-repository"]


def test_rotated_passwords_follow_the_standards_minimum_length(tmp_path):
    state = tmp_path / "state"
    _converged_state(state)
    secrets.rotate(state / "secrets", "nalbach", ["probe", "ad-admin", "restic"], min_length=50)
    d = state / "secrets" / "nalbach"
    for name in ("probe.secret", "ad-administrator", "restic-repository", "restic-rest"):
        assert _policy_ok(secrets.value(d / name), 50), name
    with pytest.raises(secrets.SecretError, match="unknown kind nfs"):
        secrets.rotate(state / "secrets", "nalbach", ["nfs"])


def test_rotation_lengths_are_the_roles_lengths():
    """rotate generates what the roles' lookups would: the same length per file."""
    roles = ROOT / "roles"
    dc = yaml.safe_load((roles / "ad_dc" / "defaults" / "main.yml").read_text(encoding="utf-8"))
    job = (roles / "backup_client" / "tasks" / "job.yml").read_text(encoding="utf-8")
    lengths = {k: v for kind in secrets.KINDS.values() for k, v in kind["files"].items()}
    assert lengths["probe.secret"] == lengths["ad-administrator"] == dc["ad_dc_secret_length"]
    for name in ("restic-repository", "restic-rest"):
        assert f"'/{name}', length={lengths[name]}," in job, name


def test_rotate_refuses_an_unknown_kommune_a_site_never_converged_and_a_wrong_key(tmp_path, run, monkeypatch):
    state = tmp_path / "state"
    rc, _, err = run("--state", state, "secrets", "rotate", "--kommune", "atlantis", "--what", "wireguard")
    assert rc == 2 and "atlantis" in err
    rc, _, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", "--what", "wireguard")
    assert rc == 2 and "never converged" in err
    _converged_state(state)
    path = state / "secrets" / "nalbach" / "wireguard.key"
    before = path.read_bytes()
    other = _key(tmp_path / "other")
    monkeypatch.setenv(secrets.VAULT_ENV, str(other))
    rc, _, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", "--what", "wireguard")
    assert rc == 2 and f"{path}: cannot be decrypted with the vault key {other}" in err, err
    assert "Traceback" not in err and path.read_bytes() == before


def test_encrypt_migrates_every_plaintext_file(tmp_path, run):
    state = tmp_path / "state"
    d = state / "secrets" / "nalbach"
    d.mkdir(parents=True)
    (d / "ad-administrator").write_text("Admin-0123456789-abcXYZ\n", encoding="utf-8")
    secrets.write(d / "probe.secret", "Probe-0123456789-abcXYZ")
    rc, out, err = run("--state", state, "secrets", "encrypt")
    assert rc == 0, err
    assert "1 plaintext secret file(s) encrypted" in out and "Admin-" not in out + err
    assert all(f.read_bytes().startswith(b"$ANSIBLE_VAULT;") for f in d.iterdir())
    assert secrets.value(d / "ad-administrator") == "Admin-0123456789-abcXYZ"


# A real ansible-playbook run (local connection) rendering the roles' own WireGuard templates with
# the roles' lookups: the site's config and the hub's peer entry follow a rotation on the next run.
PLAYBOOK = """
- name: Tunnel configurations from the control host's vaulted keys
  hosts: all
  gather_facts: false
  vars:
    secrets_dir: "{{ state }}/secrets"
  tasks:
    - name: Keys (as roles/gateway and roles/vpn_hub look them up)
      ansible.builtin.set_fact:
        __gateway_vpn_key: "{{ lookup('basisit_wg_key', secrets_dir ~ '/nalbach/wireguard.key') }}"
        __gateway_vpn_hub_public: "{{ lookup('basisit_wg_key', secrets_dir ~ '/zentral/wireguard.key').public }}"
        __vpn_hub_key: "{{ lookup('basisit_wg_key', secrets_dir ~ '/zentral/wireguard.key') }}"
      no_log: true
    - name: Site tunnel (roles/gateway's template)
      ansible.builtin.template:
        src: "{{ roles }}/gateway/templates/wg-site.conf.j2"
        dest: "{{ root }}/wg-site.conf"
        mode: "0600"
      no_log: true
    - name: Hub (roles/vpn_hub's template)
      ansible.builtin.template:
        src: "{{ roles }}/vpn_hub/templates/wg-hub.conf.j2"
        dest: "{{ root }}/wg-hub.conf"
        mode: "0600"
      no_log: true
"""


def _conf(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(" = ")
        if sep:
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_the_next_converge_applies_a_rotated_wireguard_key(tmp_path, run):
    state, root = tmp_path / "state", tmp_path / "root"
    root.mkdir()
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "state": str(state),
        "root": str(root),
        "roles": str(ROOT / "roles"),
        "basisit_site": {"slug": "nalbach"},
        **{f"gateway_vpn_{k}": v for k, v in (("address", "10.255.0.2"), ("hub_endpoint", "192.0.2.1"),
                                             ("port", 51820), ("hub_address", "10.255.0.1"), ("keepalive", 25))},
        **{f"vpn_hub_{k}": v for k, v in (("address", "10.255.0.1"), ("prefix", 24), ("port", 51820),
                                         ("secrets_dir", str(state / "secrets")))},
        "gateway_vpn_networks": ["10.255.0.1/32"], "gateway_vpn_source": "10.255.1.1", "gateway_vpn_underlay_gateway": "", "gateway_vpn_fwmark": 51820,
        "gateway_vpn_rule_priority": 31820,
        "vpn_hub_peers": [{"kommune": "nalbach", "address": "10.255.0.2", "block": "10.255.4.0/22", "gateway": "nalbach-gw"}],
    }  # fmt: skip
    inventory, playbook = tmp_path / "hosts.yml", tmp_path / "wg.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"control": host}}}), encoding="utf-8")
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    env = os.environ | {"ANSIBLE_INVENTORY_ENABLED": "yaml", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                        "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible-tmp"), "ANSIBLE_NOCOLOR": "1"}  # fmt: skip
    exe = str(Path(sys.executable).parent / "ansible-playbook")

    def converge() -> str:
        p = subprocess.run([exe, "-i", str(inventory), str(playbook)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
        return p.stdout

    first = converge()
    assert "changed=2" in first
    assert "changed=0" in converge()  # idempotent while nothing rotates
    site, hub = (_conf((root / n).read_text()) for n in ("wg-site.conf", "wg-hub.conf"))
    key_file = state / "secrets" / "nalbach" / "wireguard.key"
    assert site["PrivateKey"] == [secrets.read_text(key_file).strip()] and secrets.is_encrypted(key_file)
    assert hub["PublicKey"] == [_public(site["PrivateKey"][0])]
    assert site["PublicKey"] == [_public(hub["PrivateKey"][0])]

    rc, _, err = run("--state", state, "secrets", "rotate", "--kommune", "nalbach", "--what", "wireguard")
    assert rc == 0, err
    out = converge()
    assert "changed=2" in out
    site2, hub2 = (_conf((root / n).read_text()) for n in ("wg-site.conf", "wg-hub.conf"))
    assert site2["PrivateKey"] != site["PrivateKey"] and site2["PrivateKey"] == [secrets.read_text(key_file).strip()]
    assert hub2["PublicKey"] == [_public(site2["PrivateKey"][0])]  # both ends agree on the new key
    assert hub2["PrivateKey"] == hub["PrivateKey"]  # the hub's own key untouched
    assert site2["PrivateKey"][0] not in out and site["PrivateKey"][0] not in out
    assert all(secrets.is_encrypted(f) for f in secrets.files(state / "secrets"))
