"""pipeline/phases.py with_phase_retries: restarts after lost workers are bounded by ray.max_task_retries, except
one per node that died during the attempt (Ray's health checks see a dead node seconds late, so the attempts started
in between fail on it too), and an error that is not a lost worker is raised at once."""

from __future__ import annotations

import pytest
import ray.exceptions as rex

from pipeline.phases import Phase, PhaseSettings, PhaseStats, with_phase_retries

SETTINGS = PhaseSettings(commit_rows=8, commit_seconds=60.0, max_stage_error_rate=0.5, min_items_for_abort=10,
                         max_restarts=1)


class Cluster:
    """Live node ids as a run sees them, and a phase that fails `failures` times with a lost actor, taking a node
    down with it on the attempts listed in `kills`."""

    def __init__(self, failures: int, kills: set[int]) -> None:
        self.nodes = {f"node{k}" for k in range(4)}
        self.failures, self.kills, self.attempts = failures, kills, 0
        self.restarts_seen: list[int] = []  # phase.restarts as each attempt saw it

    def alive(self) -> set[str]:
        return set(self.nodes)

    def run(self, phase: Phase) -> PhaseStats:
        self.attempts += 1
        self.restarts_seen.append(phase.restarts)
        if self.attempts in self.kills:
            self.nodes.pop()
        if self.attempts <= self.failures:
            raise rex.ActorDiedError()
        return PhaseStats(todo=3, skipped_done=0, seconds=0.1)


def test_restarts_without_a_dead_node_stop_at_the_limit():
    cluster = Cluster(failures=2, kills=set())
    with pytest.raises(rex.ActorDiedError):
        with_phase_retries(SETTINGS, "round 0", cluster.run, cluster.alive)
    assert cluster.attempts == 2  # the first attempt and one restart


def test_a_node_that_died_during_an_attempt_excuses_its_restart():
    # attempts 1 and 2 lose a node each, attempt 3 loses a worker only: one counted restart, within the limit
    cluster = Cluster(failures=3, kills={1, 2})
    assert with_phase_retries(SETTINGS, "round 0", cluster.run, cluster.alive).todo == 3
    assert cluster.attempts == 4
    # each attempt knows it is a restart, excused or not (a restarted round waits for its plan before its actors)
    assert cluster.restarts_seen == [0, 1, 2, 3]


def test_each_dead_node_excuses_one_restart_only():
    # one node lost on attempt 1, then lost workers with no node death: the limit applies to those
    cluster = Cluster(failures=4, kills={1})
    with pytest.raises(rex.ActorDiedError):
        with_phase_retries(SETTINGS, "round 0", cluster.run, cluster.alive)
    assert cluster.attempts == 3


def test_an_error_that_is_not_a_lost_worker_is_raised_at_once():
    attempts = []

    def broken(phase: Phase) -> PhaseStats:
        attempts.append(1)
        raise ValueError("a bug")
    with pytest.raises(ValueError):
        with_phase_retries(SETTINGS, "round 0", broken, lambda: {"node0"})
    assert len(attempts) == 1
