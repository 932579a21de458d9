"""The shape of the code (docs/architecture.md): imports run one way and
never in a circle, and modules stay small enough to hold in mind.

The layers themselves (config <- accounts <- billing <- alerts) are
import-linter's contract in pyproject.toml, checked by `make lint`; these
tests check what it does not, and that the contract is really enforced.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("config", "accounts", "billing", "alerts")
MAX_LINES = 500


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*APPS, cache_dir=None)


def _application_modules() -> list[Path]:
    return sorted(
        path
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts
    )


def test_no_module_imports_itself_through_others(graph):
    """No import cycle between modules: the lazy import that hid one
    (the old alerts/delivery.py <-> alerts/tasks.py) counts as an import too.
    """
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith(f"{module}.") or module.startswith(f"{imported}."):
                continue  # a package and its own modules
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is not None and not any(
                step.startswith(f"{module}.") or module.startswith(f"{step}.")
                for step in chain[1:-1]
            ):
                cycles.append(" -> ".join((module, *chain)))
    assert cycles == []


def test_modules_stay_under_the_line_or_say_why():
    too_long = [
        f"{path.relative_to(ROOT)} ({lines} lines)"
        for path in _application_modules()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
        and "Longer than 500 lines because" not in path.read_text()[:2000]
    ]
    assert too_long == []


def test_the_layers_contract_refuses_a_domain_module_that_imports_a_higher_app(tmp_path):
    """The contract of `make lint`, run on a copy of the tree where billing's
    limits import the alerts app, fails; on the tree as it is, it passes.
    """
    lint_imports = Path(sys.executable).with_name("lint-imports")
    kept = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert kept.returncode == 0, kept.stdout

    copy = tmp_path / "tree"
    for app in APPS:
        shutil.copytree(ROOT / app, copy / app, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    limits = copy / "billing" / "services" / "limits.py"
    limits.write_text(limits.read_text() + "\nfrom alerts.services import rules  # noqa\n")
    broken = subprocess.run(
        [lint_imports, "--no-cache"], cwd=copy, capture_output=True, text=True, check=False
    )
    assert broken.returncode != 0
    assert "billing.services.limits -> alerts.services.rules" in broken.stdout


def test_the_documented_path_of_a_usage_event_names_six_modules_that_exist():
    """docs/architecture.md walks one usage event through at most six
    application modules; each it names must exist, so the page stays true
    as files move.
    """
    page = (ROOT / "docs" / "architecture.md").read_text()
    path_section = page.split("## The path of one usage event", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^\d+\. \*\*`([\w/]+\.py)`\*\*", path_section, flags=re.MULTILINE)
    assert 0 < len(steps) <= 6
    assert [step for step in steps if not (ROOT / step).is_file()] == []
