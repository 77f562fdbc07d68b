"""Loader names for recipes: ``build_dataset(loader, root, **options)``; see ``LOADERS`` for the names.

Frame-sampling options (``num_frames``, ``cover_objects``, ``random_frames``, ``seed``, or a ``sampling`` dict)
become a ``FrameSampling``; every other option goes to the loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from vglamm.errors import ConfigError, DataFormatError

from .base import FrameSampling


def _video_gcg(root, split="train", **kw):
    from .video_gcg import VideoGCGDataset

    root = Path(root)
    if root.is_dir():  # the reference's layout, a synthetic split folder, or a folder holding <split>.json
        cands = [root / "instruction_data" / f"{split}.json", root / f"{split}.json", root / "video_gcg.json",
                 root / split / "video_gcg.json"]
        found = next((c for c in cands if c.exists()), None)
        if found is None:
            raise DataFormatError(f"no video GCG JSON in {root} (looked for {', '.join(map(str, cands))})")
        root = found
    return VideoGCGDataset(root, **kw)


def _bracket(mask_source: str, name: str):
    def build(root, captions=None, split=None, **kw):
        from . import gcg_bracket as g

        split_dir = Path(root) / split if split else Path(root)
        if captions is None:
            raise ConfigError(f"loader {name} needs options.captions: the caption JSON or folder")
        masks = {"mevis": g.MevisMasks, "palette": g.PaletteMasks, "pngdir": g.PngDirMasks}[mask_source](split_dir)
        kw.setdefault("name", name)
        return g.BracketGCGDataset(captions, masks, **kw)

    return build


def _mevis(root, split="train", **kw):
    from .mevis import MevisDataset

    return MevisDataset(root, split, **kw)


def _refer_vos(cls_name: str):
    def build(root, **kw):
        from . import refer_vos

        return getattr(refer_vos, cls_name)(root, **kw)

    return build


def _refcoco(dataset: str):
    def build(root, split="train", **kw):
        from .images import RefCOCODataset

        return RefCOCODataset(root, split, dataset=dataset, **kw)

    return build


def _ade20k(root, **kw):
    from .images import ade20k

    return ade20k(root, **kw)


def _cocostuff(root, **kw):
    from .images import cocostuff

    return cocostuff(root, **kw)


def _video_instruct(root, **kw):
    from .video_instruct import VideoInstructDataset

    return VideoInstructDataset(root, **kw)


def _custom(root, **kw):
    from .custom import CustomDataset

    return CustomDataset(root, **kw)


def _synthetic(root=None, num_videos=1000, world_seed=0, split="train", world=None, **kw):
    """The procedural world of ``training.synthetic``, generated on the fly (``root`` is unused)."""
    from training.synthetic.dataset import SyntheticDataset
    from training.synthetic.world import WorldConfig

    return SyntheticDataset(num_videos, seed=world_seed, split=split,
                            config=WorldConfig(**world) if world else None, **kw)


LOADERS: dict[str, Callable] = {
    "video_gcg": _video_gcg,
    "mevis": _mevis,
    "mevis_gcg": _bracket("mevis", "mevis_gcg"),
    "ytvos_gcg": _bracket("palette", "ytvos_gcg"),
    "vidstg_gcg": _bracket("pngdir", "vidstg_gcg"),
    "hcstvg_gcg": _bracket("pngdir", "hcstvg_gcg"),
    "ref_youtube_vos": _refer_vos("RefYouTubeVOSDataset"),
    "ref_davis17": _refer_vos("RefDAVIS17Dataset"),
    "refcoco": _refcoco("refcoco"),
    "refcoco+": _refcoco("refcoco+"),
    "refcocog": _refcoco("refcocog"),
    "ade20k": _ade20k,
    "cocostuff": _cocostuff,
    "video_instruct": _video_instruct,
    "custom": _custom,
    "synthetic": _synthetic,
}

_SAMPLING_KEYS = {"num_frames": "num_frames", "cover_objects": "cover_objects", "random_frames": "random",
                  "seed": "seed"}


def register_loader(name: str, build: Callable, *, replace: bool = False) -> None:
    """Add a loader name (e.g. the synthetic world's) usable from recipes: ``build(root, **options) -> dataset``."""
    if name in LOADERS and not replace:
        raise ConfigError(f"loader {name!r} is already registered")
    LOADERS[name] = build


def build_dataset(loader: str, root: str | os.PathLike, **options):
    """Construct a registered loader on ``root`` with recipe ``options``."""
    if loader not in LOADERS:
        raise ConfigError(f"unknown data loader {loader!r}; known: {', '.join(sorted(LOADERS))}")
    sampling = dict(options.pop("sampling", None) or {})
    for k, field_name in _SAMPLING_KEYS.items():
        if k in options:
            sampling[field_name] = options.pop(k)
    if sampling:
        try:
            options["sampling"] = FrameSampling(**sampling)
        except TypeError as e:
            raise ConfigError(f"bad frame-sampling option for loader {loader!r}: {e}") from e
    try:
        return LOADERS[loader](root, **options)
    except TypeError as e:
        raise ConfigError(f"bad option for loader {loader!r}: {e}") from e
