"""Identity end to end: a domain user authenticates from an endpoint (Kerberos, then SMB to the DC)."""

from __future__ import annotations

import re

import pytest

from basisit.verify.suite import connect, estate, role_default, run_with_secret, secret

pytestmark = pytest.mark.role("endpoint")


@pytest.mark.feature("ad_dc/probe")
@pytest.mark.controls("gs:ORP.4.A18", "gs:APP.2.2.A9", "wiba:Rollen / Berechtigungen / Authentisierung")
def test_domain_user_resolves_with_rfc2307_ids(host, target):
    """A domain-only user (no local account shadows it) resolves with the uid/gid stored in AD."""
    realm = estate().site(target.kommune).domain
    user = role_default("ad_dc", "ad_dc_probe_user")
    out = host.run("id -u %s@%s; id -g %s@%s", user, realm, user, realm)
    assert out.rc == 0, f"{user}@{realm} does not resolve: {out.stderr.strip()}"
    want = [str(role_default("ad_dc", "ad_dc_probe_uid")), str(role_default("ad_dc", "ad_dc_gid_base"))]
    assert out.stdout.split() == want, f"uid/gid {out.stdout.split()}; AD holds {want} (RFC2307)"


@pytest.mark.feature("domain_member")
@pytest.mark.controls("gs:APP.2.2.A9", "gs:APP.2.1.A13")
def test_kerberos_kdc_reachable_from_endpoint(host, target):
    """A KDC of the realm answers an AS request (kinit without a password gets a preauth demand)."""
    realm = estate().site(target.kommune).domain.upper()
    out = host.run("KRB5_TRACE=/dev/stdout timeout 10 kinit -V nobody-basisit-probe@%s </dev/null", realm)
    assert "Client 'nobody-basisit-probe" in out.stdout + out.stderr or "not found in Kerberos database" in (
        out.stdout + out.stderr
    ), (out.stdout + out.stderr)[-400:]


@pytest.mark.feature("ad_dc/probe")
@pytest.mark.controls(
    "gs:ORP.4.A18", "gs:APP.2.2.A9", "gs:APP.2.1.A13", "wiba:Rollen / Berechtigungen / Authentisierung"
)
def test_domain_user_kinit_and_smb_from_endpoint(host, target):
    """A domain user gets a Kerberos ticket on an endpoint and lists the DC's netlogon share with it."""
    site = estate().site(target.kommune)
    user = role_default("ad_dc", "ad_dc_probe_user")
    password = secret(target.kommune, role_default("ad_dc", "ad_dc_probe_secret_name"))
    dc = site.hosts_with_role("ad_dc")[0]
    realm = site.domain.upper()
    command = (
        'export KRB5CCNAME="FILE:$(mktemp)"; trap \'kdestroy -q 2>/dev/null; rm -f "${KRB5CCNAME#FILE:}"\' EXIT; '
        f"timeout 20 kinit {user}@{realm} >/dev/null && klist | grep -c krbtgt/{realm}@{realm} && "
        f"timeout 20 smbclient //{dc.fqdn}/netlogon --use-kerberos=required -c ls >/dev/null && echo smb-ok"
    )
    p = run_with_secret(target.name, command, password)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "smb-ok" in p.stdout, f"{user}@{realm} from {target.name}: {out.strip()[-400:]}"


@pytest.mark.role("domain_member")
@pytest.mark.feature("ad_dc/join_account")
@pytest.mark.controls("gs:APP.2.2.A7", "gs:ORP.4.A18")
def test_computer_object_in_a_computer_ou(host, target):
    """The member's computer account lies in one of the Kommune's computer OUs (where the join
    account is delegated), not in CN=Computers or elsewhere."""
    keytab = host.run("klist -k /etc/krb5.keytab")
    names = re.findall(r"\s(\S+)\$@", keytab.stdout)
    assert keytab.rc == 0 and names, f"no machine account in /etc/krb5.keytab: {keytab.stderr.strip()[-300:]}"
    site = estate().site(target.kommune)
    dc = site.hosts_with_role("ad_dc")[0]
    out = connect(dc.name).run("samba-tool computer show %s --attributes=distinguishedName", names[0])
    m = re.search(r"^distinguishedName: (.+)$", out.stdout, re.M)
    assert out.rc == 0 and m, f"{names[0]} on {dc.name}: {(out.stderr or out.stdout).strip()[-300:]}"
    base = ",".join(f"DC={p}" for p in site.domain.split("."))
    ous = [f"OU={ou},{base}" for ou in role_default("ad_dc", "ad_dc_computer_ous")]
    parent = m.group(1).partition(",")[2]
    assert parent in ous, f"computer {m.group(1)} is outside the computer OUs {ous}"
