"""Keep each study's Proposer between requests, so a request loads only new observations.

The API process holds one ``ProposerCache`` (created with the app, not at import).
A request does::

    proposer = cache.get_or_create(study.id, spec_hash, lambda: Proposer(space, spec.sampler, seed))
    proposer.observe(repo.rung_results_after(study.id, proposer.last_seq))
    params = proposer.propose(trial_number)

Losing an entry (eviction, restart, another API process) only costs a full
reload: proposals depend on the observations, not on the cache's history.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from hpo_service.sampling.proposer import Proposer


class ProposerCache:
    """A thread-safe LRU of Proposers keyed by study id, replaced when the spec changes.

    ``spec_hash`` is any string that changes whenever the search space or the
    sampler settings change (e.g. a hash of the stored spec): a cached Proposer
    built from another spec is dropped rather than fed observations it cannot read.
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[str, Proposer]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, study_id: Hashable, spec_hash: str, factory: Callable[[], Proposer]) -> Proposer:
        """The cached Proposer for ``study_id`` built from ``spec_hash``, else ``factory()``'s.

        ``factory`` runs outside the lock so that a slow build does not hold up other
        studies; when two threads build for the same study at once, the first stored
        wins and both get it. Exceptions from ``factory`` propagate; nothing is stored.
        """
        found = self._lookup(study_id, spec_hash)
        if found is not None:
            return found
        built = factory()
        with self._lock:
            entry = self._entries.get(study_id)
            if entry is not None and entry[0] == spec_hash:
                self._entries.move_to_end(study_id)
                return entry[1]
            self._entries[study_id] = (spec_hash, built)
            self._entries.move_to_end(study_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
            return built

    def invalidate(self, study_id: Hashable) -> None:
        """Forget a study's Proposer (e.g. the study was deleted)."""
        with self._lock:
            self._entries.pop(study_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, study_id: Hashable) -> bool:
        with self._lock:
            return study_id in self._entries

    def _lookup(self, study_id: Hashable, spec_hash: str) -> Proposer | None:
        with self._lock:
            entry = self._entries.get(study_id)
            if entry is None:
                return None
            if entry[0] != spec_hash:
                # Stale spec: drop now so that memory is not held until eviction.
                del self._entries[study_id]
                return None
            self._entries.move_to_end(study_id)
            return entry[1]
