"""Identity end to end: a domain user authenticates from an endpoint (gated until the domain join is verified)."""

from __future__ import annotations

import pytest

from basisit.verify.suite import estate

pytestmark = pytest.mark.role("endpoint")


@pytest.mark.feature("domain_member")
@pytest.mark.controls("gs:ORP.4.A18", "gs:APP.2.2.A9", "wiba:Rollen / Berechtigungen / Authentisierung")
def test_domain_user_resolves_with_rfc2307_ids(host, target):
    realm = estate().site(target.kommune).domain
    out = host.run("id administrator@%s", realm)
    assert out.rc == 0 and out.stdout.startswith("uid="), f"the domain administrator does not resolve: {out.stderr}"


@pytest.mark.feature("domain_member")
@pytest.mark.controls("gs:APP.2.2.A9", "gs:APP.2.1.A13")
def test_kerberos_kdc_reachable_from_endpoint(host, target):
    """A KDC of the realm answers an AS request (kinit without a password gets a preauth demand)."""
    realm = estate().site(target.kommune).domain.upper()
    out = host.run("KRB5_TRACE=/dev/stdout timeout 10 kinit -V nobody-basisit-probe@%s </dev/null", realm)
    assert "Client 'nobody-basisit-probe" in out.stdout + out.stderr or "not found in Kerberos database" in (
        out.stdout + out.stderr
    ), (out.stdout + out.stderr)[-400:]
