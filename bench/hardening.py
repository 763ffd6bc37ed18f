"""Benchmark: hardening judged from outside — Lynis on every role's host of a converged lab.

Brings up a lab of its own (state /tmp/basisit-bench-hardening/state, prefix `bh`, so neither a
developer's lab nor the lab tests' is touched): nalbach (size S: gateway, domain controller with
its backup client, endpoint) and zentral (gateway with the VPN hub, management host, backup
server, log host); converges them with `playbooks/site.yml`, runs Lynis in every host and
records per host the hardening index, the tests done, every warning and suggestion, and the
tests the waiver profile skips; then takes the lab down.

Lynis is the control host's (Debian package `lynis`, setup/apt-packages.txt), not the image's:
its shell scripts (`/usr/sbin/lynis`, `/usr/share/lynis/{include,db}`, `/etc/lynis/plugins`,
`/etc/lynis/default.prf`) and the waivers (bench/lynis/custom.prf, each `skip-test=` with its
reason) are packed into a tar stream, unpacked over the lab's SSH into a private directory of
the guest, run there as a standalone copy (`lynis audit system --quick --no-colors --cronjob`,
report and log in that directory) and removed afterwards with its report: nothing stays behind.

`--before-tree DIR` first converges the lab with another checkout (e.g. `git worktree add
/tmp/before <commit>`) and audits it ("before"); then this tree converges the same hosts and
they are audited again ("after"). With `--before-only` the after figure comes from the lab
tests instead: `BASISIT_HARDENING_RESULTS=FILE pytest -m lab tests/lab/test_hardening.py`
audits the session's freshly converged lab (record_after). Results: bench/results/hardening.json
(or $BASISIT_HARDENING_RESULTS); then bench/report.py.

    .venv/bin/python bench/hardening.py --before-tree /tmp/before --before-note "before = main e1f0239"
    .venv/bin/python bench/hardening.py                 # "after" only

The lab is one per machine: run it when no other lab holds the machine (the lab turn lock).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from machine import describe  # bench/machine.py: bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = Path(os.environ.get("BASISIT_HARDENING_RESULTS") or ROOT / "bench" / "results" / "hardening.json")
WAIVERS = ROOT / "bench" / "lynis" / "custom.prf"
STATE = Path("/tmp/basisit-bench-hardening/state")
PREFIX = "bh"
# The lab tests' image cache: the image is the same (keyed by the package list), built once.
IMAGES = Path(os.environ.get("BASISIT_LAB_IMAGES", "/tmp/basisit-labtest-images"))
KOMMUNE = "nalbach"
TARGET = 80
LYNIS_FILES = {  # path in the guest's private directory: path on the control host
    "lynis": Path("/usr/sbin/lynis"),
    "include": Path("/usr/share/lynis/include"),
    "db": Path("/usr/share/lynis/db"),
    "plugins": Path("/etc/lynis/plugins"),
    "default.prf": Path("/etc/lynis/default.prf"),
}
RECAP = re.compile(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def env(state: Path, tree: Path = ROOT) -> dict[str, str]:
    e = dict(os.environ, BASISIT_STATE=str(state), BASISIT_LAB_PREFIX=PREFIX, BASISIT_LAB_IMAGES=str(IMAGES))
    e.update(ANSIBLE_CONFIG=str(tree / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PYTHONPATH=str(tree), CI="1")
    e["ANSIBLE_CONTROL_PATH_DIR"] = str(state / "ansible-cp")
    e["PATH"] = f"{ROOT / '.venv' / 'bin'}:{e.get('PATH', '')}"
    return e


def basisit(state: Path, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "basisit.cli", "--state", str(state), *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env(state), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise SystemExit(f"basisit {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


# --- Lynis: the report, the waivers, the standalone copy ------------------------------------


def parse_report(text: str) -> dict:
    """lynis-report.dat (`key=value`, `key[]=value` repeated) as the figures the bench records.

    Warnings and suggestions are `ID|text|details|solution|`; the same ID may occur more than once
    (one entry per finding), so they stay a list of {id, text, details}."""
    scalars: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if key.endswith("[]"):
            lists.setdefault(key[:-2], []).append(value)
        else:
            scalars[key] = value

    def findings(kind: str) -> list[dict]:
        out = []
        for v in lists.get(kind, []):
            parts = [*v.split("|"), "", ""]
            out.append({"id": parts[0], "text": parts[1], "details": "" if parts[2] == "-" else parts[2]})
        return out

    if "hardening_index" not in scalars:
        raise ValueError("not a complete Lynis report: no hardening_index")
    return {
        "hardening_index": int(scalars["hardening_index"]),
        "tests_done": int(scalars.get("lynis_tests_done", 0) or 0),
        "lynis_version": scalars.get("lynis_version", ""),
        "warnings": findings("warning"),
        "suggestions": findings("suggestion"),
        "tests_skipped": sorted(set(lists.get("tests_skipped", []))),
    }


def read_waivers(path: Path = WAIVERS) -> dict[str, str]:
    """The waiver profile: every `skip-test=ID` line directly under a `# reason` comment.

    A waiver without a reason, or twice, is an error: a skipped test must say why."""
    waivers: dict[str, str] = {}
    reason: list[str] = []
    after_skip = False  # consecutive skip-test lines share the comment above them
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            if after_skip:  # a comment after a waiver starts the next waiver's reason
                reason, after_skip = [], False
            reason.append(line.lstrip("#").strip())
        elif line.startswith("skip-test="):
            after_skip = True
            tid = line.split("=", 1)[1].strip()
            if not re.fullmatch(r"[A-Z]+-\d{4}(:\S+)?", tid):
                raise ValueError(f"{path}:{n}: not a Lynis test ID: {tid!r}")
            why = " ".join(r for r in reason if r)
            if not why:
                raise ValueError(f"{path}:{n}: skip-test={tid} has no reason (a '# reason' comment right above it)")
            if tid in waivers:
                raise ValueError(f"{path}:{n}: skip-test={tid} is waived twice")
            waivers[tid] = why
        elif line:
            reason, after_skip = [], False
            if not re.fullmatch(r"[a-z-]+=.*", line):
                raise ValueError(f"{path}:{n}: not a Lynis profile line: {line!r}")
        else:
            reason, after_skip = [], False
    return waivers


def lynis_tarball(waivers: Path | None = WAIVERS) -> bytes:
    """The control host's Lynis as a standalone directory (root-owned, not group/world-writable,
    as Lynis demands of its own files), plus the waivers as custom.prf (None: no waivers)."""
    missing = [str(p) for p in LYNIS_FILES.values() if not p.exists()]
    if missing:
        raise SystemExit(f"Lynis is not installed on the control host ({', '.join(missing)}): make setup")

    def owned_by_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.mode &= 0o755 if ti.isdir() or ti.name == "lynis" else 0o640
        return ti

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, src in LYNIS_FILES.items():
            tar.add(src, arcname=name, filter=owned_by_root)
        prf = waivers.read_bytes() if waivers else b"# no waivers\n"
        ti = owned_by_root(tarfile.TarInfo("custom.prf"))
        ti.size, ti.mode = len(prf), 0o640
        tar.addfile(ti, io.BytesIO(prf))
    return buf.getvalue()


# Unpacked into a fresh private directory, run there, report printed, directory removed (trap):
# a run that fails or is interrupted leaves nothing in the guest either.
REMOTE = r"""set -eu
d=$(mktemp -d /root/.basisit-lynis.XXXXXX)
trap 'rm -rf "$d"' EXIT
tar -xzf - -C "$d"
cd "$d"
./lynis audit system --quick --no-colors --cronjob --logfile "$d/lynis.log" --report-file "$d/report.dat" >"$d/out" 2>&1 || {
  echo "lynis exited $?" >&2; tail -20 "$d/out" >&2; exit 3; }
cat "$d/report.dat"
"""


def audit_host(state: Path, address: str, tarball: bytes, timeout: float = 900) -> dict:
    from basisit.lab import ssh

    user = ssh.USER
    command = REMOTE if user == "root" else f"sudo sh -c {shlex_quote(REMOTE)}"
    cmd = ["ssh", *ssh.options(state), "-o", "ConnectTimeout=5", f"{user}@{address}", command]
    t0 = time.monotonic()
    p = subprocess.run(cmd, input=tarball, capture_output=True, timeout=timeout)
    secs = round(time.monotonic() - t0, 1)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace")[-2000:]
        return {"error": f"exit {p.returncode}: {err.strip()}", "seconds": secs}
    r = parse_report(p.stdout.decode(errors="replace"))
    r["seconds"] = secs
    return r


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def left_behind(state: Path, address: str) -> list[str]:
    """What the audit might have left in the guest (must be nothing)."""
    from basisit.lab import ssh

    p = ssh.run(state, address, "ls -d /root/.basisit-lynis.* /var/log/lynis.log /var/log/lynis-report.dat 2>/dev/null")
    return p.stdout.split()


# --- the lab ----------------------------------------------------------------------------------


def hosts_of_lab(state: Path) -> dict[str, dict]:
    """Every running lab host of this state: its model address and roles."""
    from basisit.lab import host
    from basisit.validate import load_estate

    estate = load_estate(ROOT / "inventory")
    roles = {h.name: list(h.roles) for s in estate.sites for h in s.hosts}
    return {r.host: {"address": r.address, "roles": roles.get(r.host, [])} for _d, r in host.records(state)}


def converge(state: Path, tree: Path, logs: Path, name: str) -> dict:
    cmd = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "playbooks/site.yml", "-l", f"{KOMMUNE},zentral"]
    t0 = time.monotonic()
    log = logs / f"converge-{name}.log"
    with log.open("w", encoding="utf-8") as fh:
        p = subprocess.run(cmd, cwd=tree, env=env(state, tree), stdout=fh, stderr=subprocess.STDOUT, timeout=2400)
    out = log.read_text(encoding="utf-8", errors="replace")
    recap = {h: {"changed": int(c), "unreachable": int(u), "failed": int(f)} for h, c, u, f in RECAP.findall(out)}
    return {
        "command": f"ansible-playbook playbooks/site.yml -l {KOMMUNE},zentral",
        "exit_status": p.returncode,
        "seconds": round(time.monotonic() - t0, 1),
        "changed": sum(v["changed"] for v in recap.values()),
        "failed_hosts": sorted(h for h, v in recap.items() if v["failed"] or v["unreachable"]),
        "log": str(log),
    }


def commit_of(tree: Path) -> str:
    p = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True, text=True).stdout
    return (p.stdout.strip() or "?") + ("+changes" if dirty.strip() else "")


def audit_all(state: Path, tarball: bytes, only: set[str] | None = None) -> dict[str, dict]:
    hosts = {n: h for n, h in hosts_of_lab(state).items() if only is None or n in only}
    out: dict[str, dict] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts) or 1) as pool:  # CPU-bound: ~1 min each
        futs = {pool.submit(audit_host, state, h["address"], tarball): name for name, h in hosts.items()}
        for f in concurrent.futures.as_completed(futs):
            name = futs[f]
            r = {"roles": hosts[name]["roles"], **f.result()}
            r["left_behind"] = left_behind(state, hosts[name]["address"])
            out[name] = r
            print(
                f"  {name}: index {r.get('hardening_index', '?')}, {len(r.get('warnings', []))} warnings, "
                f"{r.get('seconds')} s {r.get('error', '')}",
                flush=True,
            )
    return dict(sorted(out.items()))


def phase(state: Path, tree: Path, logs: Path, name: str, tarball: bytes, note: str) -> dict:
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print(f"{name}: converge with {tree} …", flush=True)
    conv = converge(state, tree, logs, name)
    print(f"{name}: converge exit {conv['exit_status']} in {conv['seconds']} s, changed={conv['changed']}", flush=True)
    hosts = audit_all(state, tarball)
    idx = [h["hardening_index"] for h in hosts.values() if "hardening_index" in h]
    r = {
        "date": started,
        "commit": commit_of(tree),
        "machine": describe(),
        "converge": conv,
        "hosts": hosts,
        "index_min": min(idx) if idx else None,
        "hosts_below_target": sorted(n for n, h in hosts.items() if h.get("hardening_index", 0) < TARGET),
    }
    if note:
        r["note"] = note
    return r


def record_after(state: Path, out: Path, converge: dict, only: set[str] | None = None, note: str = "") -> dict:
    """The after figure from a lab that is already converged with this tree (the lab tests'
    session, tests/lab/test_hardening.py): audit every host, merge it into `out`."""
    hosts = audit_all(state, lynis_tarball(), only)
    idx = [h["hardening_index"] for h in hosts.values() if "hardening_index" in h]
    doc = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"benchmark": "hardening"}
    doc.update(target=TARGET, kommune=KOMMUNE, waivers=read_waivers())
    doc["after"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit_of(ROOT),
        "machine": describe(),
        "converge": converge,
        "hosts": hosts,
        "index_min": min(idx) if idx else None,
        "hosts_below_target": sorted(n for n, h in hosts.items() if h.get("hardening_index", 0) < TARGET),
        **({"note": note} if note else {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc["after"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-tree", type=Path, help="converge and audit with this checkout first (the 'before')")
    ap.add_argument("--before-note", default="", help="stored with the before entry")
    ap.add_argument("--note", default="", help="stored with the after entry")
    ap.add_argument("--state", type=Path, default=STATE)
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    ap.add_argument(
        "--before-only",
        action="store_true",
        help="only the before tree (the after figure then comes from a lab turn, see record_after)",
    )
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/hardening.py drives the lab: run it as root")
    waivers = read_waivers()
    tarball = lynis_tarball()
    bare = lynis_tarball(None)  # the before tree has no waivers: its figure is Lynis' own
    state = a.state.resolve()
    logs = Path(tempfile.mkdtemp(prefix="basisit-bench-hardening-"))
    doc = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else {"benchmark": "hardening"}
    doc.update(target=TARGET, kommune=KOMMUNE, waivers=waivers)
    if a.before_tree:
        doc.pop("before", None)
    if state.exists():
        basisit(state, "lab", "down", "--all", check=False)
        shutil.rmtree(state)
    state.mkdir(parents=True)
    try:
        t0 = time.monotonic()
        basisit(state, "lab", "up", "--kommune", KOMMUNE)
        print(f"lab up in {time.monotonic() - t0:.0f} s", flush=True)
        if a.before_tree:
            doc["before"] = phase(state, a.before_tree.resolve(), logs, "before", bare, a.before_note)
            OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if not a.before_only:
            doc["after"] = phase(state, ROOT, logs, "after", tarball, a.note)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {OUT} (logs {logs})", flush=True)
    finally:
        if not a.keep:
            basisit(state, "lab", "down", "--all", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
