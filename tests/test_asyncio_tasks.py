"""`riskmon_asyncio_tasks`: the running daemon's task count on /metrics, which
`python -m bench.soak` watches for growth over hours."""

from __future__ import annotations

from test_daemon import RiskmonProcess, riskmon  # noqa: F401  (the fixture)

TASKS = ("riskmon_asyncio_tasks", ())


async def test_metrics_count_the_daemons_asyncio_tasks(riskmon: RiskmonProcess) -> None:  # noqa: F811
    riskmon.start()
    await riskmon.ready()
    metrics = await riskmon.metrics()
    # at least the publisher, the tick, the rule watch, the reload and the two pollers,
    # and the task serving this very scrape
    assert metrics[TASKS] >= 7
    assert metrics[TASKS] < 100
