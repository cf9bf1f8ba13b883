"""ProposerCache: one Proposer per study, rebuilt when the spec changes, bounded, thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from hpo_service.domain.space import FloatDistribution, SearchSpace
from hpo_service.domain.spec import SamplerSpec
from hpo_service.sampling import Observation, Proposer, ProposerCache

SPACE: SearchSpace = {"x": FloatDistribution(low=0.0, high=1.0)}


class _Factory:
    """Builds random-kind Proposers and counts the builds."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self) -> Proposer:
        self.builds += 1
        return Proposer(SPACE, SamplerSpec(kind="random"), study_seed=0)


def test_same_study_and_spec_reuse_one_proposer() -> None:
    cache, factory = ProposerCache(), _Factory()
    first = cache.get_or_create(1, "spec-a", factory)
    assert cache.get_or_create(1, "spec-a", factory) is first
    assert factory.builds == 1 and len(cache) == 1 and 1 in cache


def test_a_changed_spec_replaces_the_proposer() -> None:
    cache, factory = ProposerCache(), _Factory()
    old = cache.get_or_create(1, "spec-a", factory)
    new = cache.get_or_create(1, "spec-b", factory)
    assert new is not old and factory.builds == 2 and len(cache) == 1
    assert cache.get_or_create(1, "spec-b", factory) is new


# Each case: the study ids asked for in order (max 2 entries) and which remain cached.
@pytest.mark.parametrize(
    ("requests", "cached"),
    [
        ([1, 2, 3], {2, 3}),  # the oldest goes
        ([1, 2, 1, 3], {1, 3}),  # a hit makes 1 recent, so 2 goes
        ([1, 1, 1], {1}),
        ([1, 2, 3, 1], {3, 1}),  # an evicted study is rebuilt
    ],
)
def test_least_recently_used_study_is_evicted(requests: list[int], cached: set[int]) -> None:
    cache, factory = ProposerCache(max_entries=2), _Factory()
    for study_id in requests:
        cache.get_or_create(study_id, "spec", factory)
    assert {study_id for study_id in (1, 2, 3) if study_id in cache} == cached


def test_invalidate_and_clear_forget_proposers() -> None:
    cache, factory = ProposerCache(), _Factory()
    for study_id in (1, 2, 3):
        cache.get_or_create(study_id, "spec", factory)
    cache.invalidate(2)
    cache.invalidate(99)  # unknown ids are fine
    assert (1 in cache, 2 in cache, len(cache)) == (True, False, 2)
    cache.clear()
    assert len(cache) == 0


def test_a_failing_factory_stores_nothing() -> None:
    cache = ProposerCache()

    def broken() -> Proposer:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_create(1, "spec", broken)
    assert 1 not in cache


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProposerCache(max_entries=0)


def _in_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrent_requests_for_one_study_share_one_proposer() -> None:
    cache, factory, barrier = ProposerCache(), _Factory(), threading.Barrier(8)
    got: list[Proposer] = []

    def request(_: int) -> None:
        barrier.wait()  # start together so that several miss the cache at once
        got.append(cache.get_or_create(7, "spec", factory))

    _in_threads(8, request)
    assert len(got) == 8 and all(proposer is got[0] for proposer in got)


def test_concurrent_requests_for_many_studies_respect_the_bound() -> None:
    cache, factory = ProposerCache(max_entries=5), _Factory()

    def request(index: int) -> None:
        for round_ in range(50):
            cache.get_or_create((index * 50 + round_) % 17, "spec", factory)

    _in_threads(8, request)
    assert len(cache) == 5


def test_requests_load_only_new_observations() -> None:
    """The request pattern of the API: cached proposer, rows above ``last_seq``, propose."""
    cache, factory = ProposerCache(), _Factory()
    table: list[Observation] = []  # stands in for the rung-result table
    loaded = 0
    for request in range(30):
        table.append(Observation({"x": request / 30}, 0, 1.0, float(request), seq=request + 1))
        proposer = cache.get_or_create(1, "spec", factory)
        rows = [row for row in table if row.seq > proposer.last_seq]
        loaded += len(rows)
        proposer.observe(rows)
        assert 0.0 <= proposer.propose(request)["x"] <= 1.0
    assert (loaded, factory.builds, proposer.version) == (30, 1, 30)
