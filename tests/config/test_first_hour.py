"""A newcomer's first hour with `make run` (issue 13): the operator commands
work as the README writes them, in a shell, on the database `make run` used
(through the `.env` it writes), and the console shows no noise.

`make run` runs here on a SQLite database of its own and a `.env` of its own
(ENV_FILE), so that the checkout's `db.sqlite3` and `.env` are left alone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from decimal import Decimal
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import Membership
from billing.models import CreditHold, UsageEvent
from config.devserver import write_env_file
from tests.processes import ProcessOutput, free_port, status_once_up

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
# What a developer's shell, or config/test_settings.py in this process, may
# hold that a newcomer's shell does not.
CLEARED = {
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "SECRET_KEY",
    "DEBUG",
    "ENV_FILE",
    "EMAIL_BACKEND",
    "SITE_URL",
    "WEBHOOKS_ALLOW_PRIVATE_URLS",
}
# Lines the console must not show (issue 13, item 6).
NOISE = (
    "No hostname was supplied",  # kombu, on the in-process broker
    "No child processes",  # make, on SIGTERM
    "Terminated",  # make, when its shell died of the SIGTERM
    "MIME-Version",  # Django's console backend prints the raw message
    "Content-Transfer-Encoding",
    "boundary=",
    "matches no files",  # gunicorn, for a reload pattern with no file yet
    "Nothing to be done",  # the sub-make for the venv
    "Control socket",  # gunicorn's, shared by every checkout
    "Watching for file changes",  # Django's autoreloader, once per process
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return {**env, **extra}


def _post(url: str, key: str, body: object) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`.venv/bin/python manage.py ...`, as the README writes it."""
    return subprocess.run(
        [str(VENV_PYTHON), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_run_then_the_readme_commands_in_a_shell(tmp_path: Path) -> None:
    port = free_port()
    env_file = tmp_path / ".env"
    database = tmp_path / "db.sqlite3"
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=_clean_env(
            PORT=str(port), ENV_FILE=str(env_file), DATABASE_URL=f"sqlite:///{database}"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    console = ProcessOutput(process)
    try:
        console.wait_for("Headroom is at", seconds=240)
        assert status_once_up(f"http://127.0.0.1:{port}/accounts/login/") == 200
        (key_line,) = [line for line in console.lines if line.startswith("Demo API key (shown")]
        demo_key = key_line.rsplit(" ", 1)[-1]
        # Taylor is at 420 of 500: 100 more reaches the limit, and the admin is emailed.
        status, body = _post(
            f"http://127.0.0.1:{port}/api/v1/usage",
            demo_key,
            {
                "events": [
                    {"idempotency_key": "first-hour-1", "user": "taylor@acme.test", "credits": 100}
                ]
            },
        )
        assert (status, body) == (202, {"accepted": 1, "duplicates": 0})
        urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=10).close()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page-h9", timeout=10)
        console.wait_for("no-such-page-h9", seconds=30)
        time.sleep(1)  # the access log line comes after the warning
    finally:
        process.send_signal(signal.SIGTERM)  # to make alone, as a supervisor would
        process.wait(timeout=30)
    lines = console.finish()
    output = "\n".join(lines)

    # A clean console.
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in make run's output:\n{output}"
    assert process.returncode == 0 or process.returncode == -signal.SIGTERM, output
    not_found = [line for line in lines if "Not Found: /no-such-page-h9" in line]
    assert len(not_found) == 1, output
    # The email as a reader wants it: who, subject, the text body, no HTML.
    subject = "Subject: [Acme Inc] taylor@acme.test reached their credit limit of 500 credits"
    at = lines.index(subject)
    email = lines[at - 2 : at + 12]
    assert email[:2] == ["Email to admin@acme.test", "From: Headroom <alerts@headroom.local>"]
    assert "taylor@acme.test reached their credit limit of 500 credits." in email
    assert "<html" not in output and "<!doctype" not in output.lower()

    # The .env it wrote: the database it used, DEBUG, a SECRET_KEY.
    written = env_file.read_text()
    assert f"DATABASE_URL=sqlite:///{database}\n" in written
    assert "DEBUG=true\n" in written
    assert re.search(r"^SECRET_KEY=\S{40,}$", written, re.MULTILINE)
    assert lines[0] == "Database: SQLite from DATABASE_URL (set in .env)"
    assert lines[1] == "Tasks: run in-process, no worker (REDIS_URL is not set)"

    # The operator commands, pasted in a shell after make run: no DEBUG, no
    # DATABASE_URL in the environment; they read the same .env.
    shell = _clean_env(ENV_FILE=str(env_file))
    created = _manage("create_api_key", "acme", env=shell)
    assert created.returncode == 0, created.stderr
    new_key = created.stdout.strip().splitlines()[-1]
    assert new_key.startswith("hr_") and new_key != demo_key
    superuser = _manage(
        "createsuperuser",
        "--noinput",
        env={
            **shell,
            "DJANGO_SUPERUSER_EMAIL": "ops@example.com",
            "DJANGO_SUPERUSER_PASSWORD": "a-long-pass-phrase",
        },
    )
    assert superuser.returncode == 0, superuser.stderr
    with sqlite3.connect(database) as connection:
        (keys,) = connection.execute("SELECT COUNT(*) FROM accounts_apikey").fetchone()
        (staff,) = connection.execute(
            "SELECT is_superuser FROM accounts_user WHERE email = 'ops@example.com'"
        ).fetchone()
    assert keys == 2 and staff == 1

    # Variables set in the shell win over the file.
    overridden = _manage(
        "create_api_key", "acme", env={**shell, "DATABASE_URL": f"sqlite:///{tmp_path / 'none'}"}
    )
    assert overridden.returncode != 0, "the .env's database was used"


def test_without_the_env_file_the_commands_stop_as_the_issue_describes(tmp_path: Path) -> None:
    """What a newcomer met before make run wrote .env: the settings refuse to start."""
    result = _manage("check", env=_clean_env(ENV_FILE=str(tmp_path / "missing")))
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_the_tests_never_read_a_developers_env_file() -> None:
    """config/test_settings.py turns the file off (ENV_FILE empty); the
    production settings read the checkout's `.env` by default.
    """
    probe = "import importlib, sys; print(importlib.import_module(sys.argv[1]).ENV_FILE)"

    def env_file(settings_module: str, **environ: str) -> str:
        return subprocess.run(
            [str(VENV_PYTHON), "-c", probe, settings_module],
            cwd=ROOT,
            env=_clean_env(**environ),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    tests_database = "postgres://postgres@127.0.0.1:5432/headroom"
    assert env_file("config.test_settings", DATABASE_URL=tests_database) == ""
    assert env_file("config.settings", DEBUG="true") == str(ROOT / ".env")


def test_env_example_lists_every_variable_of_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            documented |= set(re.findall(r"`([A-Z][A-Z0-9_<>]*)`", first_cell))
    assert {"SECRET_KEY", "DATABASE_URL", "PORT", "WEB_THREADS"} <= documented
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_<>]*)=", example, re.MULTILINE))
    # `ANYMAIL_<NAME>` stands for a family: an example of it will do.
    families = {name.split("<", 1)[0] for name in documented if "<" in name}
    exact = {name for name in documented if "<" not in name}
    missing = exact - listed
    missing |= {
        f"{prefix}<NAME>" for prefix in families if not any(n.startswith(prefix) for n in listed)
    }
    assert missing == set(), "missing from .env.example"
    unknown = {name for name in listed - exact if not name.startswith(tuple(families))}
    assert unknown == set(), "in .env.example but not in the README's table"


# The README's "First ten minutes", as written.


def _first_ten_minutes() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## First ten minutes", 1)[1].split("\n## ", 1)[0]


def _readme_curls() -> list[tuple[str, dict[str, str], str, int]]:
    """Each curl of the section: (URL, headers, body, the HTTP status its
    comment promises).
    """
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", _first_ten_minutes(), re.DOTALL):
        comment = ""  # the comment lines just before a command
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("#"):
                comment += line
                continue
            if not line.startswith("curl "):
                comment = ""
                continue
            promised = re.search(r"\(HTTP (\d{3})", comment)
            assert promised, f"no (HTTP NNN) in the comment before {line!r}"
            comment = ""
            words = shlex.split(line)
            (url,) = [word for word in words if word.startswith("http")]
            headers = dict(
                words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H"
            )
            body = words[words.index("-d") + 1]
            commands.append((url, headers, body, int(promised.group(1))))
    return commands


@pytest.mark.django_db
def test_the_readme_first_ten_minutes_work_as_written() -> None:
    output = StringIO()
    call_command("seed_demo", stdout=output)
    printed = output.getvalue().splitlines()
    (key_line,) = [line for line in printed if line.startswith("Demo API key (shown")]
    demo_key = key_line.rsplit(" ", 1)[-1]

    # The logins the README shows are the ones seed_demo prints.
    (sample,) = re.findall(r"```text\n(.*?)```", _first_ten_minutes(), re.DOTALL)
    for line in sample.splitlines():
        if line.strip() != "..." and not line.startswith("Demo API key"):
            assert line in printed, f"README shows {line!r}; seed_demo printed:\n{printed}"

    commands = _readme_curls()
    assert [url.rsplit("/", 1)[-1] for url, *_ in commands] == [
        "usage",
        "consume",
        "consume",
        "check",
    ]
    client = Client()
    for url, headers, body, promised in commands:
        assert url.startswith("http://127.0.0.1:8000/api/v1/")
        response = client.post(
            url.removeprefix("http://127.0.0.1:8000"),
            data=body,
            content_type=headers["Content-Type"],
            HTTP_AUTHORIZATION=headers["Authorization"].replace("$HEADROOM_KEY", demo_key),
        )
        assert response.status_code == promised, (url, body, response.content)
        if "consume" in url or "check" in url:
            assert response.json()["allowed"] is (promised == 200)
    # The page the section sends readers to for every endpoint.
    assert "/api/v1/docs" in _first_ten_minutes()
    assert client.get("/api/v1/docs").status_code == 200


# docs/integrating.md: its examples import what exists and work as written.


def _integrating_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs/integrating.md").read_text(), re.DOTALL)


@pytest.mark.django_db(transaction=True)
def test_the_integrating_examples_run_as_written() -> None:
    view_example, hold_view_example, hold_example, consume_example, http_example = (
        _integrating_examples()
    )
    call_command("seed_demo", stdout=StringIO())

    # The decorated views are built (an unknown source would fail here).
    view_namespace: dict[str, object] = {}
    exec(compile(view_example, "integrating.md: credit_gate", "exec"), view_namespace)
    assert callable(view_namespace["summarize"])
    exec(compile(hold_view_example, "integrating.md: hold=True", "exec"), view_namespace)
    assert callable(view_namespace["draft"])

    # credit_hold around a block of work: held, then settled for what it reports.
    fatima = Membership.objects.get(user__email="fatima@acme.test")
    hold_namespace: dict[str, object] = {
        "Decimal": Decimal,
        "membership": fatima,
        "run_job": lambda: SimpleNamespace(cost=Decimal(3)),
    }
    exec(compile(hold_example, "integrating.md: credit_hold", "exec"), hold_namespace)
    settled = CreditHold.objects.get(membership=fatima)
    assert (settled.status, settled.settled_credits) == ("settled", Decimal(3))

    # usage_consume: allowed for a member with room, refused at the limit,
    # and the same step is charged once.
    namespace: dict[str, object] = {}
    exec(compile(consume_example, "integrating.md: usage_consume", "exec"), namespace)
    run_agent_step = namespace["run_agent_step"]
    assert callable(run_agent_step)
    priya = Membership.objects.get(user__email="priya@acme.test")
    assert run_agent_step(membership=fatima, step_id="s1") is True
    assert run_agent_step(membership=fatima, step_id="s1") is True
    assert UsageEvent.objects.filter(idempotency_key="agent-step-s1").count() == 1
    assert run_agent_step(membership=priya, step_id="s2") is False

    # The HTTP client is standard library only; it is not run (no server here).
    compile(http_example, "integrating.md: HTTP", "exec")
    assert re.findall(r"^import (\S+)", http_example, re.MULTILINE) == [
        "json",
        "urllib.error",
        "urllib.request",
    ]


def test_the_first_env_file_keeps_the_urls_and_turns_debug_on(tmp_path: Path) -> None:
    path = tmp_path / ".env"

    write_env_file(
        path,
        environment={
            "DEBUG": "0",  # a one-off look at production mode
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/mine",
            "REDIS_URL": "",
            "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
        },
    )

    settings = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert [line.split("=", 1)[0] for line in settings] == ["DEBUG", "SECRET_KEY", "DATABASE_URL"]
    assert settings[0] == "DEBUG=true"
    assert settings[2] == "DATABASE_URL=postgres://postgres@127.0.0.1:5432/mine"
    assert len(settings[1]) > len("SECRET_KEY=") + 40
