"""Helpers for testing agents under Axon: find, kill and stop workers, wait for recovery,
check histories, capture and await structured log events. Axon's own test suite uses them; so
can yours.

```python
from axon.testing import capture_events, kill_worker, user_prompts, wait_until_serving

with capture_events() as events:                      # an EventLog on the "axon" logger
    pid = kill_worker(axon, "python_agent_1")         # SIGKILL worker 0
    exit_ = await events.wait_for("worker.exit", agent="python_agent_1", pid=pid)
    assert exit_.fields["signal"] == 9
    await wait_until_serving(axon, "python_agent_1", replaced=[pid])
    assert user_prompts(await axon.history("c-42")) == ["first", "second"]
```
"""

from axon.chaos.tcp_relay import TcpRelay
from axon.testing.clock import FakeClock
from axon.testing.events import EventLog, LoggedEvent, capture_events
from axon.testing.helpers import (
    all_worker_pids,
    assert_history,
    cut_connection,
    descendant_pids,
    kill_worker,
    pid_alive,
    user_prompts,
    wait_until,
    wait_until_serving,
    worker_pids,
)
from axon.testing.server import AxonServer

__all__ = [
    "AxonServer",
    "EventLog",
    "FakeClock",
    "LoggedEvent",
    "TcpRelay",
    "all_worker_pids",
    "assert_history",
    "capture_events",
    "cut_connection",
    "descendant_pids",
    "kill_worker",
    "pid_alive",
    "user_prompts",
    "wait_until",
    "wait_until_serving",
    "worker_pids",
]
