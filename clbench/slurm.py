"""What ``--launcher slurm`` asks of the cluster before it submits, and what it shows while it waits.

Slurm accepts a job array no node can run (8 CPUs a task on 2-CPU nodes) and leaves it
pending forever without a word; :func:`check_resources` reads the partition's nodes with
``sinfo`` first and refuses such a request in one line naming the setting and what the
nodes have. :func:`wait_for_jobs` prints how many runs are pending, running and done
whenever that changes, so a wait is never silent.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clbench.config import SlurmConfig
from clbench.errors import ClbenchError

SINFO_FORMAT = "%P|%c|%m|%G"
"""Partition (``*`` marks the default), CPUs of a node, its memory in MB and its generic resources."""


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of one partition alike in CPUs, memory and GPUs (one line of ``sinfo``)."""

    partition: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int


def _number(text: str) -> int:
    """A count as sinfo prints it ("2", "2+" for a mix of nodes, "N/A"), 0 where it has none."""
    digits = re.match(r"\d+", text.strip())
    return int(digits.group()) if digits else 0


def _gpus(gres: str) -> int:
    """GPUs named in a node's generic resources ("gpu:4", "gpu:a100:2(S:0-1)", "(null)")."""
    return sum(int(count) for count in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def parse_sinfo(text: str) -> list[NodeGroup]:
    """The node groups of ``sinfo -h -o SINFO_FORMAT``'s output."""
    groups = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        partition, cpus, memory, gres = fields
        default = partition.endswith("*")
        groups.append(NodeGroup(partition.rstrip("*"), default, _number(cpus), _number(memory), _gpus(gres)))
    return groups


def read_nodes() -> list[NodeGroup] | None:
    """The cluster's node groups, or None where ``sinfo`` does not answer (nothing to check against)."""
    try:
        done = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_sinfo(done.stdout) if done.returncode == 0 else None


def check_resources(slurm: SlurmConfig, nodes: Sequence[NodeGroup]) -> None:
    """Refuse a request that no node of the partition can run.

    Raises:
        ClbenchError: An unknown partition, or more CPUs, GPUs or memory a task than the
            partition's largest node has (one line: the setting, what the nodes have).
    """
    partitions = sorted({group.partition for group in nodes})
    if slurm.partition is not None:
        chosen = [group for group in nodes if group.partition == slurm.partition]
        if not chosen:
            raise ClbenchError(f"slurm.partition={slurm.partition}: no such partition; valid choices: {partitions}")
        name = slurm.partition
    else:
        chosen = [group for group in nodes if group.default]
        name = chosen[0].partition if chosen else "(default)"
    if not chosen:
        return  # no default partition listed: sbatch says what it needs
    most = {
        "cpus_per_task": max(group.cpus for group in chosen),
        "gpus_per_task": max(group.gpus for group in chosen),
    }
    asked = {"cpus_per_task": slurm.cpus_per_task, "gpus_per_task": slurm.gpus_per_task}
    if slurm.mem_gb is not None:
        most["mem_gb"] = max(group.memory_mb for group in chosen) // 1024
        asked["mem_gb"] = slurm.mem_gb
    too_many = [setting for setting, value in asked.items() if value > most[setting]]
    if too_many:
        asks = ", ".join(f"slurm.{setting}={asked[setting]}" for setting in too_many)
        fixes = " ".join(f"--set slurm.{setting}={most[setting]}" for setting in too_many)
        limits = ", ".join(f"{setting} {most[setting]}" for setting in too_many)
        raise ClbenchError(
            f"{asks}: more than any node of partition {name} has (sinfo: at most {limits}), "
            f"so the array would pend forever; valid at most: {fixes}"
        )


PENDING_STATES = frozenset({"PENDING", "REQUEUED", "CONFIGURING", "SUSPENDED", "UNKNOWN", "READY"})
"""submitit states of a task not running yet (``UNKNOWN`` / ``READY``: not yet seen by sacct / a local job)."""

VANISHED_AFTER_SECONDS = 60.0
"""How long a task sacct has never seen may be missing from squeue before it counts as gone (Slurm
keeps no record of an array task cancelled before it was split off the pending array)."""


def in_squeue(job_id: str) -> bool:
    """Whether Slurm's queue still lists the task (pending or running)."""
    try:
        listed = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: keep waiting
    return listed.returncode == 0 and bool(listed.stdout.strip())


class _Watch:
    """Each job's phase (pending, running, done, vanished), remembering since when sacct has not known it."""

    def __init__(self, in_queue: Callable[[str], bool] | None, clock: Callable[[], float]) -> None:
        self.in_queue = in_queue
        self.clock = clock
        self.unknown_since: dict[str, float] = {}
        self.vanished: set[str] = set()

    def phase(self, job: Any) -> str:
        if job.job_id in self.vanished:
            return "done"
        if job.done():
            return "done"
        state = str(job.state).split(" ")[0]
        if state == "UNKNOWN" and self.in_queue is not None and self._gone(job.job_id, self.in_queue):
            self.vanished.add(job.job_id)
            return "done"
        return "pending" if state in PENDING_STATES else "running"

    def _gone(self, job_id: str, in_queue: Callable[[str], bool]) -> bool:
        since = self.unknown_since.setdefault(job_id, self.clock())
        return self.clock() - since > VANISHED_AFTER_SECONDS and not in_queue(job_id)


def wait_for_jobs(
    jobs: Sequence[Any],
    echo: Callable[[str], None],
    poll_seconds: float = 10.0,
    in_queue: Callable[[str], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> set[str]:
    """Wait until every job is done, echoing "N pending, N running, N done" whenever it changes.

    Args:
        jobs: submitit jobs, one a run.
        echo: Where the counts are written.
        poll_seconds: Seconds between two looks.
        in_queue: Asks Slurm's queue about a task (:func:`in_squeue`); None where there is no
            queue to ask (submitit's local executor).
        sleep: Waits between looks (tests pass a no-op).
        clock: Monotonic seconds (tests pass their own).

    Returns:
        The ids of tasks that left the queue without any record (cancelled before they started):
        their result will never come, so the caller must not wait on it.
    """
    watch = _Watch(in_queue, clock)
    last = ""
    while True:
        counts = Counter(watch.phase(job) for job in jobs)
        line = f"runs: {counts['pending']} pending, {counts['running']} running, {counts['done']} done"
        if line != last:
            echo(line)
            last = line
        if counts["done"] == len(jobs):
            return watch.vanished
        sleep(poll_seconds)
