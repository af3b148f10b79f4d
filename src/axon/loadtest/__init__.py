"""Load generation against Axon: the engine of ``axon bench`` (and of ``axon chaos``).

```python
from axon.loadtest import HttpTarget, Plan, run_load, summarize

async with HttpTarget("http://127.0.0.1:8000") as target:
    await target.check(["python_agent_1"])
    report = await run_load(target, Plan(agents=["python_agent_1"], concurrency=10, duration=5))
print(summarize(report).latency_s.p50, len(report.records))
```

``run_load(target, plan, on_result=None)`` applies a :class:`Plan` (closed or open loop,
bounded by requests and/or duration) to a :class:`Target` (:class:`HttpTarget`,
:class:`InProcessTarget`, or your own) and returns a :class:`LoadReport` whose
:class:`RequestRecord` s say, for every request, where it went, its exact prompt, when it
started and ended, its deadline and how it ended. See docs/bench.md.
"""

from axon.loadtest.records import OK, LoadReport, RequestRecord
from axon.loadtest.stats import Percentiles, Summary, percentiles, summarize
from axon.loadtest.targets import Exchange, HttpTarget, InProcessTarget, Target
from axon.loadtest.workload import (
    DEFAULT_PROMPT,
    DEFAULT_TAG,
    DEFAULT_TIMEOUT,
    GRACE,
    MAX_IN_FLIGHT,
    Plan,
    PlanError,
    run_load,
)

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TAG",
    "DEFAULT_TIMEOUT",
    "GRACE",
    "MAX_IN_FLIGHT",
    "OK",
    "Exchange",
    "HttpTarget",
    "InProcessTarget",
    "LoadReport",
    "Percentiles",
    "Plan",
    "PlanError",
    "RequestRecord",
    "Summary",
    "Target",
    "percentiles",
    "run_load",
    "summarize",
]
