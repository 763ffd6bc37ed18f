"""ad_dc role: the Samba AD domain controller, and for size L its second DC replicating with the first."""

from __future__ import annotations

import json
import re

import pytest

from basisit.verify.suite import estate, not_applicable, role_default, run_with_secret, secret

pytestmark = pytest.mark.role("ad_dc")


@pytest.fixture(scope="module")
def passwordsettings(host) -> dict[str, str]:
    out = host.check_output("samba-tool domain passwordsettings show")
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}


@pytest.fixture(scope="module")
def testparm(host) -> dict[str, str]:
    out = host.check_output("testparm -sv --section-name=global 2>/dev/null")
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition("=") for ln in out.splitlines()) if _}


@pytest.mark.feature("ad_dc")
@pytest.mark.controls("gs:APP.2.2.A5", "gs:SYS.1.1.A6")
def test_samba_dc_running(host):
    assert host.service("samba-ad-dc").is_running


@pytest.mark.feature("ad_dc")
@pytest.mark.controls("gs:ORP.4.A22", "gs:APP.2.2.A5", "wiba:Rollen / Berechtigungen / Authentisierung")
def test_password_policy_from_standard(passwordsettings):
    std = estate().standard.services.password_policy
    assert int(passwordsettings["minimum password length"]) >= std.min_length
    assert passwordsettings["password complexity"] == ("on" if std.complexity else "off")
    assert int(passwordsettings["password history length"]) >= std.history_length


@pytest.mark.feature("ad_dc")
@pytest.mark.controls("gs:APP.2.2.A5", "gs:ORP.4.A8")
def test_lockout_policy_from_standard(passwordsettings):
    lock = estate().standard.services.lockout
    threshold = int(passwordsettings["account lockout threshold (attempts)"])
    assert 0 < threshold <= lock.threshold
    assert int(passwordsettings["account lockout duration (mins)"]) >= lock.duration_minutes


@pytest.mark.feature("ad_dc")
@pytest.mark.controls("gs:APP.2.2.A9", "gs:APP.2.1.A13")
@pytest.mark.parametrize(
    ("option", "allowed"),
    [
        pytest.param(o, a, marks=[pytest.mark.feature(f) for f in more], id=o.replace(" ", "-"))
        for o, a, *more in [
            ("ntlm auth", {"disabled", "mschapv2-and-ntlmv2-only", "ntlmv2-only", "no"}),
            ("lanman auth", {"no"}),
            ("ldap server require strong auth", {"yes"}),
            ("restrict anonymous", {"2"}, "ad_dc/restrict-anonymous"),  # the role leaves Samba's 0
            ("server min protocol", {"smb2_02", "smb2_10", "smb3", "smb3_00", "smb3_11"}),
            # On an AD DC Samba's "default" means mandatory signing.
            ("server signing", {"mandatory", "required", "default"}),
        ]
    ],
)
def test_smb_hardening(testparm, option, allowed):
    got = testparm.get(option, "").lower()
    assert got in allowed, f"testparm: {option} = {got}; expected {' or '.join(sorted(allowed))}"


@pytest.mark.feature("ad_dc")
@pytest.mark.controls("gs:APP.2.2.A6", "gs:APP.2.2.A7", "gs:OPS.1.1.2.A5")
def test_domain_admins_named_only(host):
    members = set(host.check_output('samba-tool group listmembers "Domain Admins"').split())
    allowed = {a.name for a in estate().standard.admins} | {"Administrator"}
    assert members <= allowed, f"Domain Admins outside the allowlist: {sorted(members - allowed)}"


@pytest.mark.feature("ad_dc")
@pytest.mark.controls("gs:APP.2.2.A7")
@pytest.mark.parametrize("group", ["Schema Admins", "Enterprise Admins", "Account Operators"])
def test_privileged_groups_empty(host, group):
    members = [m for m in host.check_output(f'samba-tool group listmembers "{group}"').split() if m != "Administrator"]
    assert not members, f"{group}: {members}"


@pytest.mark.feature("ad_dc")
@pytest.mark.controls("gs:APP.2.2.A5")
def test_directory_consistent(host):
    out = host.run("samba-tool dbcheck --cross-ncs")
    assert out.rc == 0 and re.search(r"Checked \d+ objects \(0 errors\)", out.stdout), out.stdout[-500:]


def _other_dcs(target) -> list:
    """The Kommune's other DCs (size L has two); a site with one DC has nothing to replicate."""
    others = [h for h in estate().site(target.kommune).hosts_with_role("ad_dc") if h.name != target.name]
    if not others:
        not_applicable("the Kommune has one domain controller (size S and M)")
    return others


@pytest.mark.feature("ad_dc/join")
@pytest.mark.controls("gs:APP.2.2.A6", "gs:APP.2.2.A12")
def test_replicates_inbound_from_every_other_dc(host, target):
    """Every naming context replicates in from each other DC of the Kommune, without failures."""
    others = _other_dcs(target)
    out = host.run("samba-tool drs showrepl --json")
    assert out.rc == 0, f"drs showrepl: {(out.stderr or out.stdout).strip()[-400:]}"
    reps = json.loads(out.stdout)["repsFrom"]
    for dc in others:
        mine = [r for r in reps if r["DSA"].split("\\")[-1].lower() == dc.short]
        assert mine, f"no inbound replication from {dc.short}; neighbours: {sorted({r['DSA'] for r in reps})}"
        for r in mine:
            ok = r["consecutive failures"] == 0 and r["last attempt message"] == "was successful"
            assert ok, (
                f"{r['NC dn']} from {dc.short}: {r['consecutive failures']} failures, {r['last attempt message']}"
            )


@pytest.mark.feature("ad_dc/join")
@pytest.mark.controls("gs:APP.2.2.A6")
def test_accounts_made_on_the_primary_are_here(host, target):
    """The accounts the primary DC creates (named admins, probe user) are in this DC's own database."""
    _other_dcs(target)
    users = set(host.check_output("samba-tool user list").split())
    want = {a.name for a in estate().standard.admins} | {role_default("ad_dc", "ad_dc_probe_user")}
    assert want <= users, f"missing on {target.name}: {sorted(want - users)}"


@pytest.mark.feature("ad_dc/join")
@pytest.mark.controls("gs:APP.2.2.A10")
def test_every_dc_of_the_kommune_is_in_dns(host, target):
    """This DC's DNS answers with every DC of the Kommune (the AD zone replicates with the domain)."""
    _other_dcs(target)
    for dc in estate().site(target.kommune).hosts_with_role("ad_dc"):
        out = host.run("host -t A %s 127.0.0.1", dc.fqdn)
        assert str(dc.address) in out.stdout, f"{dc.fqdn}: {out.stdout.strip() or out.stderr.strip()}"


def _join_account_sid(host) -> str:
    user = role_default("ad_dc", "ad_dc_join_user")
    out = host.run("samba-tool user show %s --attributes=objectSid", user)
    assert out.rc == 0, f"no join account {user}: {(out.stderr or out.stdout).strip()[-300:]}"
    m = re.search(r"^objectSid: (S-[0-9-]+)$", out.stdout, re.M)
    assert m, f"{user}: no objectSid in {out.stdout.strip()[-300:]}"
    return m.group(1)


@pytest.mark.feature("ad_dc/join_account")
@pytest.mark.controls("gs:APP.2.2.A7", "gs:ORP.4.A2")
def test_join_account_in_no_privileged_group(host):
    """The delegated join account members join with exists and is in no privileged group."""
    user = role_default("ad_dc", "ad_dc_join_user")
    _join_account_sid(host)
    found = [
        g
        for g in role_default("ad_dc", "ad_dc_privileged_groups")
        if user in host.check_output(f'samba-tool group listmembers "{g}"').split("\n")
    ]
    assert not found, f"join account {user} is in privileged group(s): {', '.join(found)}"


@pytest.mark.feature("ad_dc/join_account")
@pytest.mark.controls("gs:APP.2.2.A7", "gs:ORP.4.A2")
def test_join_account_delegated_on_the_computer_ous_only(host, target):
    """Its join rights are on the computer OUs, none on the domain root, CN=Computers or CN=Users."""
    sid = _join_account_sid(host)
    base = ",".join(f"DC={p}" for p in estate().site(target.kommune).domain.split("."))
    aces = [a.replace("@SID@", sid) for a in role_default("ad_dc", "ad_dc_join_delegation")]
    for ou in role_default("ad_dc", "ad_dc_computer_ous"):
        acl = host.check_output(f'samba-tool dsacl get "--objectdn=OU={ou},{base}"')
        missing = [a for a in aces if a not in acl]
        assert not missing, f"OU={ou}: join delegation missing {missing}"
    for dn in (base, f"CN=Computers,{base}", f"CN=Users,{base}"):
        acl = host.check_output(f'samba-tool dsacl get "--objectdn={dn}"')
        assert sid not in acl, f"{dn}: its ACL grants the join account {sid} something"


@pytest.mark.feature("ad_dc/password")
@pytest.mark.controls("gs:ORP.4.A23", "gs:APP.2.2.A5", "wiba:Rollen / Berechtigungen / Authentisierung")
def test_administrator_password_is_the_control_hosts_secret(host, target):
    """The domain Administrator's password on this DC is the control host's secret (ad-administrator):
    the emergency credential works, and a rotated secret (`basisit secrets rotate --what ad-admin`)
    has been applied. basisit-samba-password --check compares the DC's stored NT hash with the
    secret's (stdin; no logon attempt, nothing counted against the account)."""
    password = secret(target.kommune, "ad-administrator")
    p = run_with_secret(
        target.name, "/usr/local/sbin/basisit-samba-password --check Administrator", password, root=True
    )
    out = (p.stdout + p.stderr).strip()
    assert password not in out
    assert p.returncode != 3, (
        f"the domain Administrator's password on {target.name} is not the control host's secret (rotated and not "
        f"applied yet? converge playbooks/site.yml -l {target.kommune})"
    )
    assert p.returncode == 0, f"basisit-samba-password --check Administrator: {out[-300:]}"


@pytest.mark.feature("ad_dc/prune")
@pytest.mark.controls("gs:ORP.4.A1", "gs:APP.2.2.A6", "gs:APP.2.2.A10")
def test_no_computer_or_dns_record_the_model_does_not_list(host, target):
    """No computer account that basisit's join account created for a member the model no longer
    lists, no A/PTR record of the client zone that is not a member's, and every member's records
    exist. The role's reconciler (basisit-ad-prune) reads the DC's own database, in report mode."""
    site = estate().site(target.kommune)
    if target.name != sorted(h.name for h in site.hosts_with_role("ad_dc"))[0]:
        not_applicable("the primary DC reconciles the domain's objects; the others replicate them")
    spec = {
        "zone": site.domain,
        "computer_ous": role_default("ad_dc", "ad_dc_computer_ous"),
        "join_user": role_default("ad_dc", "ad_dc_join_user"),
        "members": {h.short: str(h.address) for h in site.hosts_with_role("domain_member")},
        "owned_networks": [str(site.zones[z].network) for z in role_default("ad_dc", "ad_dc_prune_owned_zones")],
        "apply": False,
    }
    out = host.run("echo %s | /usr/local/sbin/basisit-ad-prune", json.dumps(spec))
    assert out.rc == 0, f"basisit-ad-prune: {(out.stderr or out.stdout).strip()[-500:]}"
    found = json.loads(out.stdout)
    stale = [c["name"] for c in found["stale_computers"]]
    records = [f"{r['type']} {r['name']} -> {r['data']}" for r in found["stale_records"]]
    missing = [f"{r['type']} {r['name']} -> {r['data']}" for r in found["added_records"]]
    assert not stale and not records and not missing, (
        f"computer accounts the model does not list: {stale}; DNS records it does not list: {records}; "
        f"members' records missing: {missing}"
    )
