"""Create Kommune files from the municipality directory (CSV), never touching existing ones.

`basisit inventory import --csv reference/saarland-gemeinden.csv` (the Destatis directory the
repository ships, see reference/README.md) adds a file for every municipality that has none yet,
with the next free net_index, so adding a Kommune never renumbers another.
"""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import yaml

MODEL_KOMMUNEN = {"10045111", "10042114", "10044113", "10046118"}  # Bexbach, Mettlach, Nalbach, Tholey
# Wave rule: after the model wave, one wave per district, smallest district (fewest
# municipalities) first so each wave's lessons reach the larger districts; ties by name.
FIRST_NET_INDEX = 16  # blocks below are kept free for zentral and later central networks
DOMAIN_SUFFIX = "basisit.internal"

_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def slugify(name: str) -> str:
    """'Sulzbach/Saar' -> 'sulzbach-saar', 'St. Wendel' -> 'st-wendel', 'Püttlingen' -> 'puettlingen'."""
    s = name.translate(_GERMAN)
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    out, dash = [], False
    for ch in s.lower():
        if ch.isalnum():
            out.append(ch)
            dash = False
        elif not dash and out:
            out.append("-")
            dash = True
    return "".join(out).strip("-")


def netbios_name(slug: str) -> str:
    return slug.replace("-", "").upper()[:15]


def district_waves(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        if r["ags"] not in MODEL_KOMMUNEN:
            counts[r["district"]] = counts.get(r["district"], 0) + 1
    order = sorted(counts, key=lambda d: (counts[d], d))
    return {d: i + 1 for i, d in enumerate(order)}


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def import_csv(csv_path: Path, inventory: Path) -> list[Path]:
    """Write kommunen/<slug>.yaml for every CSV row without one; returns the files written."""
    rows = read_csv(csv_path)
    kdir = inventory / "kommunen"
    kdir.mkdir(parents=True, exist_ok=True)
    existing = {}
    used_index = set()
    for f in kdir.glob("*.yaml"):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        existing[str(data.get("ags"))] = f
        if isinstance(data.get("net_index"), int):
            used_index.add(data["net_index"])
    waves = district_waves(rows)
    written = []
    next_index = FIRST_NET_INDEX
    for r in sorted(rows, key=lambda r: r["ags"]):
        if r["ags"] in existing:
            continue
        while next_index in used_index:
            next_index += 1
        used_index.add(next_index)
        slug = slugify(r["name"])
        doc = {
            "slug": slug,
            "ags": r["ags"],
            "name": r["name"],
            "kind": r["kind"],
            "district": r["district"],
            "population": {"count": int(r["population"]), "date": r["population_date"]},
            "wave": "modell" if r["ags"] in MODEL_KOMMUNEN else waves[r["district"]],
            "net_index": next_index,
            "ad_domain": f"{slug}.{DOMAIN_SUFFIX}",
            "netbios": netbios_name(slug),
            "endpoints": [],
        }
        text = "---\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
        text = text.replace(f"date: '{r['population_date']}'", f"date: {r['population_date']}")
        path = kdir / f"{slug}.yaml"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
