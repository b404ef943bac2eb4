"""Benchmark rows, the target checks, and their three renderings: rich table, JSON, markdown."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

MIB = 1024 * 1024


@dataclass(slots=True)
class Row:
    """One line of the results table; ``note`` says why numbers are missing or suspect."""

    server: str
    config: str
    row: str
    concurrency: int | None
    req_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    rss_mib: float | None = None
    procs: int | None = None
    cold_start_s: float | None = None
    other_cpu_pct: float | None = None  # CPU used by neither server nor wrk: noise indicator
    front_us: float | None = None  # the front process's own CPU per request (microseconds)
    workers_us: float | None = None  # the rest of the server's tree (the model workers)
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Check:
    """One target from the issue and whether this run met it."""

    target: str
    met: bool | None  # None: a row it needs is missing
    evidence: str


def _find(rows: list[Row], config: str, row: str, concurrency: int | None) -> Row | None:
    for item in rows:
        same = (item.config, item.row, item.concurrency) == (config, row, concurrency)
        if same and item.req_per_s is not None:
            return item
    return None


def _clean(item: Row | None) -> bool:
    return item is not None and item.errors == 0


def _ratio_check(rows: list[Row], config: str, concurrency: int, factor: float, p99: bool) -> Check:
    ours = _find(rows, "marserve", "png", concurrency)
    theirs = _find(rows, config, "png", concurrency)
    label = f"c={concurrency} PNG: marserve >= {factor}x {config} req/s"
    label += " with lower p99" if p99 else ""
    if ours is None or theirs is None or not theirs.req_per_s:
        return Check(label, None, "row missing")
    assert ours.req_per_s is not None and ours.p99_ms is not None and theirs.p99_ms is not None
    ratio = ours.req_per_s / theirs.req_per_s
    met = ratio >= factor and _clean(ours) and _clean(theirs)
    evidence = f"{ratio:.2f}x ({ours.req_per_s:.0f} vs {theirs.req_per_s:.0f} req/s)"
    if p99:
        met = met and ours.p99_ms < theirs.p99_ms
        evidence += f", p99 {ours.p99_ms:.1f} vs {theirs.p99_ms:.1f} ms"
    if not (_clean(ours) and _clean(theirs)):
        evidence += ", errors present"
    return Check(label, met, evidence)


def _first(rows: list[Row], config: str, attr: str) -> float | None:
    values = [getattr(item, attr) for item in rows if item.config == config]
    present = [value for value in values if value is not None]
    return max(present) if present else None


PROTOCOL_ROWS = ("v1", "v2-json", "v2-binary", "grpc-raw")


def _protocol_checks(rows: list[Row]) -> list[Check]:
    """Each other protocol within 15% of the PNG row at the same concurrency."""
    checks = []
    for name in PROTOCOL_ROWS:
        for item in rows:
            if item.config != "marserve" or item.row != name or item.req_per_s is None:
                continue
            png = _find(rows, "marserve", "png", item.concurrency)
            label = f"c={item.concurrency} {name}: within 15% of the PNG row's req/s"
            if png is None or not png.req_per_s:
                checks.append(Check(label, None, "PNG row missing"))
                continue
            ratio = item.req_per_s / png.req_per_s
            met = ratio >= 0.85 and _clean(item)
            evidence = f"{ratio:.2f}x ({item.req_per_s:.0f} vs {png.req_per_s:.0f} req/s)"
            checks.append(Check(label, met, evidence))
    return checks


def _ceiling_check(rows: list[Row], concurrency: int, share: float) -> Check:
    """Served PNG req/s against the batched in-process ceiling (the workers' own images/s)."""
    label = f"c={concurrency} PNG: marserve >= {share:.0%} of the in-process batched ceiling"
    ours = _find(rows, "marserve", "png", concurrency)
    batched = [
        item
        for item in rows
        if item.config == "ceiling" and "batch" in item.row and item.req_per_s is not None
    ]
    if ours is None or not batched or ours.req_per_s is None:
        return Check(label, None, "row missing")
    ceiling = batched[-1].req_per_s
    assert ceiling is not None
    ratio = ours.req_per_s / ceiling
    evidence = f"{ratio:.0%} ({ours.req_per_s:.0f} of {ceiling:.0f} images/s, {batched[-1].note})"
    return Check(label, ratio >= share and _clean(ours), evidence)


def evaluate(rows: list[Row]) -> list[Check]:
    """The issue's targets, judged from ``rows`` (missing rows give ``met=None``)."""
    checks = [
        _ratio_check(rows, "torchserve", 8, 3.0, p99=True),
        _ratio_check(rows, "torchserve-1thread", 32, 1.3, p99=False),
        _ratio_check(rows, "torchserve-tuned", 8, 1.5, p99=True),
        _ratio_check(rows, "torchserve-tuned", 32, 1.5, p99=True),
        _ceiling_check(rows, 32, 0.7),
        *_protocol_checks(rows),
    ]
    cold = _first(rows, "marserve", "cold_start_s")
    checks.append(
        Check(
            "marserve cold start to first prediction < 2 s",
            None if cold is None else cold < 2.0,
            "not measured" if cold is None else f"{cold:.2f} s",
        )
    )
    ours, theirs = _first(rows, "marserve", "rss_mib"), _first(rows, "torchserve", "rss_mib")
    if ours is None or theirs is None:
        checks.append(Check("marserve peak RSS < TorchServe's", None, "not measured"))
    else:
        evidence = f"{ours:.0f} vs {theirs:.0f} MiB ({_procs(rows, 'marserve')} vs "
        evidence += f"{_procs(rows, 'torchserve')} processes)"
        checks.append(Check("marserve peak RSS < TorchServe's", ours < theirs, evidence))
    return checks


def _procs(rows: list[Row], config: str) -> int | None:
    counts = [item.procs for item in rows if item.config == config and item.procs is not None]
    return max(counts) if counts else None


def _fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


HEADERS = (
    "server",
    "row",
    "c",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "RSS MiB",
    "procs",
    "cold start s",
    "front CPU us/req",
    "workers CPU us/req",
    "other CPU %",
    "note",
)


def cells(item: Row) -> list[str]:
    """The printable cells of one row, in :data:`HEADERS` order."""
    return [
        item.server,
        item.row,
        _fmt(item.concurrency),
        _fmt(item.req_per_s, 0 if (item.req_per_s or 0) >= 100 else 1),
        _fmt(item.p50_ms, 2),
        _fmt(item.p99_ms, 2),
        _fmt(item.errors),
        _fmt(item.rss_mib, 0),
        _fmt(item.procs),
        _fmt(item.cold_start_s, 2),
        _fmt(item.front_us, 0),
        _fmt(item.workers_us, 0),
        _fmt(item.other_cpu_pct, 0),
        item.note,
    ]


def _verdict(check: Check) -> str:
    return {True: "met", False: "NOT met", None: "n/a"}[check.met]


def print_table(rows: list[Row], checks: list[Check], console: Console | None = None) -> None:
    """Print the side-by-side table and the target checks."""
    console = console or Console()
    table = Table(title="marserve vs TorchServe 0.12 (MNIST, loopback, wrk)")
    for header in HEADERS:
        justify = "left" if header in ("server", "row", "note") else "right"
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for item in rows:
        table.add_row(*cells(item), style="red" if item.errors or item.note else None)
    console.print(table)
    for line in reasons(rows):
        console.print(escape(f"  {line}"), style="red")
    for check in checks:
        console.print(escape(f"  [{_verdict(check)}] {check.target}: {check.evidence}"))


NOISY_PCT = 10.0


def noise_warning(rows: list[Row]) -> str | None:
    """A warning when other processes took a noticeable share of the CPU during some rows."""
    noisy = [item for item in rows if (item.other_cpu_pct or 0.0) > NOISY_PCT]
    if not noisy:
        return None
    worst = max(item.other_cpu_pct or 0.0 for item in noisy)
    return (
        f"{len(noisy)} of {len(rows)} rows ran while other processes used more than "
        f"{NOISY_PCT:g}% of the CPU (up to {worst:.0f}%): those numbers are disturbed; "
        "rerun on an idle machine"
    )


def reasons(rows: list[Row]) -> list[str]:
    """One line per distinct failure reason recorded on the rows, then any noise warning."""
    seen: list[str] = []
    for item in rows:
        reason = item.detail.get("reason")
        where = item.server if item.note == "not available" else f"{item.server} {item.row}"
        line = f"{where}: {item.note}: {reason}"
        if reason and line not in seen:
            seen.append(line)
    warning = noise_warning(rows)
    return [*seen, warning] if warning else seen


def markdown(rows: list[Row], checks: list[Check], meta: dict[str, Any]) -> str:
    """A markdown rendering of the run, ready to paste into bench/RESULTS.md."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for item in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(item)) + " |")
    notes = reasons(rows)
    if notes:
        lines += ["", *[f"- {line}" for line in notes]]
    lines += ["", "| target | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c.target} | {_verdict(c)} | {c.evidence} |" for c in checks]
    lines += ["", "Run settings:", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items() if not isinstance(value, dict)]
    return "\n".join(lines) + "\n"


def write_outputs(
    rows: list[Row], checks: list[Check], meta: dict[str, Any], json_path: Path, md_path: Path
) -> None:
    """Write the JSON results and the generated markdown."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "rows": [asdict(item) for item in rows],
        "checks": [asdict(check) for check in checks],
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    md_path.write_text(markdown(rows, checks, meta))
