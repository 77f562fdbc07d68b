"""Training recipes: typed configs read from YAML files in `training/configs/`.

A recipe names the model to start from, the data mixture of each stage (the paper's gradual schedule is a
list of stages), and the optimisation settings. Every setting lives here once; the trainer only reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vglamm.errors import ConfigError


@dataclass
class DatasetSpec:
    """One data source of a stage: a loader name (see `training.data.LOADERS`), its root and its sampling rate."""

    loader: str
    root: str
    rate: float = 1.0
    options: dict = field(default_factory=dict)  # passed to the loader (split, frames, templates ...)


@dataclass
class StageSpec:
    """A stage of the gradual schedule: `steps` optimiser steps drawn from this mixture."""

    name: str
    steps: int
    datasets: list[DatasetSpec]
    # False: SAM2 is not run (no mask losses, no rehearsal): the LLM's CE, the distillation of its [SEG] prompts
    # onto stage 0's descriptions and the token probe only, ~4x cheaper per sample on a CPU. For a stage that
    # teaches the language side which object an expression means before SAM2 and the LLM train together.
    decode_masks: bool = True
    # SAM2 decodes this many of each sample's frames (a sorted random subset, new every step) for the mask losses,
    # while the LLM sees them all: SAM2's per-frame steps are most of a CPU step. None: every frame.
    mask_frames: int | None = None


@dataclass
class OptimConfig:
    # Paper: AdamW lr 3e-4, betas (0.9, 0.95), no weight decay, 100 warmup steps then linear decay, clip 1.0.
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0  # the lr decays linearly from lr to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0
    batch_size: int = 2  # samples per micro-batch per process
    grad_accum: int = 10


@dataclass
class TrainConfig:
    """Everything a training run needs. `model` is a preset name ("tiny", "paper") or a `from_pretrained` dir."""

    model: str = "tiny"
    model_overrides: dict = field(default_factory=dict)  # e.g. {"trainable": "all", "decoder_mode": "temporal"}
    stages: list[StageSpec] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    backend: str = "torch"  # "torch" (single process, any device) or "deepspeed" (ZeRO, many GPUs/nodes, or gloo on CPU)
    zero_stage: int = 2
    precision: str = "fp32"  # "fp32" | "bf16" (bf16 on GPU)
    out_dir: str = "runs/default"
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    skip_bad_records: bool = False  # redraw instead of stopping when a record fails to load (counted, logged)
    # Processes that draw (load, decode, generate) the samples of the next micro-batches while the current one trains;
    # 0 draws them in the training process. The samples are the same either way (each is a function of its index).
    num_workers: int = 0
    device: str | None = None  # default: cuda when available
    export_dir: str | None = None  # merged-LoRA `from_pretrained` directory written at the end
    # Stage 0 before `stages` (synthetic world only): SAM2 learns to follow attribute prompts, see
    # training.synthetic.prompt_pretrain.PromptPretrainConfig for the keys. None: no stage 0.
    prompt_pretrain: dict | None = None
    # Weight of the readout loss in every stage (training.readout_supervision: the L->V adapter's visual readout is
    # told where each [SEG]'s object is, its attention pulled onto the tokens its mask covers). Needs only the masks,
    # so a recipe without stage 0 (a fine-tune) can use it too. 0: off.
    readout_weight: float = 0.0

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_index(self, step: int) -> int:
        """The stage that optimiser step `step` (0-based) belongs to; steps past the end stay in the last."""
        for i, stage in enumerate(self.stages):
            if step < stage.steps:
                return i
            step -= stage.steps
        return len(self.stages) - 1

    def validate(self) -> "TrainConfig":
        if not self.stages:
            raise ConfigError("the recipe has no stages: add at least one under `stages:` with `steps` and `datasets`")
        for stage in self.stages:
            if stage.steps <= 0 or not stage.datasets:
                raise ConfigError(f"stage '{stage.name}' needs steps > 0 and at least one dataset")
            if any(d.rate <= 0 for d in stage.datasets):
                raise ConfigError(f"stage '{stage.name}': every dataset rate must be > 0")
            if not isinstance(stage.decode_masks, bool):
                raise ConfigError(f"stage '{stage.name}': decode_masks must be true or false, not "
                                  f"{stage.decode_masks!r}")
            if stage.mask_frames is not None and (isinstance(stage.mask_frames, bool)
                                                  or not isinstance(stage.mask_frames, int) or stage.mask_frames < 1):
                raise ConfigError(f"stage '{stage.name}': mask_frames must be a whole number >= 1 or null, not "
                                  f"{stage.mask_frames!r}")
        if self.backend not in ("torch", "deepspeed"):
            raise ConfigError(f"backend must be 'torch' or 'deepspeed', not {self.backend!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"num_workers must be a whole number >= 0 (0: draw samples in the training process), "
                              f"not {self.num_workers!r}")
        if not self.readout_weight >= 0:  # also refuses NaN
            raise ConfigError(f"readout_weight must be >= 0, not {self.readout_weight!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")
        self.prompt_pretrain_config()  # raises on unknown keys or bad values
        return self

    def prompt_pretrain_config(self):
        """The typed stage-0 settings (a PromptPretrainConfig), or None when the recipe has no stage 0."""
        if self.prompt_pretrain is None:
            return None
        from training.synthetic.prompt_pretrain import PromptPretrainConfig

        cfg = PromptPretrainConfig(**_typed(PromptPretrainConfig, dict(self.prompt_pretrain)))
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        stages = []
        for i, s in enumerate(d.pop("stages", [])):
            if "steps" not in s:
                raise ConfigError(f"stage {i} ({s.get('name', 'unnamed')}) has no `steps`")
            datasets = [DatasetSpec(**_typed(DatasetSpec, ds)) for ds in s.get("datasets", [])]
            stages.append(StageSpec(**_typed(StageSpec, {"name": f"stage{i}", **s, "datasets": datasets})))
        optim = _typed(OptimConfig, d.pop("optim", {}) or {})
        if "betas" in optim:
            optim["betas"] = tuple(float(b) for b in optim["betas"])
        return cls(stages=stages, optim=OptimConfig(**optim), **_typed(cls, d)).validate()


def _typed(cls, d: dict) -> dict:
    """Cast numbers to their field's type: YAML 1.1 reads `3e-4` (no dot) as a string, a classic recipe trap."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = set(d) - set(types)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}; known keys: {sorted(types)}")
    out = dict(d)
    for key, value in d.items():
        kind = str(types[key])
        try:
            if kind == "float" and not isinstance(value, bool):
                out[key] = float(value)
            elif kind == "int" and not isinstance(value, bool):
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError  # int() would drop the fraction without a word
                out[key] = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{cls.__name__}.{key} must be a {kind}, got {value!r}") from None
    return out


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML recipe. `overrides` are `key=value` strings with dotted keys (`optim.lr=1e-4`,
    `stages.0.datasets.0.root=data/my.jsonl`).

    Relative dataset roots are taken from the current directory, as with any command-line path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist (recipes live in training/configs/)")
    d = yaml.safe_load(path.read_text()) or {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        if not _:
            raise ConfigError(f"override {item!r} is not key=value")
        node = d
        *parents, leaf = key.split(".")
        if parents and parents[0] == "model_overrides":  # its keys are dotted model settings themselves
            parents, leaf = parents[:1], key.partition(".")[2]
        try:
            for p in parents:  # list items by index: stages.0.datasets.1.rate=2
                node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
            node[int(leaf) if isinstance(node, list) else leaf] = yaml.safe_load(value)
        except (IndexError, ValueError, TypeError, AttributeError):
            raise ConfigError(f"override {item!r}: {key!r} names nothing in {path}") from None
    for stage in d.get("stages", []):
        for ds in stage.get("datasets", []):
            ds["root"] = str(Path(ds["root"]).expanduser())
    return TrainConfig.from_dict(d)
