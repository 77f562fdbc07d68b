"""Reading source checkpoints, inferring component configs from tensor shapes, and writing the result atomically."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.io.atomic import replace_dir
from vglamm.modeling.video_encoder import InternVideo2Config

REPORT_NAME = "conversion_report.json"


# ----------------------------------------------------------------------------------------------- report
@dataclass
class ConversionReport:
    """What a conversion did, written beside the weights as ``conversion_report.json``.

    loaded:      source -> number of tensors consumed.
    unused:      source -> checkpoint keys deliberately left out (heads and extras this model has no use for).
    initialised: parameter groups with fresh (random) weights, e.g. the L→V adapter when starting from components.
    notes:       anything else worth knowing (vocabulary resizes, the detected SAM2 variant, the [SEG] id).
    """

    kind: str
    sources: dict[str, str] = field(default_factory=dict)
    loaded: dict[str, int] = field(default_factory=dict)
    unused: dict[str, list[str]] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [f"converted ({self.kind}):"]
        for src, n in self.loaded.items():
            lines.append(f"  {src}: {n} tensors loaded, {len(self.unused.get(src, []))} unused")
        if self.initialised:
            lines.append(f"  freshly initialised: {', '.join(self.initialised)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- reading
def load_tensor_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """One checkpoint file: safetensors, or a torch pickle read with ``weights_only=True`` (never arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; say which file and what to do
        raise MissingWeightsError(f"cannot read {path} as a weights-only torch checkpoint ({exc}); "
                                  "re-download it, or convert it to safetensors") from exc
    if not isinstance(state, dict):
        raise MissingWeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def unwrap_state_dict(state: dict) -> dict:
    """Meta's ``{"model": sd}``, DeepSpeed's ``{"module": sd}`` and ``{"state_dict": sd}`` → the state dict."""
    for key in ("model", "module", "state_dict"):
        if key in state and isinstance(state[key], dict):
            return state[key]
    return state


_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin")


def load_sharded(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """A transformers-style weights folder: a shard index (safetensors preferred, else ``.bin``) or a single file.

    Every shard named by the index must exist, and every key the index lists must be in its shard.
    Returns (state dict, files read).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingWeightsError(f"checkpoint folder not found: {directory}")
    for name in _INDEX_NAMES:
        index_path = directory / name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise MissingWeightsError(f"{index_path} is not a shard index with a 'weight_map' ({exc})") from exc
            state: dict[str, torch.Tensor] = {}
            files = sorted({directory / f for f in weight_map.values()})
            for f in files:
                if not f.is_file():
                    raise MissingWeightsError(f"{index_path} names shard {f.name}, which is missing from "
                                              f"{directory}; download every shard")
                state.update(load_tensor_file(f))
            absent = [k for k in weight_map if k not in state]
            if absent:
                raise MissingWeightsError(f"{index_path} lists {len(absent)} key(s) absent from the shards, first "
                                          f"{absent[0]!r}; a shard is truncated or from another checkpoint")
            return state, files
    for name in _SINGLE_NAMES:
        if (directory / name).is_file():
            return load_tensor_file(directory / name), [directory / name]
    shards = sorted(directory.glob("pytorch_model-*.bin")) or sorted(directory.glob("model-*.safetensors"))
    if shards:
        raise MissingWeightsError(f"{directory} has shards but no index json ({' or '.join(_INDEX_NAMES)}); "
                                  "download the index file too")
    raise MissingWeightsError(f"{directory} has no weights ({', '.join(_SINGLE_NAMES + _INDEX_NAMES)})")


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------- config inference
_HIERA = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}


def detect_sam2_config(state: dict[str, torch.Tensor], source: str = "SAM2 checkpoint") -> str:
    """The `sam2` package config matching a SAM2 state dict (keys as in Meta's checkpoints, no prefix).

    Size from the Hiera trunk (patch-embedding width, block count); SAM2.1 from its extra
    ``no_obj_embed_spatial`` parameter.
    """
    key = "image_encoder.trunk.patch_embed.proj.weight"
    if key not in state:
        raise MissingWeightsError(f"{source} lacks {key!r}; it is not a SAM2 (Hiera) checkpoint")
    width = int(state[key].shape[0])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    size = _HIERA.get((width, len(blocks)))
    if size is None:
        raise ConfigError(f"{source}: Hiera trunk of width {width} with {len(blocks)} blocks matches no SAM2 "
                          f"variant ({sorted(_HIERA.items())})")
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"configs/{version}/{version}_hiera_{size}.yaml"


def use_released_sam2(cfg, sam_config: str) -> None:
    """Point ``cfg`` (a VideoGLaMMConfig) at a released SAM2 variant: Meta's checkpoints are the standard
    architectures, so a preset's structural overrides (e.g. the nano SAM2 of ``tiny``) are dropped and the
    prompt width (and the L→V adapter's output) follow the real model."""
    pd = dataclasses.replace(cfg.pixel_decoder, sam2_config=sam_config, ckpt_path=None, hydra_overrides=[])
    pd.prompt_dim = cfg.adapters.seg_dim = pd.model_width()
    cfg.pixel_decoder = pd


def internvideo2_config_from_state(state: dict[str, torch.Tensor], base: InternVideo2Config,
                                   source: str = "InternVideo2 checkpoint") -> InternVideo2Config:
    """Shape-determined fields of the encoder (width, patch, depth, MLP ratio, image size, qkv bias) read from the
    checkpoint (keys without the ``vision_encoder.`` prefix); ``num_heads`` and the chunk length come from ``base``
    (the checkpoint does not determine them). The joint position table must agree with the chunk length."""
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise MissingWeightsError(f"{source} lacks vision_encoder.{key}; is it the stage-2 vision encoder?")
    width, _, tubelet, patch, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    rows = int(state["pos_embed"].shape[1]) - 1
    per_frame, rest = divmod(rows, base.num_frames)
    grid = int(round(per_frame ** 0.5))
    if rest or grid * grid != per_frame:
        raise ConfigError(f"{source}: pos_embed has {rows} patch rows, not {base.num_frames} frames of a square "
                          "grid; set video_encoder.num_frames to the checkpoint's chunk length")
    hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    cfg = dataclasses.replace(base, embed_dim=int(width), patch_size=int(patch), tubelet_size=int(tubelet),
                              depth=depth, img_size=grid * int(patch), mlp_ratio=hidden / int(width),
                              qkv_bias="blocks.0.attn.qkv.bias" in state)
    if int(cfg.embed_dim * cfg.mlp_ratio) != hidden:  # float round-off of the ratio: nudge it up
        cfg.mlp_ratio = (hidden + 0.5) / int(width)
    if width % cfg.num_heads:
        raise ConfigError(f"{source}: width {width} is not divisible by num_heads={cfg.num_heads}")
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------------------------- checks
def check_shapes(expected: dict[str, torch.Size], got: dict[str, torch.Tensor], describe: Callable[[str], str],
                 source: str) -> None:
    """Every expected key present with its shape; errors name the source key (``describe(our_key)``)."""
    for key, shape in expected.items():
        if key not in got:
            raise MissingWeightsError(f"{source} lacks {describe(key)!r} (needed for {key}); the checkpoint is "
                                      "incomplete or of another architecture, so nothing was written")
        if tuple(got[key].shape) != tuple(shape):
            raise ConfigError(f"{source}: {describe(key)!r} has shape {tuple(got[key].shape)} but {key} expects "
                              f"{tuple(shape)}; nothing was written")


# ----------------------------------------------------------------------------------------------- writing
def prepare_output(out: str | os.PathLike, inputs: list, overwrite: bool) -> Path:
    """Refuse to write into an input, or over an existing folder unless ``overwrite``."""
    out = Path(out).resolve()
    for src in inputs:
        if src is None or not os.path.exists(src):
            continue  # hub ids are not paths
        src = Path(src).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise ConfigError(f"refusing to write {out}: it overlaps the input {src}. Choose another --out.")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is a file; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    return out


def write_model(model, out: Path, report: ConversionReport) -> Path:
    """``save_pretrained`` + the report into a staging folder beside ``out``, renamed onto ``out`` at the end, so
    ``out`` holds either a complete model or what it held before."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    try:
        staged = model.save_pretrained(staging_root / "model")
        (staged / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2))
        replace_dir(staged, out)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return out


def own_storage(t: torch.Tensor) -> torch.Tensor:
    """A tensor that owns its storage (pickled views would make safetensors refuse to save shared memory)."""
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
        return t.clone(memory_format=torch.contiguous_format)
    return t
