"""What the lab writes for a host before its first boot (no root needed: files only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from basisit.lab import host, plan
from basisit.lab.system import LabError
from basisit.model import AUTOMATION_USER
from basisit.validate import load_estate

ROOT = Path(__file__).resolve().parents[2]
ESTATE = load_estate(ROOT / "inventory")
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample operator"


def _hp(site: str, kind: str) -> plan.HostPlan:
    return next(hp for hp in plan.site_plan(ESTATE, ESTATE.site(site), "bi").hosts if hp.host.kind == kind)


def _image(tmp_path: Path, name: str = "image", account: bool = True) -> Path:
    """A stand-in golden image: /etc/passwd with the automation account (owned by whoever runs
    the test, so no root is needed to chown to it) and its home directory."""
    img = tmp_path / name
    if img.exists():
        return img
    (img / "etc").mkdir(parents=True)
    (img / "home").mkdir(mode=0o755)
    lines = ["root:x:0:0:root:/root:/bin/bash"]
    if account:
        lines.append(
            f"{AUTOMATION_USER}:x:{os.getuid()}:{os.getgid()}:basisit automation:/home/{AUTOMATION_USER}:/bin/bash"
        )
        (img / "home" / AUTOMATION_USER).mkdir(mode=0o750)
    (img / "etc/passwd").write_text("\n".join(lines) + "\n")
    return img


def test_prepare_writes_identity_keys_and_network(tmp_path):
    dc = _hp("nalbach", "dc")
    d = host.prepare(tmp_path, dc, "k1", _image(tmp_path), PUB, "bi")
    up = d / "upper"
    assert (up / "etc/hostname").read_text() == "dc1\n"
    assert "10.160.168.74\tdc1.nalbach.basisit.internal dc1" in (up / "etc/hosts").read_text()
    keys = up / "home" / AUTOMATION_USER / ".ssh/authorized_keys"
    assert keys.read_text().strip() == PUB
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.parent.stat().st_mode & 0o777 == 0o700
    # directories made in the upper dir keep the image's attributes (they hide the image's own)
    assert (up / "home").stat().st_mode & 0o777 == 0o755
    assert (up / "home" / AUTOMATION_USER).stat().st_mode & 0o777 == 0o750
    assert not (up / "root/.ssh/authorized_keys").exists()  # root never logs in
    assert (up / "etc/ssh/ssh_host_ed25519_key.pub").read_text().startswith("ssh-ed25519 ")
    assert not list((up / "etc/ssh").glob("ssh_host_rsa*"))
    net = (up / "etc/systemd/network/10-basisit-host0.network").read_text()
    assert "Address=10.160.168.74/26" in net and "Gateway=10.160.168.65" in net and "IPForward" not in net
    rec = json.loads((d / "host.json").read_text())
    assert rec["machine"] == "bi42-dc1" and rec["veths"] == ["vb-bi42-dc1"] and rec["group"] == "basisit-lab-bi"
    run = (d / "run.sh").read_text()
    for flag in ("--boot", "--register=no", "--keep-unit", "--machine=bi42-dc1", "--console=passive"):
        assert flag in run
    assert "--network-bridge=bi42-s" in run and '"$rc" -ne 133' in run


def test_prepare_keeps_identity_on_a_second_run(tmp_path):
    dc = _hp("nalbach", "dc")
    d = host.prepare(tmp_path, dc, "k1", _image(tmp_path), PUB, "bi")
    first = ((d / "upper/etc/machine-id").read_text(), host.host_pubkey(d))
    host.prepare(tmp_path, dc, "k2", _image(tmp_path), PUB, "bi")
    assert ((d / "upper/etc/machine-id").read_text(), host.host_pubkey(d)) == first
    assert json.loads((d / "host.json").read_text())["image"] == "k1"  # the overlay stays on its image


def test_hosts_get_distinct_identities(tmp_path):
    a = host.prepare(tmp_path, _hp("nalbach", "dc"), "k", _image(tmp_path, "i"), PUB, "bi")
    b = host.prepare(tmp_path, _hp("bous", "dc"), "k", _image(tmp_path, "i"), PUB, "bi")
    assert (a / "upper/etc/machine-id").read_text() != (b / "upper/etc/machine-id").read_text()
    assert host.host_pubkey(a) != host.host_pubkey(b)


def test_gateway_links_and_zentral_transfers(tmp_path):
    gw = _hp("nalbach", "gw")
    d = host.prepare(tmp_path, gw, "k", _image(tmp_path, "i"), PUB, "bi")
    assert (d / "links").read_text().split("\n")[:4] == [
        "bi42-gm management bi42-m",
        "bi42-gs server bi42-s",
        "bi42-gc client bi42-c",
        "bi42-gt transfer bi42-t",
    ]
    zgw = _hp("zentral", "gw")
    nic = plan.transfer_nic(ESTATE, ESTATE.site("nalbach"), "bi")
    z = host.prepare(tmp_path, zgw, "k", _image(tmp_path, "i"), PUB, "bi", extra_links=[nic])
    assert "biz-t42 tr42 bi42-t" in (z / "links").read_text()
    host.remove_link_line(tmp_path, zgw.machine, "biz-t42")
    assert "biz-t42" not in (z / "links").read_text()


def test_prepare_removes_a_root_key_of_an_older_host(tmp_path):
    dc = _hp("nalbach", "dc")
    old = tmp_path / "lab/hosts" / dc.machine / "upper/root/.ssh/authorized_keys"
    old.parent.mkdir(parents=True)
    old.write_text(PUB + "\n")
    host.prepare(tmp_path, dc, "k", _image(tmp_path), PUB, "bi")
    assert not old.exists()


def test_image_without_the_automation_account_is_refused(tmp_path):
    with pytest.raises(LabError, match=f"has no account {AUTOMATION_USER}.*lab image --rebuild"):
        host.prepare(tmp_path, _hp("nalbach", "dc"), "k", _image(tmp_path, account=False), PUB, "bi")
