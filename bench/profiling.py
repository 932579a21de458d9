"""Profiles for `python -m bench --profile`: py-spy on the gunicorn workers
while a figure is measured, pyinstrument in-process; and a short text summary
of where the time goes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.stack import ROOT

PROJECT_DIRS = ("accounts/", "alerts/", "billing/", "config/")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@contextmanager
def py_spy(pid: int, output: Path, *, seconds: float) -> Iterator[None]:
    """Sample `pid` and its children (the gunicorn workers) for `seconds`."""
    binary = Path(sys.executable).parent / "py-spy"
    process = subprocess.Popen(
        [
            str(binary),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "200",
            "--duration",
            str(int(seconds) + 1),
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        try:
            process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)


def _short(file: str) -> str:
    file = file.replace(str(ROOT) + "/", "")
    return re.sub(r"^.*/site-packages/", "", file)


def summarize(collapsed: Path, *, top: int = 20) -> str:
    """Inclusive share of project functions, and the leaf functions where
    the samples land (self time), from py-spy's raw (collapsed) output.
    """
    if not collapsed.exists():
        return f"(no profile at {collapsed})"
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw.strip())
            if match:
                frames.append(f"{match['function']} ({_short(match['file'])})")
        if not frames:
            continue
        leaf[frames[-1]] += count
        for frame in set(frames):
            if frame.split("(", 1)[1].startswith(PROJECT_DIRS):
                inclusive[frame] += count
    if not total:
        return "(empty profile)"
    lines = [f"{total} samples; project functions, inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines.append("where samples land (self):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in leaf.most_common(top)]
    return "\n".join(lines)


def pyinstrument_text(call: Callable[[], None], output: Path) -> None:
    """Run `call()` under pyinstrument; write the text report to `output`."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    call()
    profiler.stop()
    output.write_text(profiler.output_text(unicode=True, show_all=False))
