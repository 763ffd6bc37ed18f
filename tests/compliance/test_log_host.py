"""log_host role: the zentral log host files every line by the connection's source address.

The receiver (roles/log_host) maps the source address (rsyslog's fromhost-ip) through a lookup
table written from the model (basisit.policy.log_senders) to the sending host's name; an address
the model does not know goes to unknown/<address>. The HOSTNAME a message claims is never part
of a path. Which sources may connect at all is the host firewall's: the allow matrix's log rules
(basisit.policy.log_flows), the same resolver.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets as pysecrets

import pytest

from basisit import policy
from basisit.verify import nftjson
from basisit.verify.suite import connect, estate, not_applicable, role_default

pytestmark = pytest.mark.role("log_host")

LOG_DIR = role_default("log_host", "log_host_dir")
# What a path of a received file may be built from: the model's name for the source address.
PATH_PROPERTIES = {"$.basisit_sender", "fromhost-ip"}
RECENT_MINUTES = 24 * 60  # files written within a day must follow the layout (older ones are kept evidence)


def _model_host(target):
    return next(h for h in estate().hosts() if h.name == target.name)


@pytest.fixture(scope="module")
def fullconf(host) -> str:
    """rsyslog's effective configuration: every file it includes, as it reads them (rsyslogd -o)."""
    out = host.run('f=$(mktemp) && rsyslogd -N1 -o "$f" >/dev/null 2>&1; rc=$?; cat "$f"; rm -f "$f"; exit $rc')
    assert out.rc == 0, f"rsyslogd -N1 refuses the configuration: {out.stderr.strip()[-300:]}"
    return out.stdout


def _templates(conf: str) -> dict[str, str]:
    """Template name -> its body (RainerScript template() and legacy $template)."""
    found = {}
    for m in re.finditer(r'template\(\s*name="([^"]+)"(.*?)\)\s*(\{.*?\})?', conf, re.S):
        found[m[1]] = m[2] + (m[3] or "")
    for m in re.finditer(r"^\$template\s+([^,\s]+)\s*,(.*)$", conf, re.M):
        found[m[1]] = m[2]
    return found


def _properties(body: str) -> set[str]:
    props = set(re.findall(r'property\(\s*name="([^"]+)"', body))
    strings = re.findall(r'string="((?:[^"\\]|\\.)*)"', body) or ([body] if body.lstrip().startswith('"') else [])
    for s in strings:
        props |= {p.split(":", 1)[0] for p in re.findall(r"%([^%]+)%", s)}
    return props


@pytest.mark.feature("log_host")
@pytest.mark.controls("gs:OPS.1.1.5.A6", "gs:OPS.1.1.5.A10", "gs:DER.1.A5")
def test_receiver_files_by_source_address(fullconf):
    """Every file rsyslog names per message is built from the model's name for the source address
    (or the address itself), never from what the sender claims (HOSTNAME, programname, ...)."""
    templates = _templates(fullconf)
    dyna = sorted(set(re.findall(r'dynaFile="([^"]+)"', fullconf)) | set(re.findall(r"\?(\w+)", fullconf)))
    dyna = [d for d in dyna if d in templates]
    assert dyna, "rsyslog writes no per-sender file (no dynaFile): the receiver is not configured"
    bad = {d: sorted(_properties(templates[d]) - PATH_PROPERTIES) for d in dyna}
    bad = {d: p for d, p in bad.items() if p}
    assert not bad, f"file paths built from what the sender claims: {bad}"
    assert re.search(r'set \$\.basisit_sender\s*=\s*lookup\("basisit_senders",\s*\$fromhost-ip\)', fullconf), (
        "the sender's name is not looked up by the connection's source address (fromhost-ip)"
    )


@pytest.mark.feature("log_host")
@pytest.mark.controls("gs:OPS.1.1.5.A6", "gs:OPS.1.1.5.A10")
def test_senders_table_is_the_models(host, target, fullconf):
    """The lookup table rsyslog loads maps exactly the model's senders (basisit.policy.log_senders)."""
    m = re.search(r'lookup_table\(\s*name="basisit_senders"\s+file="([^"]+)"', fullconf)
    assert m, "rsyslog loads no lookup table basisit_senders"
    doc = json.loads(host.file(m[1]).content_string)
    assert (doc.get("type"), doc.get("nomatch")) == ("string", ""), doc.get("type")
    have = {e["index"]: e["value"] for e in doc.get("table", [])}
    want = policy.log_senders(estate(), _model_host(target))
    wrong = {a: (have.get(a), want.get(a)) for a in set(have) | set(want) if have.get(a) != want.get(a)}
    assert not wrong, f"{m[1]}: address -> (on the host, in the model): {dict(sorted(wrong.items())[:10])}"


@pytest.mark.feature("log_host")
@pytest.mark.controls("gs:NET.3.2.A2", "gs:SYS.1.1.A19", "gs:OPS.1.1.5.A6")
def test_receiver_admits_only_the_log_rules_sources(host, target):
    """The live input chain lets a new connection to the receiver's port through from exactly the
    sources of the allow matrix's log rules, and each rule that admits more is named."""
    port = role_default("log_host", "log_host_port")
    flows = [f for f in policy.log_flows(estate(), _model_host(target)) if f.proto == "tcp" and f.port == port]
    assert flows, f"the allow matrix has no tcp/{port} log flow to this host"
    want = nftjson.collapse(f.src for f in flows)
    ruleset = json.loads(host.check_output("nft -j list ruleset"))["nftables"]
    have, admits = nftjson.admitted(ruleset, "input", "tcp", port)
    too_much = nftjson.beyond(have, want)
    named = [f"{a.label} (from {', '.join(map(str, a.sources))})" for a in admits if nftjson.beyond(a.sources, want)]
    assert not too_much, (
        f"tcp/{port} admitted beyond the log rules' sources by: {'; '.join(named)}"
        f" ({len(too_much)} networks too many, e.g. {', '.join(map(str, too_much[:3]))})"
    )
    missing = nftjson.beyond(want, have)
    assert not missing, f"tcp/{port} not admitted from log-rule sources {', '.join(map(str, missing))}"


@pytest.mark.feature("log_host")
@pytest.mark.controls("gs:OPS.1.1.5.A6", "gs:OPS.1.1.5.A10", "gs:DER.1.A5")
def test_received_files_only_under_model_names(host, target):
    """Every file written under the log directory within a day is <host>/syslog.log for a sender
    of the model, or unknown/<IPv4 address>/syslog.log: no directory named by a claimed name."""
    senders = set(policy.log_senders(estate(), _model_host(target)).values())
    # a retired Kommune's hosts were senders until `basisit retire`: their files are kept evidence
    senders |= {h.name for site in estate().retired.values() for h in site.hosts}
    out = host.check_output(f"find {LOG_DIR} -mindepth 1 -type f -mmin -{RECENT_MINUTES} -printf '%P\\n'")
    bad = []
    for rel in sorted(set(out.splitlines())):
        parts = rel.split("/")
        if len(parts) == 2 and parts[0] in senders and parts[1] == "syslog.log":
            continue
        if len(parts) == 3 and parts[0] == "unknown" and parts[2] == "syslog.log" and _ipv4(parts[1]):
            continue
        bad.append(rel)
    assert not bad, f"files under {LOG_DIR} outside the model's names: {bad[:10]}"


def _ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


@pytest.mark.role("any")
@pytest.mark.feature("log_host")
@pytest.mark.controls("gs:OPS.1.1.5.A6", "gs:DER.1.A5", "wiba:Vorbereitung für Sicherheitsvorfälle")
def test_lines_arrive_under_the_senders_model_name(host, target):
    """A line logged on a host that forwards reaches the log host in the directory of its own
    model name (found by the connection's source address), within the forwarder's retry interval."""
    me = _model_host(target)
    log_hosts = estate().zentral.hosts_with_role(policy.LOG_ROLE)
    flows = [f for lh in log_hosts for f in policy.log_flows(estate(), lh) if me.name in f.src_hosts]
    if not flows:
        not_applicable("the allow matrix gives this host no path to the log host")
    log_host = log_hosts[0].name
    marker = f"basisit-log-probe-{pysecrets.token_hex(8)}"
    want = f"{LOG_DIR}/{me.name}/syslog.log"
    # The forwarder retries every 30 s (base: action.resumeInterval) after the log host restarted,
    # and a line written into a connection the log host has just closed is lost: log it again once.
    for wait in (35, 45):
        host.run("logger -t basisit-probe %s", marker)
        found = connect(log_host).run(
            f"timeout {wait} sh -c 'until grep -qF {marker} {want} 2>/dev/null; do sleep 0.5; done'"
            f" || {{ grep -rlF {marker} {LOG_DIR}; exit 1; }}"
        )
        if found.rc == 0:
            return
    where = found.stdout.strip()
    pytest.fail(f"not in {want} on {log_host} within 80 s" + (f"; filed under {where}" if where else ""), pytrace=False)
