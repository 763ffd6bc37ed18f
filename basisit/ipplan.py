"""The IP plan as rows for the network team: one row per site and zone."""

from __future__ import annotations

import csv
import io
import json

from basisit import model

COLUMNS = ("site", "name", "net_index", "block", "zone", "cidr", "gateway", "hosts")


def rows(estate: model.Estate, slugs: list[str] | None = None) -> list[dict]:
    sites = estate.sites if not slugs else [estate.site(s) for s in slugs]
    out = []
    for site in sites:
        for zone in site.zones.values():
            hosts = [f"{h.short}={h.addresses[zone.name]}" for h in site.hosts if zone.name in h.addresses]
            out.append(
                {
                    "site": site.slug,
                    "name": site.name,
                    "net_index": site.kommune.net_index if site.kommune else None,
                    "block": str(site.block) if site.block else None,
                    "zone": zone.name,
                    "cidr": str(zone.network),
                    "gateway": str(zone.gateway) if zone.gateway else None,
                    "hosts": hosts,
                }
            )
    return out


def table(data: list[dict], columns: tuple[str, ...] | list[str]) -> str:
    """A plain aligned text table (no colours, so it pipes and diffs well)."""

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, list | tuple):
            return " ".join(map(str, v)) or "-"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in data]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def render(data: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in data:
            w.writerow({**r, "hosts": " ".join(r["hosts"])})
        return buf.getvalue().rstrip("\n")
    return table(data, COLUMNS)
