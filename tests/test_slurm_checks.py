"""What --launcher slurm checks before submitting, and the counts it shows while waiting (no Slurm needed)."""

import pytest

from clbench.config import SlurmConfig
from clbench.errors import ClbenchError
from clbench.slurm import NodeGroup, check_resources, parse_sinfo, wait_for_jobs

SINFO = """debug*|2|23081|(null)
gpu|64+|515000|gpu:a100:4(S:0-1)
gpu|32|256000|gpu:2
"""


def test_sinfo_lines_become_node_groups():
    assert parse_sinfo(SINFO) == [
        NodeGroup("debug", True, 2, 23081, 0),
        NodeGroup("gpu", False, 64, 515000, 4),
        NodeGroup("gpu", False, 32, 256000, 2),
    ]


def test_the_defaults_on_a_two_cpu_node_without_gpus_are_refused_in_one_line():
    # The defaults (8 CPUs and a GPU a task) left the array pending forever on such a node.
    with pytest.raises(ClbenchError) as refused:
        check_resources(SlurmConfig(), parse_sinfo(SINFO))
    message = str(refused.value)
    assert message.startswith("slurm.cpus_per_task=8, slurm.gpus_per_task=1: more than any node of partition debug")
    assert "--set slurm.cpus_per_task=2 --set slurm.gpus_per_task=0" in message
    assert "\n" not in message


def test_a_request_the_largest_node_of_the_partition_fits_passes():
    check_resources(SlurmConfig(partition="gpu", cpus_per_task=64, gpus_per_task=4, mem_gb=500), parse_sinfo(SINFO))
    check_resources(SlurmConfig(cpus_per_task=2, gpus_per_task=0, mem_gb=20), parse_sinfo(SINFO))
    with pytest.raises(ClbenchError, match=r"slurm.mem_gb=600: .* at most mem_gb 502"):
        check_resources(SlurmConfig(partition="gpu", cpus_per_task=8, mem_gb=600), parse_sinfo(SINFO))


def test_an_unknown_partition_names_the_cluster_s():
    with pytest.raises(
        ClbenchError, match=r"slurm.partition=gpus: no such partition; valid choices: \['debug', 'gpu'\]"
    ):
        check_resources(SlurmConfig(partition="gpus"), parse_sinfo(SINFO))


class _Job:
    def __init__(self, states, job_id="7_0"):
        self._states = list(states)
        self.job_id = job_id

    def _next(self):
        return self._states.pop(0) if len(self._states) > 1 else self._states[0]

    @property
    def state(self):
        return self._current

    def done(self):
        self._current = self._next()
        return self._current == "COMPLETED"


def test_the_wait_says_how_many_runs_are_pending_running_and_done_when_it_changes():
    jobs = [_Job(["PENDING", "PENDING", "RUNNING", "COMPLETED"]), _Job(["PENDING", "RUNNING", "RUNNING", "COMPLETED"])]
    lines: list[str] = []
    wait_for_jobs(jobs, lines.append, sleep=lambda seconds: None)
    assert lines == [
        "runs: 2 pending, 0 running, 0 done",
        "runs: 1 pending, 1 running, 0 done",
        "runs: 0 pending, 2 running, 0 done",
        "runs: 0 pending, 0 running, 2 done",
    ]


def test_a_task_cancelled_before_it_started_is_not_waited_on_forever():
    # Slurm keeps no record of an array task cancelled while still part of the pending array:
    # sacct never knows it (submitit's state stays UNKNOWN) and submitit would wait forever.
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    jobs = [_Job(["RUNNING", "COMPLETED"], "7_0"), _Job(["UNKNOWN"], "7_1")]
    lines: list[str] = []
    vanished = wait_for_jobs(
        jobs, lines.append, poll_seconds=10, in_queue=lambda job_id: False, sleep=sleep, clock=lambda: now[0]
    )
    assert vanished == {"7_1"}
    assert lines[-1] == "runs: 0 pending, 0 running, 2 done"
    assert now[0] > 60  # a grace period first: a task just submitted may not be in sacct yet
    still_queued = [_Job(["UNKNOWN", "UNKNOWN", "UNKNOWN", "COMPLETED"], "7_1")]
    assert (
        wait_for_jobs(still_queued, lines.append, in_queue=lambda job_id: True, sleep=sleep, clock=lambda: now[0])
        == set()
    )
