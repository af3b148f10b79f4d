"""``WorkerResources`` against real short-lived processes that burn CPU: the per-slot CPU counter
adds up every process a slot has had and never goes down; RSS is the live process's."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from axon.observability.resources import ResourceSample, WorkerResources
from axon.status import AgentStatus, WorkerStatus

TICKS = 0.03
"""The OS accounts CPU in clock ticks (10 ms): a reading can trail the burner's own clock."""

# Burns ``argv[1]`` seconds of CPU, says so, then idles until stdin closes.
BURN = """
import sys, time
start = time.process_time()
while time.process_time() - start < float(sys.argv[1]):
    pass
print("burnt", flush=True)
sys.stdin.read()
"""


class Burner:
    def __init__(self, seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", BURN, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "burnt\n"

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def burners() -> Iterator[list[Burner]]:
    started: list[Burner] = []
    yield started
    for burner in started:
        burner.close()


def status(agent: str, *workers: tuple[int, str, int | None, int]) -> AgentStatus:
    """``workers``: (index, state, pid, generation) of each slot."""
    return AgentStatus(
        agent,
        "running",
        restarts=0,
        workers=[
            WorkerStatus(index, pid, state, generation, restarts=0, in_flight=0, last_exit=None)
            for index, state, pid, generation in workers
        ],
    )


def only(samples: list[ResourceSample]) -> ResourceSample:
    assert len(samples) == 1
    return samples[0]


def test_a_live_process_reports_its_cpu_and_rss(burners: list[Burner]) -> None:
    burner = Burner(0.3)
    burners.append(burner)
    resources = WorkerResources()
    sample = only(resources.sample([status("a", (0, "running", burner.pid, 1))]))
    assert (sample.agent, sample.worker, sample.pid) == ("a", 0, burner.pid)
    assert sample.cpu_seconds_total >= 0.3 - TICKS
    assert sample.cpu_seconds_total == pytest.approx(burner.cpu(), abs=0.02)
    assert sample.rss_bytes is not None
    assert sample.rss_bytes == pytest.approx(psutil.Process(burner.pid).memory_info().rss, rel=0.2)


def test_the_slot_counter_adds_up_every_process_it_has_had(burners: list[Burner]) -> None:
    resources = WorkerResources()
    first = Burner(0.3)
    burners.append(first)
    before = only(resources.sample([status("a", (0, "running", first.pid, 1))]))
    assert before.cpu_seconds_total >= 0.3 - TICKS

    first.kill()
    # The supervisor has not noticed yet: the slot still names the dead pid.
    dead = only(resources.sample([status("a", (0, "running", first.pid, 1))]))
    assert dead.cpu_seconds_total == before.cpu_seconds_total
    assert dead.rss_bytes is None
    # Between processes: no pid, no RSS, the counter kept.
    gap = only(resources.sample([status("a", (0, "backoff", first.pid, 1))]))
    assert (gap.pid, gap.rss_bytes) == (None, None)
    assert gap.cpu_seconds_total == before.cpu_seconds_total

    second = Burner(0.2)
    burners.append(second)
    own = second.cpu()
    after = only(resources.sample([status("a", (0, "running", second.pid, 2))]))
    assert after.pid == second.pid
    # At least the first's last reading plus what the second had burnt before this sample.
    assert after.cpu_seconds_total >= before.cpu_seconds_total + own - 1e-9  # float sums
    assert after.cpu_seconds_total == pytest.approx(before.cpu_seconds_total + own, abs=0.02)


def test_samples_are_cumulative_whoever_asks_and_however_often(burners: list[Burner]) -> None:
    burner = Burner(0.2)
    burners.append(burner)
    resources = WorkerResources()
    agents = [status("a", (0, "running", burner.pid, 1))]
    readings = [only(resources.sample(agents)).cpu_seconds_total for _ in range(5)]
    # Never a "since the last call" delta: every caller sees the whole total.
    assert min(readings) >= 0.2 - TICKS
    assert readings == sorted(readings)
    assert readings[-1] - readings[0] < 0.02


def test_slots_are_kept_apart(burners: list[Burner]) -> None:
    busy, idle = Burner(0.3), Burner(0.0)
    burners += [busy, idle]
    resources = WorkerResources()
    samples = resources.sample(
        [
            status("a", (0, "running", busy.pid, 1), (1, "running", idle.pid, 1)),
            status("b", (0, "starting", None, 1)),
        ]
    )
    by_slot = {(s.agent, s.worker): s for s in samples}
    assert list(by_slot) == [("a", 0), ("a", 1), ("b", 0)]
    assert by_slot["a", 0].cpu_seconds_total >= 0.3 - TICKS
    assert by_slot["a", 1].cpu_seconds_total < 0.3
    assert by_slot["b", 0] == ResourceSample("b", 0, None, 0.0, None)


def test_a_pid_that_was_never_seen_alive_counts_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    resources = WorkerResources()
    sample = only(resources.sample([status("a", (0, "running", gone.pid, 1))]))
    assert (sample.cpu_seconds_total, sample.rss_bytes) == (0.0, None)
