"""Figures, their baselines and verdicts: the printed table, the Markdown
table of the README, and `bench/results.json`.

    python -m bench.report            # the Markdown table of the last run
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    shown: str  # the value as printed
    baseline: str = ""  # the physical baseline beside it, and the ratio
    target: str = ""  # e.g. ">= 10,000 events/s"; empty: no target
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.met is None:
            return ""
        return "met" if self.met else "MISSED"


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        line = f"  -> {figure.name}: {figure.shown}"
        if figure.baseline:
            line += f"  [{figure.baseline}]"
        if figure.target:
            line += f"  target {figure.target}: {figure.verdict}"
        print(line, flush=True)
        return figure

    def as_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": self.config,
            "figures": [
                asdict(f) | {"verdict": f.verdict}
                for f in sorted(self.figures, key=lambda f: f.section)
            ],
            "targets": {
                "met": sum(1 for f in self.figures if f.met is True),
                "missed": [f"{f.section}: {f.name}" for f in self.figures if f.met is False],
            },
        }

    def write(self, path: Path = RESULTS) -> None:
        data = _finite(self.as_json())
        path.write_text(json.dumps(data, indent=2, default=str, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """JSON has no infinity: an unbounded latency is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _row_cells(figure: dict[str, Any]) -> list[str]:
    return [
        figure["section"],
        figure["name"],
        figure["shown"],
        figure["baseline"] or "",
        figure["target"] or "",
        figure["verdict"],
    ]


HEADER = ["", "figure", "result", "baseline", "target", "verdict"]


def text_table(results: dict[str, Any]) -> str:
    rows = [HEADER] + [_row_cells(f) for f in results["figures"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: dict[str, Any]) -> str:
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(" --- " for _ in HEADER) + "|",
    ]
    for figure in results["figures"]:
        cells = _row_cells(figure)
        cells[-1] = {"met": "met", "MISSED": "**missed**"}.get(cells[-1], cells[-1])
        lines.append("| " + " | ".join(escape(c) for c in cells) + " |")
    return "\n".join(lines)


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"PostgreSQL {machine['postgresql']}, Redis {machine['redis']}, "
        f"Python {machine['python']}; {machine['date']}"
    )


def conditions_line(machine: dict[str, Any]) -> str:
    """How busy other work kept the machine: figures are only as clean as that."""
    steps = machine.get("cpu_busy_before_steps") or []
    busy = sorted(steps)[len(steps) // 2] if steps else None
    line = f"CPU busy with other work before the start: {machine['cpu_busy_before_start']:.0%}"
    if busy is not None:
        line += f", before the HTTP measurements (median): {busy:.0%}"
    load = machine.get("load_average_at_end")
    if load:
        line += f"; load average at the end {load[0]:.1f}"
    return line


def machine_info() -> dict[str, Any]:
    import django
    import psycopg
    import redis

    from bench.stack import POSTGRES_ADMIN_URL, REDIS_URL

    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().split()
        memory_gib = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        memory_gib = 0.0
    with psycopg.connect(POSTGRES_ADMIN_URL) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        postgres = row[0] if row else "?"
        settings: dict[str, str] = dict(
            connection.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections')"
            ).fetchall()
        )
    redis_info = redis.Redis.from_url(REDIS_URL).info("server")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "postgresql": postgres.split(" ")[0],
        "postgresql_settings": settings,
        "redis": redis_info.get("redis_version", "?"),
        "python": platform.python_version(),
        "django": django.get_version(),
        "os": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": commit,
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    if not RESULTS.exists():
        sys.exit("No bench/results.json yet: run `make bench`.")
    results = json.loads(RESULTS.read_text())
    print(f"Machine: {machine_line(results['machine'])}")
    print(f"Conditions: {conditions_line(results['machine'])}\n")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
