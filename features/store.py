"""The open state interface: a :class:`Store` is one kind of per-key feature state.

A feature (:class:`~features.aggregation.Aggregation`) reads one or more stores; a
store is what is kept per key and updated, for every key of a batch at once, by
the events of one source. Stores that compare equal by :meth:`Store.share_key` are
kept once per key and shared (``clicks_1h`` and ``ctr_1h`` read the same click
tiles); :meth:`Store.widen` combines two such declarations (the longer window wins).

A store implements:

- **layout**: ``dtype`` and :meth:`width` -- a fixed number of numeric columns per
  key in a numpy block (fast, compact) -- or ``dtype = None`` for a Python object
  per key (variable-size state such as sessions), with :meth:`encode` /
  :meth:`decode` for the changelog;
- **vectorized update**: :meth:`apply` updates every key of a batch
  (:class:`~features.batch.EntityEvents`) and returns a :class:`Reading` of the
  point-in-time values at the batch's query positions;
- **read**: :meth:`read` gives a :class:`Reading` of stored rows as of given times
  (the record published after a batch, the HTTP read path);
- **merge**: :meth:`merge` combines two keys' states into one holding the events
  of both (what a store of a split stream would need; contract-tested).

Every concrete subclass is listed by :func:`registered`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from features.batch import EntityEvents

_SUBCLASSES: dict[str, type[Store]] = {}


def registered() -> dict[str, type[Store]]:
    """Every concrete store class defined so far (built-in and user-defined).

    >>> import features.stores
    >>> [n for n in registered() if n.startswith("features.")][:2]
    ['features.stores.DecayStore', 'features.stores.DistinctStore']
    """
    return {name: cls for name, cls in sorted(_SUBCLASSES.items())
            if not inspect.isabstract(cls) and not cls.__name__.startswith("_")}

#: The state of a block of keys: a numpy array (rows x width) or a list of objects.
Block = npt.NDArray[Any] | list[Any]


class Reading(ABC):  # noqa: B024 (a marker base: each store's reading has its own reads)
    """Values a store gives at a set of read positions (one entry per position)."""


class Store(ABC):
    """One kind of per-key state with a vectorized batch update (see the module doc).

    >>> from features.stores import LastStore
    >>> LastStore("clicks").source, LastStore("clicks").width()
    ('clicks', 1)
    """

    #: numpy dtype of the fixed columns, or None for one Python object per key
    dtype: ClassVar[type[np.generic] | None] = None
    #: a narrower integer dtype a key's columns are stored with when all its values fit
    narrow: ClassVar[type[np.integer[Any]] | None] = None
    source: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # keyed by qualified name: dataclass(slots=True) re-creates the class
        _SUBCLASSES[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def share_key(self) -> object:
        """Stores with equal keys are one state per key (default: the store itself)."""
        return self

    def widen(self, other: Store) -> Store:
        """The one store serving both declarations (default: they must be equal).

        >>> from features.stores import LastStore
        >>> LastStore("clicks").widen(LastStore("clicks"))
        LastStore(source='clicks')
        """
        if other != self:
            raise ValueError(f"{self!r} and {other!r} cannot share a state")
        return self

    def width(self) -> int:
        """Numeric columns per key (0 for object stores)."""
        return 0

    def empty(self) -> Any:
        """The state of a key with no event: a row (numeric) or an object."""
        if self.dtype is None:
            raise NotImplementedError(f"{type(self).__name__} must define empty()")
        return np.zeros(self.width(), dtype=self.dtype)

    def new_block(self, capacity: int) -> Block:
        """Storage for ``capacity`` keys, each in the empty state."""
        if self.dtype is None:
            return [None] * capacity
        return np.tile(np.asarray(self.empty(), dtype=self.dtype), (capacity, 1))

    @abstractmethod
    def apply(self, block: Block, ev: EntityEvents) -> Reading:
        """Apply a batch to the keys' states in ``block``; the reading at ``ev.qpos``."""

    @abstractmethod
    def read(self, block: Block, rows: npt.NDArray[np.int64],
             as_of: npt.NDArray[np.int64]) -> Reading:
        """A reading of stored ``rows`` as of ``as_of`` (each row's own as-of time)."""

    @abstractmethod
    def merge(self, a: Any, a_as_of: int, b: Any, b_as_of: int) -> Any:
        """One key's state holding the events of ``a`` and ``b`` (each with its as-of
        time, NONE when empty), as of the later of the two."""

    def encode(self, state: Any) -> bytes:
        """Changelog bytes of an object store's state (numeric stores: raw columns)."""
        raise NotImplementedError(f"{type(self).__name__} is not an object store")

    def decode(self, raw: bytes) -> Any:
        """The state :meth:`encode` wrote."""
        raise NotImplementedError(f"{type(self).__name__} is not an object store")
