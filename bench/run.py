"""`make bench`: ingest throughput, gate latency, alert latency and scaling,
each beside its physical baseline, against PostgreSQL, Redis, a Celery worker
and gunicorn started here on 127.0.0.1. Prints a table and writes
`bench/results.json`. A benchmark, not a test: it never fails on a missed
target (it exits non-zero only when it could not measure).

    python -m bench             # the whole run, about 4 minutes on 2 cores
    python -m bench --profile   # the same, with py-spy on the gunicorn workers
                                # and pyinstrument in-process (slower figures)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

from bench import stack
from bench.fixtures import Tenant
from bench.report import (
    RESULTS,
    Figure,
    Report,
    conditions_line,
    machine_info,
    machine_line,
    text_table,
)

HARD_LIMIT_SECONDS = 900  # every step is bounded; this is the last resort

# The targets.
BATCH_EVENTS_PER_S = 10_000
CONSUME_PER_S = 2_000
CONSUME_P99_MS = 10.0
OFFERED_RATE = 500
ALERT_P99_MS = 1000.0
SCALING_RATIO = 1.2
# SPEC §9 (issue 15): consume and ingest with 3 active grants drawn, at most
# 1.3x the same organization's cost with none.
GRANTS = 3
GRANTS_RATIO = 1.3
# SPEC §10 (issue 16): a batch mixing sum, max and unique_count meters, at most
# 1.3x a credits-only batch of the same size (per event).
METERS_RATIO = 1.3
# SPEC §13 (issue 18): a hold and its settle together cost at most this many consumes.
HOLD_PAIR_RATIO = 2.2
# Issue 19: the API's do-nothing view costs at most this many bare Django ones.
FLOOR_RATIO = 1.5
# Issue 19: one organization's members at once get at least this share of
# the rate as many members of as many organizations.
HOT_ORGANIZATION_SHARE = 0.7
# SPEC §12 (issue 17): consume and ingest of an organization that 3 platform
# alerts apply to (none crossed), at most 1.2x the same path with none.
PLATFORM_ALERTS = 3
# SPEC §12 (issue 17): a plan alert added to a plan of 10,000 organizations answers in
# under a second.
PLAN_ALERT_MS = 1000.0
PAGE_QUERIES = 20
PAGE_MS = 150.0

INGEST_CLIENTS = 4
GATE_CLIENTS = 50
GATE_ORGANIZATIONS = 10
MEMBERS = 100  # of each ingest and gate organization
ORGANIZATIONS = 10_000
USERS = 100_000
ALERTS = 25
PAGE_MEMBERS = 10_000
FIRINGS = 120
SMALL_DATABASE = f"{stack.DATABASE}_small"

S_INGEST = "1. batch ingest"
S_GATE = "2. ingest & consume"
S_ALERT = "3. alert latency"
S_SCALE = "4. scaling"
S_PAGE = "5. limits page"


def ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "unanswered"
    if value < 10:
        return f"{value:.2f} ms"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def pcts(summary: dict[str, Any], keys: tuple[str, ...] = ("p50_ms", "p95_ms", "p99_ms")) -> str:
    names = [k.split("_")[0] for k in keys]
    if all(summary[k] is None for k in keys):
        return "/".join(names) + " unanswered"
    return " / ".join(f"{name} {ms(summary[k])}" for name, k in zip(names, keys, strict=True))


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def step(self, message: str) -> None:
        stack.log(f"[{time.monotonic() - self.started:4.0f} s] {message}")


@dataclass
class Fixtures:
    base: Tenant  # 1 user, 1 alert: the small side of every scaling ratio
    ingest: list[Tenant]
    gate: list[Tenant]
    users: Tenant  # 100,000 members
    alerts: Tenant  # 25 alerts
    page: Tenant  # 10,000 members, every section of the page full
    fire_idle: list[Tenant]
    fire_loaded: list[Tenant]
    organizations: int
    spread: list[Tenant]  # GATE_CLIENTS organizations of one member: beside one hot one


@dataclass
class Baselines:
    ping: Any
    rtt: Any
    write: Any
    copy_rows: int
    copy_seconds: float
    inproc_p50_ms: float
    empty_view_rate: float = 0.0  # requests/s of a view doing nothing, same stack

    @property
    def copy_rate(self) -> float:
        return self.copy_rows / self.copy_seconds


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError(f"the benchmark ran past {HARD_LIMIT_SECONDS} s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--profile", action="store_true", help="profile with py-spy and pyinstrument too"
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs, to try the benchmark itself"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HARD_LIMIT_SECONDS)
    scale = 0.3 if args.quick else 1.0
    profile_dir = Path(tempfile.mkdtemp(prefix="headroom-bench-profile-")) if args.profile else None

    clock = Clock()
    stack.check_services()
    report = Report(machine=machine_info())
    report.config = {
        "gunicorn": f"{stack.WEB_CONCURRENCY} sync workers",
        "celery": f"prefork, concurrency {stack.WORKER_CONCURRENCY} (the Procfile's worker line)",
        "database": stack.DATABASE,
        "redis": stack.REDIS_URL,
        "quick": args.quick,
        "profile": args.profile,
    }
    clock.step(f"Machine: {machine_line(report.machine)}")
    report.machine["cpu_busy_before_start"] = round(stack.wait_for_quiet(seconds=60), 2)

    from tests.stubs import postmark_stub

    stack.recreate_database()
    stack.flush_redis()
    with postmark_stub() as provider:
        env = stack.environment(provider_url=provider.url)
        clock.step(f"Migrating the scratch database {stack.DATABASE}")
        stack.migrate(env)
        stack.django_setup(env)
        fixtures = _measure_in_process(report, clock, env, scale=scale, profile_dir=profile_dir)
        baselines = _baselines(report, clock, fixtures, scale=scale, profile_dir=profile_dir)
        _measure_page(report, clock, fixtures, baselines, scale=scale, profile_dir=profile_dir)
        baselines.empty_view_rate = _measure_empty_view(report, clock, env, fixtures, scale)
        clock.step(f"Starting gunicorn ({stack.WEB_CONCURRENCY} workers) and a Celery worker")
        with stack.servers(env) as servers:
            _measure_http(report, clock, servers, fixtures, baselines, scale, profile_dir)
            _measure_alerts(report, clock, servers, provider, fixtures, scale)

    report.machine["load_average_at_end"] = os.getloadavg()
    report.machine["duration_s"] = round(time.monotonic() - clock.started)
    report.write()
    clock.step(f"Done; wrote {RESULTS.relative_to(stack.ROOT)}")
    results = json.loads(RESULTS.read_text())
    print(f"\nMachine: {machine_line(report.machine)}")
    print(f"Servers: {report.config['gunicorn']}; Celery {report.config['celery']}")
    print(f"Conditions: {conditions_line(report.machine)}\n")
    print(text_table(results))
    missed = results["targets"]["missed"]
    print(
        f"\nTargets met: {results['targets']['met']}, missed: {len(missed)}"
        + "".join(f"\n  - {m}" for m in missed)
    )
    if profile_dir:
        _print_profiles(profile_dir)
    signal.alarm(0)


def _measure_in_process(
    report: Report, clock: Clock, env: dict[str, str], *, scale: float, profile_dir: Path | None
) -> Fixtures:
    """Fixtures and the scaling ratios: all in this process."""
    from django.db import connection

    from accounts.models import Organization, User
    from bench import alert_latency, fixtures, scaling

    rounds = max(5, int(20 * scale))
    clock.step(f"Scaling, small fixture: the only organization in {SMALL_DATABASE}")
    stack.recreate_database(SMALL_DATABASE)
    stack.migrate(env | {"DATABASE_URL": stack.database_url(SMALL_DATABASE)})
    small = scaling.OtherDatabase(SMALL_DATABASE)
    with small.active():
        alone = fixtures.tenant_create("scale-base", members=1, alerts=1)
    base = fixtures.tenant_create("scale-base", members=1, alerts=1)

    clock.step("Fixtures: organizations for ingest, the gate and alert firings")
    ingest = [fixtures.tenant_create(f"ingest-{i}", members=MEMBERS) for i in range(INGEST_CLIENTS)]
    gate = [fixtures.tenant_create(f"gate-{i}", members=MEMBERS) for i in range(GATE_ORGANIZATIONS)]
    spread = [fixtures.tenant_create(f"spread-{i}") for i in range(GATE_CLIENTS)]
    firings = FIRINGS if scale >= 1 else max(20, int(FIRINGS * scale))
    fire_idle = alert_latency.firing_tenants(firings, prefix="fire-idle")
    fire_loaded = alert_latency.firing_tenants(firings, prefix="fire-load")

    clock.step(f"Fixtures: an organization of {USERS:,} members, one of {ALERTS} alerts (bulk)")
    users = fixtures.tenant_create("scale-users", members=USERS, alerts=1)
    fixtures.usage_fill(users)
    fixtures.custom_limits_bulk(users, 1000)
    alerts = fixtures.tenant_create("scale-alerts", members=1, alerts=ALERTS)
    grants = fixtures.tenant_create("scale-grants", members=1, alerts=1)
    fixtures.grants_add(grants, count=GRANTS)
    metered = fixtures.tenant_create("scale-meters", members=1, alerts=1)
    meter_keys = fixtures.meters_create()
    platform = fixtures.tenant_create("scale-platform", members=1, alerts=1)
    fixtures.platform_alerts_add(platform, count=PLATFORM_ALERTS)
    crowded = fixtures.tenant_create("scale-plan-crowded", members=1, alerts=1)
    plan_alone = fixtures.tenant_create("scale-plan-alone", members=1, alerts=1)

    clock.step(f"Fixtures: the Limits & Alerts page's organization of {PAGE_MEMBERS:,} members")
    page_users = list(
        User.objects.filter(email__startswith="scale-users-u").order_by("pk")[: PAGE_MEMBERS - 1]
    )
    page = fixtures.page_organization("page", users=page_users)

    clock.step(f"Fixtures: up to {ORGANIZATIONS:,} organizations (bulk)")
    fixtures.organizations_fill(ORGANIZATIONS)
    big_plan, small_plan = fixtures.plans_create(crowded, plan_alone)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        # Write the bulk load out now, not in a checkpoint during the measurements.
        cursor.execute("CHECKPOINT")
    on_crowded_plan = _measure_plan_alert(report, clock, big_plan, small_plan)
    made = Fixtures(
        base=base,
        ingest=ingest,
        gate=gate,
        users=users,
        alerts=alerts,
        page=page,
        fire_idle=fire_idle,
        fire_loaded=fire_loaded,
        organizations=Organization.objects.count(),
        spread=spread,
    )

    clock.step("Scaling: the four fixtures, interleaved")
    stack.wait_for_quiet(seconds=15)
    base_small = scaling.Probe("alone", alone, alone.users[0], database=small)
    base_big = scaling.Probe("base", base, base.users[0])
    users_big = scaling.Probe("users", users, users.users[USERS // 2])
    alerts_big = scaling.Probe("alerts", alerts, alerts.users[0])
    grants_big = scaling.Probe("grants", grants, grants.users[0])
    meters_big = scaling.Probe("meters", metered, metered.users[0], meters=meter_keys)
    platform_big = scaling.Probe("platform", platform, platform.users[0])
    plan_small = scaling.Probe("plan-alone", plan_alone, plan_alone.users[0])
    plan_big = scaling.Probe("plan-crowded", crowded, crowded.users[0])
    probes = [
        base_small,
        base_big,
        users_big,
        alerts_big,
        grants_big,
        meters_big,
        platform_big,
        plan_small,
        plan_big,
    ]
    try:
        scaling.measure(probes, rounds=rounds)
    finally:
        small.close()
    for label, before_probe, after_probe in (
        (f"1 -> {made.organizations:,} organizations", base_small, base_big),
        (f"1 -> {USERS:,} users", base_big, users_big),
        (f"1 -> {ALERTS} alerts per organization", base_big, alerts_big),
        (f"with {GRANTS} active grants vs none", base_big, grants_big),
        ("a batch mixing 3 meters vs credits only", base_big, meters_big),
        (f"with {PLATFORM_ALERTS} platform alerts vs none", base_big, platform_big),
        (f"1 -> {on_crowded_plan:,} organizations on its plan", plan_small, plan_big),
    ):
        for kind, unit in (("ingest", "per event"), ("consume", "per call")):
            if "meters" in label and kind == "consume":
                continue  # a consume is of credits: the meters change only ingest
            limit = GRANTS_RATIO if "grants" in label else SCALING_RATIO
            if "meters" in label:
                limit = METERS_RATIO
            before = statistics.median(getattr(before_probe, kind))
            after = statistics.median(getattr(after_probe, kind))
            ratio = scaling.ratio(before_probe, after_probe, kind)
            report.add(
                Figure(
                    S_SCALE,
                    f"{kind} {unit}, {label}",
                    ratio,
                    "ratio",
                    f"{ratio:.2f}x",
                    baseline=f"{before * 1e6:,.0f} -> {after * 1e6:,.0f} us",
                    target=f"<= {limit}",
                    met=ratio <= limit,
                    detail={
                        "small_us": before * 1e6,
                        "big_us": after * 1e6,
                        "rounds": len(getattr(after_probe, kind)),
                    },
                )
            )

    return made


def _measure_plan_alert(report: Report, clock: Clock, big: Any, small: Any) -> int:
    """SPEC §12: a plan alert added to a plan of 10,000 organizations answers
    at once (its copies written in one statement); settling it (firing where
    already passed) runs off the request, and is timed here in-process.
    The same alert goes on the plan of one organization, for the probes.
    """
    from accounts.models import Organization
    from alerts.services.plan_alerts import plan_alert_create
    from alerts.services.plan_settling import plan_alert_settle

    organizations = Organization.objects.filter(plan=big).count()
    clock.step(f"Plan alerts: one added to a plan of {organizations:,} organizations")
    stack.wait_for_quiet(seconds=15)
    started = time.perf_counter()
    plan_alert = plan_alert_create(plan=big, threshold_type="percentage", threshold=Decimal(95))
    added_ms = (time.perf_counter() - started) * 1000
    plan_alert_create(plan=small, threshold_type="percentage", threshold=Decimal(95))
    started = time.perf_counter()
    past = plan_alert_settle(plan_alert.pk)
    settled_ms = (time.perf_counter() - started) * 1000
    report.add(
        Figure(
            S_SCALE,
            f"adding a plan alert to a plan of {organizations:,} organizations",
            added_ms,
            "ms",
            ms(added_ms),
            baseline=f"its settling, off the request: {ms(settled_ms)} ({past:,} already past)",
            target=f"< {PLAN_ALERT_MS:,.0f} ms",
            met=added_ms < PLAN_ALERT_MS,
            detail={"organizations": organizations, "settled_ms": settled_ms, "past": past},
        )
    )
    return organizations


def _measure_page(
    report: Report,
    clock: Clock,
    made: Fixtures,
    base: Baselines,
    *,
    scale: float,
    profile_dir: Path | None,
) -> None:
    """The Limits & Alerts page, in this process, beside the PostgreSQL round
    trip that `_baselines` measured.
    """
    from bench import page

    clock.step("Limits & Alerts page, in-process")
    stack.wait_for_quiet(seconds=15)
    result = page.measure(made.page, requests=max(5, int(30 * scale)))
    report.add(
        Figure(
            S_PAGE,
            f"server time, {PAGE_MEMBERS:,} members (p50)",
            result.p50_ms,
            "ms",
            f"{ms(result.p50_ms)} (p95 {ms(result.p95_ms)})",
            baseline=f"{result.queries} round trips: {ms(result.queries * base.rtt.ms(50))}",
            target=f"< {PAGE_MS:.0f} ms",
            met=result.p50_ms < PAGE_MS,
            detail={"times_ms": [round(t * 1000, 2) for t in result.times], "bytes": result.size},
        )
    )
    report.add(
        Figure(
            S_PAGE,
            "queries per request",
            result.queries,
            "queries",
            str(result.queries),
            target=f"< {PAGE_QUERIES}",
            met=result.queries < PAGE_QUERIES,
            detail={"sql": result.sql},
        )
    )
    if profile_dir:
        from bench.profiling import pyinstrument_text

        def pages() -> None:
            page.measure(made.page, requests=20)

        pyinstrument_text(pages, profile_dir / "limits-page.txt")


def _baselines(
    report: Report, clock: Clock, made: Fixtures, *, scale: float, profile_dir: Path | None
) -> Baselines:
    from django.utils import timezone

    from accounts.models import Membership
    from bench import baselines, holds
    from billing.periods import period_containing

    clock.step("Baselines: Redis PING, PostgreSQL round trip and durable write")
    stack.wait_for_quiet(seconds=15)
    ping = baselines.redis_ping()
    rtt = baselines.postgres_round_trip()
    write = baselines.postgres_durable_write()
    for name, latencies in (
        ("Redis PING", ping),
        ("PostgreSQL SELECT 1", rtt),
        ("PostgreSQL INSERT + COMMIT", write),
    ):
        report.add(
            Figure(
                S_GATE,
                f"baseline: {name}",
                latencies.ms(50),
                "ms",
                pcts(latencies.summary(), ("p50_ms", "p99_ms")),
                detail=latencies.summary(),
            )
        )

    clock.step("In-process consume: alerts.services.consume.usage_consume called directly")
    inproc, queries = baselines.consume_in_process(made.gate[0], count=max(200, int(500 * scale)))
    report.add(
        Figure(
            S_GATE,
            "consume in-process (usage_consume)",
            inproc.ms(50),
            "ms",
            pcts(inproc.summary()),
            baseline=f"{queries} queries x SELECT 1 = {ms(queries * rtt.ms(50))}",
            detail=inproc.summary() | {"queries": queries},
        )
    )
    if profile_dir:
        from bench.profiling import pyinstrument_text

        def consumes() -> None:
            baselines.consume_in_process(made.gate[1], count=300)

        pyinstrument_text(consumes, profile_dir / "consume-in-process.txt")

    clock.step("Holds: a hold and its settle vs one consume, in-process, taking turns")
    held = holds.hold_and_settle_vs_consume(made.gate[2], rounds=max(100, int(300 * scale)))
    report.add(
        Figure(
            S_GATE,
            "hold + settle vs one consume, in-process",
            held.ratio,
            "ratio",
            f"{held.ratio:.2f}x",
            baseline=(
                f"consume {held.consume.ms(50):.2f} ms ({held.consume_queries} queries), "
                f"hold + settle {held.hold_and_settle.ms(50):.2f} ms "
                f"({held.hold_and_settle_queries} queries)"
            ),
            target=f"<= {HOLD_PAIR_RATIO}",
            met=held.ratio <= HOLD_PAIR_RATIO,
            detail={
                "consume": held.consume.summary() | {"queries": held.consume_queries},
                "hold_and_settle": held.hold_and_settle.summary()
                | {"queries": held.hold_and_settle_queries},
            },
        )
    )

    clock.step("Baseline: PostgreSQL COPY of the same rows as the batch ingest")
    period = period_containing(timezone.now(), anchor_day=1)
    tenant = made.ingest[0]
    member_ids = list(
        Membership.objects.filter(organization_id=tenant.organization_id).values_list(
            "pk", flat=True
        )
    )
    batches = [
        baselines.copy_batch(
            organization_id=tenant.organization_id,
            membership_ids=member_ids,
            size=1000,
            period_start=period.start,
        )
        for _ in range(max(10, int(100 * scale)))
    ]
    copied, seconds = baselines.copy_rows(batches, streams=INGEST_CLIENTS)
    return Baselines(
        ping=ping,
        rtt=rtt,
        write=write,
        copy_rows=copied,
        copy_seconds=seconds,
        inproc_p50_ms=inproc.ms(50),
    )


def _measure_empty_view(
    report: Report, clock: Clock, env: dict[str, str], made: Fixtures, scale: float
) -> float:
    """The ceiling under every API figure: the same gunicorn workers and
    middleware (the rate limit counting in Redis included) answering the
    consume requests with a view that does nothing (bench/floor_urls.py).
    """
    from bench import throughput

    seconds = 10 * scale

    def do_nothing(settings_module: str) -> tuple[Any, float]:
        """A do-nothing view under `settings_module`: its outcome, and the
        gunicorn CPU milliseconds per request.
        """
        floor_env = env | {"DJANGO_SETTINGS_MODULE": settings_module}
        with stack.servers(floor_env, with_worker=False) as servers:
            throughput.consume_closed(
                servers.url, made.gate, clients=8, seconds=2, path=throughput.FLOOR_PATH
            )
            _settle(clock, servers, report)
            with stack.CpuMeter(servers) as cpu:
                outcome = throughput.consume_closed(
                    servers.url,
                    made.gate,
                    clients=GATE_CLIENTS,
                    seconds=seconds,
                    path=throughput.FLOOR_PATH,
                )
        return outcome, cpu.web / outcome.ok * 1000 if outcome.ok else math.nan

    clock.step(f"Baseline: a bare Django app's view that does nothing, {GATE_CLIENTS} clients")
    bare, bare_per_request = do_nothing("bench.bare_settings")
    _note(bare, "bare Django app, closed loop")
    clock.step(f"Baseline: a view that does nothing, same stack, {GATE_CLIENTS} clients")
    outcome, per_request = do_nothing("bench.floor_settings")
    _note(outcome, "empty view, closed loop")
    floor_ratio = per_request / bare_per_request
    report.add(
        Figure(
            S_GATE,
            "the API's do-nothing view vs a bare Django app's, gunicorn CPU per request",
            floor_ratio,
            "ratio",
            f"{floor_ratio:.2f}x",
            baseline=(
                f"{ms(bare_per_request)} per request, {bare.throughput:,.0f} requests/s "
                f"-> {ms(per_request)}, {outcome.throughput:,.0f} requests/s"
            ),
            target=f"<= {FLOOR_RATIO}",
            met=floor_ratio <= FLOOR_RATIO,
            detail=bare.summary() | {"gunicorn_cpu_ms_per_request": bare_per_request},
        )
    )
    report.add(
        Figure(
            S_GATE,
            f"baseline: a view that does nothing, same stack, {GATE_CLIENTS} clients",
            outcome.throughput,
            "requests/s",
            f"{outcome.throughput:,.0f} requests/s",
            baseline=(
                f"gunicorn CPU {ms(per_request)} per request; "
                f"load generator used {outcome.client_cpu:.2f} cores"
            ),
            detail=outcome.summary() | {"gunicorn_cpu_ms_per_request": per_request},
        )
    )
    return outcome.throughput


def _profiled(
    servers: stack.Servers, profile_dir: Path | None, name: str, seconds: float
) -> AbstractContextManager[None]:
    if profile_dir is None:
        return nullcontext()
    from bench.profiling import py_spy

    return py_spy(servers.web.pid, profile_dir / f"{name}.txt", seconds=seconds)


def _settle(clock: Clock, servers: stack.Servers, report: Report) -> None:
    """Before a measurement: gunicorn's queue empty, and other work on the
    machine given a moment to pass (the busy share is kept in the results).
    """
    waited = stack.drain(servers.url)
    if waited > 1:
        clock.step(f"   (gunicorn took {waited:.0f} s to work through its queue)")
    busy = stack.wait_for_quiet(seconds=15)
    report.machine.setdefault("cpu_busy_before_steps", []).append(round(busy, 2))


def _measure_http(
    report: Report,
    clock: Clock,
    servers: stack.Servers,
    made: Fixtures,
    base: Baselines,
    scale: float,
    profile_dir: Path | None,
) -> None:
    from bench import throughput

    url = servers.url
    throughput.warm_up(url, made.ingest, made.gate)
    _settle(clock, servers, report)

    seconds = 20 * scale
    clock.step(f"Batch ingest: 1,000-event batches, {INGEST_CLIENTS} clients, {seconds:.0f} s")
    with _profiled(servers, profile_dir, "batch-ingest", seconds), stack.CpuMeter(servers) as cpu:
        batch, accepted = throughput.batch_ingest(
            url, made.ingest, clients=INGEST_CLIENTS, seconds=seconds, max_batches=600
        )
    _note(batch, "batch ingest")
    _cpu_figure(report, S_INGEST, "1,000-event batch", cpu, batch.ok, per_unit=1000, unit="events")
    rate = accepted / batch.wall
    report.add(
        Figure(
            S_INGEST,
            f"events/s fully processed ({INGEST_CLIENTS} clients)",
            rate,
            "events/s",
            f"{rate:,.0f} events/s",
            baseline=f"COPY {base.copy_rate:,.0f} rows/s; app = {rate / base.copy_rate:.1%} of it",
            target=f">= {BATCH_EVENTS_PER_S:,} events/s",
            met=rate >= BATCH_EVENTS_PER_S,
            detail=batch.summary()
            | {"events": accepted, "copy_rows": base.copy_rows, "copy_s": base.copy_seconds},
        )
    )
    copy_batch_ms = 1000 * 1000 * INGEST_CLIENTS / base.copy_rate
    report.add(
        Figure(
            S_INGEST,
            "latency of one 1,000-event batch",
            batch.ms(50),
            "ms",
            pcts(batch.summary(), ("p50_ms", "p99_ms")),
            baseline=f"COPY of 1,000 rows: {ms(copy_batch_ms)}",
        )
    )
    _settle(clock, servers, report)

    capacity = 0.0  # consumes per second that 50 clients get
    for what, closed, opened, path in (
        ("single ingest", throughput.single_ingest_closed, throughput.single_ingest_open, "usage"),
        ("consume", throughput.consume_closed, throughput.consume_open, "consume"),
    ):
        seconds = 10 * scale
        clock.step(f"{what.capitalize()}: {GATE_CLIENTS} clients for {seconds:.0f} s")
        with _profiled(servers, profile_dir, path, seconds), stack.CpuMeter(servers) as cpu:
            outcome = closed(url, made.gate, clients=GATE_CLIENTS, seconds=seconds)
        _note(outcome, f"{what}, closed loop")
        _cpu_figure(report, S_GATE, what, cpu, outcome.ok, per_unit=1, unit="requests")
        is_consume = what == "consume"
        if is_consume:
            capacity = outcome.throughput
        report.add(
            Figure(
                S_GATE,
                f"{what}, {GATE_CLIENTS} clients",
                outcome.throughput,
                "requests/s",
                f"{outcome.throughput:,.0f} requests/s",
                baseline=(
                    f"a view doing nothing: {base.empty_view_rate:,.0f}/s; "
                    f"load generator used {outcome.client_cpu:.2f} cores"
                ),
                target=f">= {CONSUME_PER_S:,} requests/s" if is_consume else "",
                met=outcome.throughput >= CONSUME_PER_S if is_consume else None,
                detail=outcome.summary(),
            )
        )
        _settle(clock, servers, report)

        clock.step(f"{what.capitalize()}: {OFFERED_RATE} requests/s offered for {seconds:.0f} s")
        outcome = opened(url, made.gate, rate=OFFERED_RATE, seconds=seconds)
        _note(outcome, f"{what}, open loop")
        p99 = outcome.ms(99)
        shown = pcts(outcome.summary())
        if outcome.ok < outcome.offered:
            shown += f" ({outcome.ok:,} of {outcome.offered:,} answered in time)"
        report.add(
            Figure(
                S_GATE,
                f"{what} at {OFFERED_RATE} requests/s offered",
                p99,
                "ms",
                shown,
                baseline=(
                    f"INSERT + COMMIT p50 {ms(base.write.ms(50))}"
                    if is_consume
                    else f"SELECT 1 p50 {ms(base.rtt.ms(50))}"
                ),
                target=f"p99 < {CONSUME_P99_MS:.0f} ms" if is_consume else "",
                met=p99 < CONSUME_P99_MS if is_consume else None,
                detail=outcome.summary(),
            )
        )
        _settle(clock, servers, report)

    # 500/s may be past what the server can do; latency at a rate it can
    # sustain says what a caller waits for when it is not overloaded.
    rate = max(5, round(capacity / 2))
    clock.step(f"Consume: {rate} requests/s offered (half the {GATE_CLIENTS}-client rate)")
    outcome = throughput.consume_open(url, made.gate, rate=rate, seconds=10 * scale)
    _note(outcome, "consume, open loop at half capacity")
    report.add(
        Figure(
            S_GATE,
            f"consume at {rate} requests/s offered (half capacity)",
            outcome.ms(99),
            "ms",
            pcts(outcome.summary()),
            baseline=f"in-process p50 {ms(base.inproc_p50_ms)}",
            detail=outcome.summary(),
        )
    )
    _settle(clock, servers, report)
    _measure_hot_organization(report, clock, servers, made, scale)


def _measure_hot_organization(
    report: Report, clock: Clock, servers: stack.Servers, made: Fixtures, scale: float
) -> None:
    """Issue 19: GATE_CLIENTS members of one organization consuming at once
    (its total row is the lock they share) against as many members of as
    many organizations, one run after the other.
    """
    from bench import throughput

    seconds = 10 * scale
    clock.step(f"Consume: {GATE_CLIENTS} members of one organization, then of {GATE_CLIENTS}")
    hot = throughput.consume_closed(
        servers.url, made.gate[:1], clients=GATE_CLIENTS, seconds=seconds
    )
    _note(hot, "consume, one hot organization")
    _settle(clock, servers, report)
    spread = throughput.consume_closed(
        servers.url, made.spread, clients=GATE_CLIENTS, seconds=seconds
    )
    _note(spread, "consume, one member in each organization")
    _settle(clock, servers, report)
    share = hot.throughput / spread.throughput if spread.throughput else math.nan
    report.add(
        Figure(
            S_GATE,
            f"consume, {GATE_CLIENTS} members of one organization vs of {GATE_CLIENTS}",
            share,
            "ratio",
            f"{share:.0%}",
            baseline=(
                f"{hot.throughput:,.0f} vs {spread.throughput:,.0f} requests/s; "
                f"p99 {ms(hot.ms(99))} vs {ms(spread.ms(99))}"
            ),
            target=f">= {HOT_ORGANIZATION_SHARE:.0%}",
            met=share >= HOT_ORGANIZATION_SHARE,
            detail={"hot": hot.summary(), "spread": spread.summary()},
        )
    )


def _cpu_figure(
    report: Report,
    section: str,
    what: str,
    cpu: stack.CpuUse,
    requests: int,
    *,
    per_unit: int,
    unit: str,
) -> None:
    """Server CPU per request: what bounds throughput whatever else runs."""
    if not requests:
        return
    web_ms = cpu.web / requests * 1000
    database_ms = cpu.database / requests * 1000
    cores = os.cpu_count() or 1
    ceiling = cores * per_unit / ((cpu.web + cpu.database) / requests)
    report.add(
        Figure(
            section,
            f"server CPU per {what}",
            web_ms + database_ms,
            "ms",
            f"{ms(web_ms + database_ms)} (gunicorn {ms(web_ms)} + PostgreSQL {ms(database_ms)})",
            baseline=f"{cores} cores allow at most {ceiling:,.0f} {unit}/s",
            detail={"web_ms": web_ms, "database_ms": database_ms, "ceiling_per_s": ceiling},
        )
    )


def _measure_alerts(
    report: Report,
    clock: Clock,
    servers: stack.Servers,
    provider: Any,
    made: Fixtures,
    scale: float,
) -> None:
    from bench import alert_latency

    clock.step(f"Alert latency, idle: {len(made.fire_idle)} firings")
    idle, calls = alert_latency.measure(servers.url, provider, made.fire_idle)
    _alert_figure(report, "idle", idle, calls, len(made.fire_idle))

    clock.step(f"Alert latency under ingest load: {len(made.fire_loaded)} firings")
    background = alert_latency.ingest_load(servers.url, made.ingest, seconds=60 * scale)
    time.sleep(2)  # the load is running before the first firing
    try:
        loaded, calls = alert_latency.measure(servers.url, provider, made.fire_loaded)
    finally:
        background.terminate()
        background.join(timeout=10)
    _alert_figure(report, "under ingest load", loaded, calls, len(made.fire_loaded))


def _note(outcome: Any, what: str) -> None:
    failed = {status: n for status, n in outcome.statuses.items() if not 200 <= status < 300}
    if failed or outcome.errors or outcome.unanswered:
        stack.log(
            f"   note: {what}: non-2xx {failed}, errors {dict(outcome.errors)}, "
            f"unanswered {outcome.unanswered} (all counted as lost)"
        )


def _alert_figure(
    report: Report, label: str, latencies: list[float], calls: list[float], expected: int
) -> None:
    from bench.alert_latency import summary
    from bench.loadgen import percentile

    result = summary(latencies)
    p99 = result["p99_ms"]
    report.add(
        Figure(
            S_ALERT,
            f"{label}, {result['firings']} firings",
            p99,
            "ms",
            f"p50 {ms(result['p50_ms'])} / p99 {ms(p99)}",
            baseline=f"the ingest call alone: p50 {ms(percentile(calls, 50))}",
            target=f"p99 < {ALERT_P99_MS / 1000:.0f} s",
            met=p99 < ALERT_P99_MS and len(latencies) == expected,
            detail=result | {"latencies_ms": [round(x, 1) for x in latencies], "calls_ms": calls},
        )
    )


def _print_profiles(profile_dir: Path) -> None:
    from bench.profiling import summarize

    for name in ("batch-ingest", "usage", "consume"):
        text = summarize(profile_dir / f"{name}.txt")
        (profile_dir / f"{name}-summary.txt").write_text(text)
        stack.log(f"\nProfile of {name} (gunicorn workers, py-spy):\n{text}")
    stack.log(f"\nProfiles and pyinstrument reports: {profile_dir}")
