"""endpoint role: the workstation baseline (gated until roles/endpoint lands)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.role("endpoint")


@pytest.mark.feature("endpoint")
@pytest.mark.controls("gs:SYS.2.1.A24", "gs:SYS.2.3.A6", "wiba:Client")
def test_usb_storage_blocked(host):
    """modprobe's effective configuration (all of /etc/modprobe.d) refuses to load usb-storage."""
    conf = host.check_output("cat /etc/modprobe.d/*.conf /lib/modprobe.d/*.conf 2>/dev/null; true")
    lines = {" ".join(ln.split()) for ln in conf.splitlines() if not ln.strip().startswith("#")}
    assert {"install usb-storage /bin/false", "install usb-storage /bin/true"} & lines, "usb-storage can load"


@pytest.mark.feature("endpoint")
@pytest.mark.controls("gs:SYS.2.1.A3", "gs:SYS.2.3.A4", "wiba:Client")
def test_no_pending_reboot(host):
    assert not host.file("/var/run/reboot-required").exists


@pytest.mark.feature("domain_member")
@pytest.mark.controls("gs:ORP.4.A18", "wiba:Client")
def test_joined_to_domain(host):
    assert host.run("realm list --name-only").stdout.strip() or host.run("wbinfo -t").rc == 0, "not joined"


@pytest.mark.feature("endpoint")
@pytest.mark.controls("gs:OPS.1.1.2.A6", "wiba:Client")
def test_no_local_admin_besides_named(host):
    members = host.check_output("getent group sudo").split(":")[3]
    assert not [m for m in members.split(",") if m], f"local sudo group members: {members}"
