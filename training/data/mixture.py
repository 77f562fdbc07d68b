"""Mixing datasets by sampling rate, step-based, deterministic and resumable.

Each draw is a pure function of ``(seed, step, rank)``: the dataset is chosen with probability proportional to
its rate, then a record uniformly (with replacement) from it. There is no epoch and no hidden state, so the
sampler's whole state is ``{"seed", "step"}``; a run resumed at step ``s`` draws exactly what the original run
drew from step ``s`` on, and ranks draw different streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np

from vglamm.errors import ConfigError, DataFormatError
from vglamm.sample import GroundedSample


@dataclass
class MixtureSampler:
    """Yields ``(dataset_index, record_index)`` per step; rates need not sum to 1."""

    sizes: Sequence[int]
    rates: Sequence[float]
    seed: int = 0
    step: int = 0
    rank: int = 0

    def __post_init__(self):
        if len(self.sizes) != len(self.rates) or not self.sizes:
            raise ConfigError("MixtureSampler needs one rate per dataset and at least one dataset")
        r = np.asarray(self.rates, dtype=np.float64)
        if (r < 0).any() or not np.isfinite(r).all() or r.sum() <= 0:
            raise ConfigError(f"sampling rates must be finite, >= 0 and not all 0, got {list(self.rates)}")
        for n, (size, rate) in enumerate(zip(self.sizes, r)):
            if rate > 0 and size <= 0:
                raise ConfigError(f"dataset {n} is empty but has sampling rate {rate}")
        self._cdf = np.cumsum(r / r.sum())
        self._cdf[-1] = 1.0  # guard against rounding leaving a gap above the last dataset

    @property
    def probabilities(self) -> np.ndarray:
        return np.diff(np.concatenate([[0.0], self._cdf]))

    def draw(self, step: int, attempt: int = 0) -> tuple[int, int]:
        """The ``(dataset, record)`` of a given step (``attempt`` > 0 gives the replacements used on load errors)."""
        rng = np.random.default_rng([self.seed, int(step), self.rank, attempt])
        d = int(np.searchsorted(self._cdf, rng.random(), side="right"))
        d = min(d, len(self.sizes) - 1)
        return d, int(rng.integers(self.sizes[d]))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while True:  # count the step before yielding: the state then equals the number of draws handed out
            step, self.step = self.step, self.step + 1
            yield self.draw(step)

    def state_dict(self) -> dict:
        return {"seed": int(self.seed), "step": int(self.step)}

    def load_state_dict(self, state: Mapping) -> None:
        self.seed, self.step = int(state["seed"]), int(state["step"])


class MixtureDataset:
    """Datasets mixed by rate. ``ds[step]`` is the sample of a global step; iterating yields steps from
    ``self.sampler.step`` on (epoch-free). ``skip_errors`` replaces a sample whose record is broken
    (DataFormatError) by a deterministic redraw instead of stopping the run; skipped sources are counted in
    ``self.skipped``."""

    def __init__(self, datasets: Sequence | Mapping[str, object], rates: Sequence[float] | None = None, *,
                 seed: int = 0, rank: int = 0, skip_errors: bool = False, max_retries: int = 10):
        if isinstance(datasets, Mapping):  # {name: dataset} or {name: (dataset, rate)}
            items = list(datasets.values())
        else:
            items = list(datasets)
        if rates is None:
            if all(isinstance(x, tuple) for x in items):
                items, rates = [x[0] for x in items], [x[1] for x in items]
            else:
                rates = [1.0] * len(items)
        self.datasets = items
        self.sampler = MixtureSampler([len(d) for d in items], list(rates), seed=seed, rank=rank)
        self.skip_errors, self.max_retries = skip_errors, max_retries
        self.skipped: dict[str, int] = {}

    def __len__(self) -> int:
        """Total records over the datasets (a mixture has no natural length; this is for logs)."""
        return sum(len(d) for d in self.datasets)

    def sample(self, step: int) -> GroundedSample:
        for attempt in range(self.max_retries + 1):
            d, i = self.sampler.draw(step, attempt)
            try:
                return self.datasets[d][i]
            except DataFormatError:
                if not self.skip_errors:
                    raise
                key = getattr(self.datasets[d], "name", str(d))
                self.skipped[key] = self.skipped.get(key, 0) + 1
        raise DataFormatError(f"step {step}: {self.max_retries + 1} draws in a row hit broken records; "
                              f"run validation on the data (skipped so far: {self.skipped})")

    __getitem__ = sample

    def __iter__(self) -> Iterator[GroundedSample]:
        while True:
            step = self.sampler.step
            sample = self.sample(step)
            self.sampler.step = step + 1
            yield sample

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        self.sampler.load_state_dict(state)
