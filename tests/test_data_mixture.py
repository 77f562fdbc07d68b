"""Mixture sampling: rates honoured, deterministic by seed, resumable from the step count; the loader registry."""

import numpy as np
import pytest

from training.data import LOADERS, MixtureDataset, MixtureSampler, build_dataset
from training.data.base import GroundedDataset
from vglamm.errors import ConfigError, DataFormatError
from vglamm.sample import GroundedSample


class _Toy(GroundedDataset):
    def __init__(self, name, n, broken=()):
        super().__init__(name=name)
        self._records = list(range(n))
        self.broken = set(broken)

    def _load(self, i, rng):
        if i in self.broken:
            raise DataFormatError(f"{self.name}: record {i} is broken")
        return GroundedSample(np.zeros((1, 2, 2, 3), np.uint8), [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": "a"}],
                              np.zeros((0, 1, 2, 2), bool), source=f"{self.name}:{i}")


def test_rates_are_honoured():
    s = MixtureSampler([10, 20, 5], [9, 3, 0], seed=3)
    draws = [s.draw(k) for k in range(6000)]
    counts = np.bincount([d for d, _ in draws], minlength=3) / len(draws)
    np.testing.assert_allclose(counts, [0.75, 0.25, 0.0], atol=0.03)
    assert all(0 <= i < [10, 20, 5][d] for d, i in draws)
    np.testing.assert_allclose(s.probabilities, [0.75, 0.25, 0.0])


def test_deterministic_by_seed_and_resumable():
    a = MixtureSampler([10, 20], [1, 1], seed=7)
    b = MixtureSampler([10, 20], [1, 1], seed=7)
    c = MixtureSampler([10, 20], [1, 1], seed=8)
    it_a, it_b = iter(a), iter(b)
    first = [next(it_a) for _ in range(50)]
    assert first == [next(it_b) for _ in range(50)]
    assert first != [c.draw(k) for k in range(50)]
    state = a.state_dict()
    assert state == {"seed": 7, "step": 50}
    rest = [next(it_a) for _ in range(30)]
    resumed = MixtureSampler([10, 20], [1, 1])
    resumed.load_state_dict(state)
    assert [next(iter(resumed)) for _ in range(1)] == rest[:1]
    resumed2 = MixtureSampler([10, 20], [1, 1])
    resumed2.load_state_dict(state)
    r_it = iter(resumed2)
    assert [next(r_it) for _ in range(30)] == rest
    assert MixtureSampler([10, 20], [1, 1], seed=7, rank=1).draw(0) != a.draw(0) or \
        MixtureSampler([10, 20], [1, 1], seed=7, rank=1).draw(1) != a.draw(1)


def test_mixture_dataset_streams_samples_and_skips_broken_records():
    mix = MixtureDataset({"a": (_Toy("a", 5), 1.0), "b": (_Toy("b", 5, broken={0, 1, 2}), 1.0)}, seed=1)
    with pytest.raises(DataFormatError):
        [mix[k] for k in range(100)]
    mix = MixtureDataset([_Toy("a", 5), _Toy("b", 5, broken={0, 1, 2})], [1, 1], seed=1, skip_errors=True)
    it = iter(mix)
    samples = [next(it) for _ in range(100)]
    assert {s.source.split(":")[0] for s in samples} == {"a", "b"}
    assert not any(s.source in ("b:0", "b:1", "b:2") for s in samples)
    assert mix.skipped["b"] > 0 and mix.state_dict()["step"] == 100
    assert [mix[k].source for k in range(100)] == [s.source for s in samples]


def test_bad_rates_and_unknown_loader():
    with pytest.raises(ConfigError):
        MixtureSampler([3, 3], [0, 0])
    with pytest.raises(ConfigError):
        MixtureSampler([0, 3], [1, 1])
    with pytest.raises(ConfigError, match="unknown data loader"):
        build_dataset("nope", "/tmp")
    assert {"video_gcg", "mevis", "refcoco", "ade20k", "custom", "video_instruct"} <= set(LOADERS)


def test_build_dataset_from_recipe_options(tmp_path):
    from training.data import MevisClip, MevisExpression, write_mevis
    obj = np.zeros((4, 8, 8), bool)
    obj[:, 2:5, 2:5] = True
    write_mevis(tmp_path / "mevis" / "train", [MevisClip("v", {1: obj}, [MevisExpression("a box", [1])],
                                                         frames=np.zeros((4, 8, 8, 3), np.uint8))])
    ds = build_dataset("mevis", tmp_path / "mevis", split="train", num_frames=2, random_frames=True, seed=4)
    assert ds.sampling.num_frames == 2 and ds.sampling.random and ds.sampling.seed == 4
    assert ds[0].frames.shape[0] == 2
    with pytest.raises(ConfigError, match="bad option"):
        build_dataset("mevis", tmp_path / "mevis", bogus=1)
