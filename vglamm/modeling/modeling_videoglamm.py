"""VideoGLaMM: dual vision encoders → V→L adapters → LLM → [SEG] → L→V adapter → SAM2 masks.

``forward(batch)`` is the training pass (next-token CE on answers + per-frame mask BCE and Dice);
``chat`` / ``segment`` are grounded inference (video encoded once, KV-cached decoding, one batched SAM2 pass over
every source frame); ``save_pretrained`` / ``from_pretrained`` round-trip safetensors + config + tokenizer.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from vglamm.errors import ConfigError, DataFormatError, MissingWeightsError, NoTargetFoundError
from vglamm.io.atomic import replace_dir
from vglamm.modeling.adapters import SegAdapter, VisionAdapter
from vglamm.modeling.configuration import IGNORE_INDEX, VIDEO_PLACEHOLDER_ID, VideoGLaMMConfig
from vglamm.modeling.generation import generate, position_ids_from_mask
from vglamm.modeling.image_encoder import CLIPImageEncoder
from vglamm.modeling.language_model import END_OF_TURN, LanguageModel, build_tokenizer
from vglamm.modeling.losses import mask_losses, next_token_loss, prompt_regression_loss, readout_attention_loss
from vglamm.modeling.pixel_decoder import SAM2PixelDecoder
from vglamm.modeling.processing import (VideoGLaMMProcessor, clean_answer, clip_llm_frames, gcg_prompt,
                                        nearest_llm_frames, phrase_token_weights, referring_prompt, seg_phrases)
from vglamm.modeling.video_encoder import InternVideo2Encoder, load_internvideo2_checkpoint

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
DEFAULT_MODEL = "default"


# ----------------------------------------------------------------------------------------------- outputs
@dataclass
class VideoGLaMMOutput:
    """Training forward result. ``loss`` = ce_weight·ce + bce_weight·bce + dice_weight·dice (components unweighted).

    logits: (B,L,V) over the merged sequence (visual tokens included); mask_logits: per sample (K_i,T_i,h,w).
    """

    loss: torch.Tensor
    ce_loss: torch.Tensor
    bce_loss: torch.Tensor
    dice_loss: torch.Tensor
    logits: torch.Tensor | None = None
    mask_logits: list[torch.Tensor] = field(default_factory=list)
    # MSE of the [SEG] prompts to the batch's ``prompt_targets`` (with its graph; not part of ``loss``: a trainer
    # adds it with its own weight). None when the batch has no targets.
    prompt_loss: torch.Tensor | None = None
    # the visual tokens the LLM saw, (B,V,D) with their graph: every frame's CLIP tokens, then every frame's
    # InternVideo2 tokens (for auxiliary losses on them, e.g. training.synthetic.token_probe)
    visual_tokens: torch.Tensor | None = None
    # every [SEG]'s prompt (the L->V output), (S, D_prompt) in order of appearance, row after row, with its graph
    seg_prompts: torch.Tensor | None = None
    # KL divergence of the L->V readout's attention (averaged over heads) to the batch's ``readout_targets`` (S, V):
    # where each [SEG]'s object is among the visual tokens (with its graph; not part of ``loss``, like prompt_loss).
    # None when the batch has no targets or the adapter no readout.
    readout_loss: torch.Tensor | None = None
    # and that attention itself, (S, V) with its graph (benchmarks/probe_binding.py reads where each [SEG] looks)
    seg_attention: torch.Tensor | None = None


@dataclass
class GroundedObject:
    """One grounded phrase: its text and a (T,H,W) bool mask per frame of the video."""

    phrase: str
    masks: np.ndarray


@dataclass
class GroundedAnswer:
    """A chat answer. ``text`` is clean (no tags, no [SEG]); ``objects`` has one entry per [SEG], in order.

    ``reason`` explains an answer without objects. ``frame_indices``: source index of each mask frame;
    ``llm_frame_indices``: the frames the LLM looked at.
    """

    text: str
    raw_text: str
    objects: list[GroundedObject] = field(default_factory=list)
    reason: str | None = None
    frame_indices: np.ndarray | None = None
    llm_frame_indices: np.ndarray | None = None


@dataclass
class _VideoInput:
    """A video resolved for inference: LLM frames (sampled) and a way to stream every frame to SAM2."""

    llm_frames: np.ndarray
    llm_indices: np.ndarray
    sam_frames: Any  # (T,H,W,3) array, or a zero-argument callable returning an iterator of frames
    num_frames: int
    size: tuple[int, int]
    frame_indices: np.ndarray

    def sam_stream(self):
        return self.sam_frames() if callable(self.sam_frames) else self.sam_frames


# ----------------------------------------------------------------------------------------------- model
class VideoGLaMM(nn.Module):
    """The VideoGLaMM model. Build with :meth:`from_config` or :meth:`from_pretrained`."""

    def __init__(self, cfg: VideoGLaMMConfig, *, image_encoder: CLIPImageEncoder,
                 video_encoder: InternVideo2Encoder | None, language_model: LanguageModel, pixel_decoder: SAM2PixelDecoder, tokenizer):
        super().__init__()
        self.cfg = cfg
        width = language_model.hidden_size
        self.image_encoder = image_encoder
        # Image-encoder-only models have no InternVideo2 and no video adapter (no weights saved or loaded for them).
        self.video_encoder = video_encoder if cfg.use_video_encoder else None
        self.image_adapter = VisionAdapter(cfg.image_encoder.hidden_size, width, cfg.adapters.image_pool)
        self.video_adapter = (VisionAdapter(video_encoder.out_dim, width, cfg.adapters.video_pool)
                              if cfg.use_video_encoder else None)
        self.language_model = language_model
        self.seg_adapter = SegAdapter(width, cfg.adapters.seg_dim, heads=cfg.adapters.seg_attention_heads,
                                      num_visual=cfg.visual_tokens_per_video)
        self.pixel_decoder = pixel_decoder
        self.tokenizer = tokenizer
        self.processor = VideoGLaMMProcessor(tokenizer, cfg)
        self.seg_token_id = self.processor.seg_token_id
        self.phrase_token_ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in ("<p>", "</p>"))
        stops = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)}
        self.stop_token_ids = {s for s in stops if s is not None and s != tokenizer.unk_token_id}
        self.set_trainable()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: VideoGLaMMConfig, *, load_components: bool = False, tokenizer=None,
                    torch_dtype: torch.dtype | None = None) -> "VideoGLaMM":
        """Build the model. ``load_components=True`` reads each component's pretrained weights (CLIP and the LLM
        from their hub ids / folders, InternVideo2 from ``cfg.video_encoder_ckpt``, SAM2 from its ``ckpt_path``);
        otherwise every weight is random (tiny tests, or a skeleton that ``from_pretrained`` fills)."""
        cfg = copy.deepcopy(cfg)
        cfg.validate()
        tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg.language_model)
        if load_components and cfg.image_encoder.pretrained:
            image = CLIPImageEncoder.from_pretrained(cfg.image_encoder, dtype=torch_dtype)
        else:
            image = CLIPImageEncoder(cfg.image_encoder)
        video = InternVideo2Encoder(cfg.video_encoder) if cfg.use_video_encoder else None
        if video is not None and load_components and cfg.video_encoder_ckpt:
            load_internvideo2_checkpoint(video, cfg.video_encoder_ckpt)
        llm = LanguageModel.from_config(cfg.language_model, tokenizer, load_pretrained=load_components,
                                        torch_dtype=torch_dtype)
        pixel_cfg = cfg.pixel_decoder if load_components else dataclasses.replace(cfg.pixel_decoder, ckpt_path=None)
        pixel = SAM2PixelDecoder(pixel_cfg)
        model = cls(cfg, image_encoder=image, video_encoder=video, language_model=llm, pixel_decoder=pixel,
                    tokenizer=tokenizer)
        if torch_dtype is not None:
            model.to_dtype(torch_dtype)
        return model

    def to_dtype(self, dtype: torch.dtype) -> "VideoGLaMM":
        """Cast to ``dtype`` (e.g. bf16 on GPU) but keep SAM2's weights in float32: it runs under autocast,
        and its memory/pointer arithmetic is written for float32 inputs."""
        self.to(dtype)
        self.pixel_decoder.float()
        return self

    def _sam_autocast(self):
        """bf16/fp16 autocast around SAM2 on CUDA when the rest of the model is half precision."""
        enabled = self.device.type == "cuda" and self.dtype in (torch.bfloat16, torch.float16)
        return torch.autocast("cuda", dtype=self.dtype, enabled=enabled)

    # ------------------------------------------------------------------ trainable set
    def _group_parameters(self, group: str) -> Iterable[nn.Parameter]:
        lm = self.language_model
        if group == "lora":
            return (p for n, p in lm.named_parameters() if "lora_" in n)
        if group == "llm":
            return (p for n, p in lm.named_parameters() if "lora_" not in n)
        if group == "embeddings":
            return lm.embed_tokens.parameters()
        if group == "lm_head":
            return lm.lm_head.parameters()
        if group == "mask_decoder":  # with the location prompt's vector: it is new, and read by the mask decoder
            extra = [self.pixel_decoder.location_embed] if self.cfg.pixel_decoder.location_prompt else []
            return itertools.chain(self.pixel_decoder.sam.sam_mask_decoder.parameters(), extra)
        modules = {"image_encoder": self.image_encoder, "video_encoder": self.video_encoder,
                   "image_adapter": self.image_adapter, "video_adapter": self.video_adapter,
                   "seg_adapter": self.seg_adapter, "pixel_decoder": self.pixel_decoder}
        if group not in modules:
            raise ConfigError(f"unknown trainable group {group!r}")
        return modules[group].parameters() if modules[group] is not None else iter(())

    def set_trainable(self, trainable: str | Sequence[str] | None = None) -> None:
        """Set ``requires_grad`` from the config's trainable set (or ``trainable``, which is then recorded).

        Frozen parameters get ``requires_grad=False`` so they receive no gradient and no optimizer state.
        """
        if trainable is not None:
            self.cfg.trainable = trainable if isinstance(trainable, str) else list(trainable)
        groups = self.cfg.trainable_groups()
        for p in self.parameters():
            p.requires_grad_(False)
        for g in groups:
            for p in self._group_parameters(g):
                p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "VideoGLaMM":
        super().train(mode)
        # Frozen encoders stay in eval mode (no dropout / stochastic depth while their features are reused).
        for module in (self.image_encoder, self.video_encoder):
            if module is not None and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def gradient_checkpointing_enable(self) -> None:
        self.language_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @property
    def device(self) -> torch.device:
        return self.seg_adapter.proj[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.embed_tokens.weight.dtype

    # ------------------------------------------------------------------ shared steps
    def encode_video(self, clip_pixels: torch.Tensor, video_pixels: torch.Tensor | None) -> torch.Tensor:
        """(B,N,3,S,S) CLIP pixels + (B,N,3,s,s) InternVideo2 pixels → (B, V, D_llm) visual tokens:
        every frame's pooled CLIP tokens, then every frame's pooled InternVideo2 tokens (CLIP tokens only when
        ``cfg.use_video_encoder`` is False; ``video_pixels`` is then ignored)."""
        image_tokens = self.image_adapter(self.image_encoder(clip_pixels.to(self.device)))
        if not self.cfg.use_video_encoder:
            return image_tokens
        video_tokens = self.video_adapter(self.video_encoder(video_pixels.to(self.device)))
        return torch.cat([image_tokens, video_tokens], dim=1)

    def merge_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor,
                     labels: torch.Tensor | None = None):
        """Replace each row's video placeholder by its visual tokens.

        Returns (inputs_embeds (B,L-1+V,D), attention_mask, labels or None, ids) where ``ids`` are the merged token
        ids with ``VIDEO_PLACEHOLDER_ID`` over the visual span (used to find ``[SEG]`` positions).
        """
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        is_video = input_ids == VIDEO_PLACEHOLDER_ID
        counts = is_video.sum(1)
        if not bool((counts == 1).all()):
            raise DataFormatError(f"each row needs exactly one video placeholder, got counts {counts.tolist()}")
        text = self.language_model.embed(input_ids.masked_fill(is_video, 0))
        visual = visual.to(text.dtype)
        n_vis = visual.shape[1]
        embeds, masks, merged_ids, merged_labels = [], [], [], []
        for i, p in enumerate(is_video.int().argmax(1).tolist()):
            embeds.append(torch.cat([text[i, :p], visual[i], text[i, p + 1:]]))
            ones = attention_mask.new_ones(n_vis)
            masks.append(torch.cat([attention_mask[i, :p], ones, attention_mask[i, p + 1:]]))
            fill = input_ids.new_full((n_vis,), VIDEO_PLACEHOLDER_ID)
            merged_ids.append(torch.cat([input_ids[i, :p], fill, input_ids[i, p + 1:]]))
            if labels is not None:
                lab = labels[i].to(self.device)
                merged_labels.append(torch.cat([lab[:p], lab.new_full((n_vis,), IGNORE_INDEX), lab[p + 1:]]))
        out_labels = torch.stack(merged_labels) if labels is not None else None
        return torch.stack(embeds), torch.stack(masks), out_labels, torch.stack(merged_ids)

    def seg_predicting_mask(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B,L) bool: True at the position *before* each ``[SEG]`` (its last-layer state predicts the token).

        With ``labels`` only answer ``[SEG]`` count (a ``[SEG]`` typed by the user is not a target).
        """
        is_seg = ids[:, 1:] == self.seg_token_id
        if labels is not None:
            is_seg &= labels[:, 1:] != IGNORE_INDEX
        return torch.cat([is_seg, is_seg.new_zeros(is_seg.shape[0], 1)], dim=1)

    # ------------------------------------------------------------------ training forward
    def forward(self, batch: dict, *, mode: str | None = None, decode_masks: bool = True) -> VideoGLaMMOutput:
        """Training pass over a processor batch. ``mode`` overrides ``cfg.train_decoder_mode``.

        ``decode_masks=False`` leaves SAM2 out (no mask losses, zero): the LLM's CE and its ``[SEG]`` prompts only,
        several times cheaper, for stages that teach the language side alone."""
        cfg = self.cfg
        mode = mode or cfg.train_decoder_mode
        # 1. Visual tokens and the merged LLM sequence
        visual = self.encode_video(batch["clip_pixels"], batch.get("video_pixels"))
        embeds, attn, labels, ids = self.merge_inputs(batch["input_ids"], batch["attention_mask"], visual,
                                                      batch["labels"])
        # 2. LLM: last-layer states, logits, next-token CE on answer tokens
        hidden, _ = self.language_model.hidden(embeds, attention_mask=attn, position_ids=position_ids_from_mask(attn))
        logits = self.language_model.logits(hidden)
        ce = next_token_loss(logits, labels)
        # 3. [SEG]-predicting states → SAM2 prompts, in order of appearance within each row
        seg_mask = self.seg_predicting_mask(ids, labels)
        per_row = seg_mask.sum(1).tolist()
        expected = [int(n) for n in batch["num_seg"]]
        if per_row != expected:
            raise DataFormatError(f"[SEG] tokens per sample {per_row} differ from num_seg {expected}")
        readout_targets = batch.get("readout_targets")
        seg_inputs = (hidden[seg_mask], visual, seg_mask.nonzero()[:, 0],
                      self._phrase_embeddings(ids, seg_mask, embeds))
        if readout_targets is None and not cfg.pixel_decoder.location_prompt:
            flat_prompts, attention = self.seg_adapter(*seg_inputs), None
        else:  # the readout's attention too, for its loss or as SAM2's location prompt
            flat_prompts, attention = self.seg_adapter(*seg_inputs, with_attention=True)
        prompts = flat_prompts.split(per_row)
        prompt_loss = readout_loss = None
        if batch.get("prompt_targets") is not None:
            prompt_loss = prompt_regression_loss(flat_prompts, batch["prompt_targets"])
        if readout_targets is not None and attention is not None:
            readout_loss = readout_attention_loss(attention, readout_targets)
        # 4. Masks: SAM2 features once per sample, every object of the batch decoded against its own sample's
        mask_logits, targets = [], []
        rows = [i for i, n in enumerate(per_row) if n and decode_masks]
        locations = None
        if cfg.pixel_decoder.location_prompt:  # each SAM2 frame gets the map of the LLM frame closest to it
            sizes = batch.get("frame_sizes") or [None] * len(per_row)
            maps = [self.seg_locations(a, size) for a, size in zip(attention.split(per_row), sizes)]
            near = batch.get("sam_llm_frames") or [clip_llm_frames(len(p), cfg.num_frames) for p in batch["sam_pixels"]]
            locations = [maps[i][:, near[i].to(maps[i].device)] for i in rows]
        with self._sam_autocast():
            features = [self.pixel_decoder.encode_frames(batch["sam_pixels"][i].to(self.device)) for i in rows]
            decoded = self.pixel_decoder.decode_many(features, [prompts[i] for i in rows], mode=mode,
                                                     locations=locations)
        for i, lg in zip(rows, decoded):
            target = batch["target_masks"][i].to(self.device)
            if lg.shape[-2:] != target.shape[-2:]:
                lg = nn.functional.interpolate(lg.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
            mask_logits.append(lg)
            targets.append(target)
        bce, dice = mask_losses(mask_logits, targets)
        bce, dice = bce.to(ce.device), dice.to(ce.device)
        loss = cfg.ce_weight * ce + cfg.bce_weight * bce + cfg.dice_weight * dice
        return VideoGLaMMOutput(loss=loss, ce_loss=ce.detach(), bce_loss=bce.detach(), dice_loss=dice.detach(),
                                logits=logits, mask_logits=mask_logits, prompt_loss=prompt_loss, visual_tokens=visual,
                                seg_prompts=flat_prompts, readout_loss=readout_loss, seg_attention=attention)

    def seg_locations(self, attention: torch.Tensor, frame_size: tuple[int, int] | None = None) -> torch.Tensor:
        """The readout's attention (N,V) -> where it looked on each LLM frame, (N,num_frames,h,w) on the frame as
        SAM2 sees it (stretched to a square): each token cell's share of the frame's attention, times the cells,
        minus one (0 everywhere: looked evenly, or no cell there). Read from the video encoder's cells, which see
        the same stretched frame; without a video encoder from CLIP's, which see the frame's centre square
        (``frame_size`` (H,W); None: square), placed on a grid 4x finer with zeros beside it."""
        cfg = self.cfg
        video = cfg.use_video_encoder
        p, k = (cfg.adapters.video_pool if video else cfg.adapters.image_pool), cfg.num_frames
        cells = attention[:, -k * p * p:] if video else attention[:, :k * p * p]
        cells = cells.reshape(len(attention), k, p * p).float()
        share = cells / cells.sum(-1, keepdim=True).clamp_min(1e-12)
        maps = (share * (p * p) - 1).reshape(len(attention), k, p, p)
        if video:
            return maps
        grid, (h, w) = 4 * p, frame_size or (1, 1)  # one grid size for every clip: a batch's maps propagate together
        rows, cols = max(1, round(grid * min(h, w) / h)), max(1, round(grid * min(h, w) / w))
        inner = nn.functional.interpolate(maps.flatten(0, 1)[:, None], size=(rows, cols), mode="nearest")[:, 0]
        out = maps.new_zeros(len(inner), grid, grid)
        top, left = (grid - rows) // 2, (grid - cols) // 2
        out[:, top:top + rows, left:left + cols] = inner
        return out.reshape(len(attention), k, grid, grid)

    def _phrase_embeddings(self, ids: torch.Tensor, predicting: torch.Tensor, embeds: torch.Tensor):
        """(N, D) mean input embedding of each [SEG]'s phrase tokens, for the L->V adapter's visual readout (None
        when it has none)."""
        if not self.seg_adapter.heads:
            return None
        weights = phrase_token_weights(ids, predicting, self.seg_token_id, *self.phrase_token_ids)
        rows = predicting.nonzero()[:, 0]
        return torch.bmm(weights.to(embeds)[:, None], embeds[rows])[:, 0]

    # ------------------------------------------------------------------ inference
    def _resolve_video(self, video) -> _VideoInput:
        """A path, ``vglamm.Video`` or (T,H,W,3) uint8 array → LLM frames + a SAM2 stream of every frame."""
        from vglamm.io.sampling import fps_indices, uniform_indices

        cfg = self.cfg
        if isinstance(video, (str, os.PathLike)):
            from vglamm.io.video import iter_video, load_video, probe_video

            path = os.fspath(video)
            info = probe_video(path)
            sampled = load_video(path, fps=cfg.inference_fps, max_frames=cfg.inference_max_frames)
            pick = uniform_indices(len(sampled.frames), cfg.num_frames)
            return _VideoInput(sampled.frames[pick], sampled.frame_indices[pick],
                               lambda: (f for _, f in iter_video(path)), info.num_frames, tuple(info.size),
                               np.arange(info.num_frames))
        frames, fps, indices = video, None, None
        if hasattr(video, "frames"):  # vglamm.Video
            frames, fps, indices = video.frames, video.fps, np.asarray(video.frame_indices)
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise DataFormatError(f"video must be a path, a vglamm.Video or a uint8 (T,H,W,3) array; got "
                                  f"{frames.dtype} {frames.shape}")
        t = len(frames)
        if fps and cfg.inference_fps:
            first = fps_indices(t, fps, cfg.inference_fps, cfg.inference_max_frames)
        elif cfg.inference_max_frames and t > cfg.inference_max_frames:
            first = uniform_indices(t, cfg.inference_max_frames)
        else:
            first = np.arange(t)
        pick = first[uniform_indices(len(first), cfg.num_frames)]
        indices = indices if indices is not None else np.arange(t)
        return _VideoInput(frames[pick], indices[pick], frames, t, tuple(frames.shape[1:3]), indices)

    def _encode_prompts(self, prompt_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad prompt ids (generation appends on the right)."""
        length = max(len(p) for p in prompt_ids)
        ids = torch.full((len(prompt_ids), length), self.processor.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompt_ids):
            ids[i, length - len(p):] = torch.tensor(p)
            mask[i, length - len(p):] = 1
        return ids, mask

    @torch.no_grad()
    def generate_grounded(self, videos: Sequence[_VideoInput], prompts: Sequence[str], *, max_new_tokens: int = 256,
                          do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                          use_cache: bool = True, generator: torch.Generator | None = None):
        """Text generation for resolved videos: returns :class:`~vglamm.modeling.generation.GenerationResult`."""
        pixels = [self.processor.llm_pixels(v.llm_frames, self.device) for v in videos]
        clip = torch.stack([c for c, _ in pixels]).to(self.device, self.dtype)
        vid = (torch.stack([v for _, v in pixels]).to(self.device, self.dtype) if self.cfg.use_video_encoder
               else None)
        visual = self.encode_video(clip, vid)
        ids, mask = self._encode_prompts([self.processor.prompt_ids(p) for p in prompts])
        embeds, mask, _, _ = self.merge_inputs(ids, mask, visual)
        result = generate(self.language_model, embeds, mask, seg_token_id=self.seg_token_id,
                          stop_token_ids=self.stop_token_ids, pad_token_id=self.processor.pad_token_id,
                          max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
                          use_cache=use_cache, generator=generator)
        result.visual_tokens = visual
        return result

    @torch.no_grad()
    def chat_batch(self, videos: Sequence[Any], prompts: Sequence[str | None], *, max_new_tokens: int = 256,
                   do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, mode: str = "temporal",
                   use_cache: bool = True, generator: torch.Generator | None = None) -> list[GroundedAnswer]:
        """Grounded answers for several (video, prompt) pairs; prompts of None ask for a grounded caption."""
        # 1. Check inputs
        if len(videos) != len(prompts):
            raise ConfigError(f"got {len(videos)} videos but {len(prompts)} prompts; give one prompt per video")
        if mode not in ("framewise", "temporal"):
            raise ConfigError(f"mode={mode!r}; choose 'framewise' or 'temporal'")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        was_training = self.training
        self.eval()
        try:
            # 2. Resolve videos: sampled frames for the LLM, every frame for SAM2
            inputs = [self._resolve_video(v) for v in videos]
            questions = [p if p is not None else gcg_prompt() for p in prompts]
            # 3. Encode the video once, prefill once, decode with the KV cache, collect [SEG] states
            result = self.generate_grounded(inputs, questions, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                            temperature=temperature, top_p=top_p, use_cache=use_cache,
                                            generator=generator)
            # 4. [SEG] states → SAM2 prompts → masks of all objects in one streaming pass per video
            answers = []
            for i, (video, tokens, states, done) in enumerate(zip(inputs, result.tokens, result.seg_hidden,
                                                                   result.finished)):
                answers.append(self._answer(video, tokens, states, done, mode, result.visual_tokens[i:i + 1]))
            return answers
        finally:
            self.train(was_training)

    def _answer(self, video: _VideoInput, tokens: list[int], states: list[torch.Tensor], finished: bool,
                mode: str, visual: torch.Tensor) -> GroundedAnswer:
        raw = self.tokenizer.decode([t for t in tokens if t not in self.stop_token_ids], skip_special_tokens=False)
        answer = GroundedAnswer(text=clean_answer(raw), raw_text=raw, frame_indices=video.frame_indices,
                                llm_frame_indices=video.llm_indices)
        if not states:
            answer.reason = ("the answer contains no [SEG] token, so nothing was segmented"
                             + ("" if finished else " (generation stopped at max_new_tokens)"))
            return answer
        phrase = None
        if self.seg_adapter.heads:  # the answer's own tokens, one in front so a leading [SEG] has a position
            ids = torch.tensor([[self.processor.pad_token_id] + tokens], device=self.device)
            predicting = torch.zeros_like(ids, dtype=torch.bool)
            predicting[0, :-1] = ids[0, 1:] == self.seg_token_id
            phrase = self._phrase_embeddings(ids, predicting, self.language_model.embed(ids))
        where = {}
        if self.cfg.pixel_decoder.location_prompt:  # the readout's attention is only needed as SAM2's location prompt
            prompts, attention = self.seg_adapter(torch.stack(states), visual, phrase=phrase, with_attention=True)
            where = {"locations": self.seg_locations(attention, video.size),
                     "location_frames": nearest_llm_frames(video.frame_indices, video.llm_indices)}
        else:
            prompts = self.seg_adapter(torch.stack(states), visual, phrase=phrase)
        with self._sam_autocast():
            masks = self.pixel_decoder.predict_video(video.sam_stream(), prompts, out_size=video.size, mode=mode,
                                                     **where)
        phrases = seg_phrases(raw)
        phrases += [""] * (len(states) - len(phrases))
        answer.objects = [GroundedObject(phrase=ph, masks=m.numpy()) for ph, m in zip(phrases, masks)]
        return answer

    def chat(self, video, prompt: str | None = None, *, max_new_tokens: int = 256, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, mode: str = "temporal", use_cache: bool = True,
             generator: torch.Generator | None = None) -> GroundedAnswer:
        """Answer ``prompt`` about ``video`` (path, ``vglamm.Video`` or uint8 (T,H,W,3)) with a mask per phrase.

        ``prompt=None`` asks the paper's grounded-caption question. Masks cover every frame of the video.
        """
        return self.chat_batch([video], [prompt], max_new_tokens=max_new_tokens, do_sample=do_sample,
                               temperature=temperature, top_p=top_p, mode=mode, use_cache=use_cache,
                               generator=generator)[0]

    def segment_batch(self, videos: Sequence[Any], expressions: Sequence[str], *, mode: str = "temporal",
                      max_new_tokens: int = 32) -> list[np.ndarray]:
        """(T,H,W) bool masks of each expression (the first [SEG] of the referring answer)."""
        if len(videos) != len(expressions):
            raise ConfigError(f"got {len(videos)} videos but {len(expressions)} expressions")
        answers = self.chat_batch(videos, [referring_prompt(e) for e in expressions], mode=mode,
                                  max_new_tokens=max_new_tokens)
        out = []
        for expr, ans in zip(expressions, answers):
            if not ans.objects:
                raise NoTargetFoundError(f"the model did not ground {expr!r} (answer: {ans.text!r}); "
                                         "try rephrasing the expression")
            out.append(ans.objects[0].masks)
        return out

    def segment(self, video, expression: str, *, mode: str = "temporal", max_new_tokens: int = 32) -> np.ndarray:
        """(T,H,W) bool masks of ``expression`` on every frame; raises NoTargetFoundError if it is not grounded."""
        return self.segment_batch([video], [expression], mode=mode, max_new_tokens=max_new_tokens)[0]

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors``, ``config.json`` and the tokenizer into ``directory`` atomically
        (everything goes to a temporary folder beside it, renamed on success)."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            save_model(self, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "vglamm": "videoglamm"})
            (tmp / CONFIG_NAME).write_text(self.cfg.to_json())
            self.tokenizer.save_pretrained(tmp)
            replace_dir(tmp, directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def from_pretrained(cls, dir_or_name: str | os.PathLike = DEFAULT_MODEL, *, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "VideoGLaMM":
        """Load a model saved by :meth:`save_pretrained`: a folder, or a built-in short name (``"default"``).

        Only safetensors are read (never pickles). ``device=None`` picks CUDA when available.
        """
        from safetensors.torch import load_model
        from transformers import AutoTokenizer

        directory = resolve_model_path(dir_or_name)
        cfg = VideoGLaMMConfig.from_json_file(directory / CONFIG_NAME)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise MissingWeightsError(f"{directory} has no {WEIGHTS_NAME}; it is not a complete saved model "
                                      "(re-save it with VideoGLaMM.save_pretrained)")
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        for key in ("is_local", "local_files_only"):  # how it was loaded, not what it is: kept, a re-save would differ
            tokenizer.init_kwargs.pop(key, None)
        device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        # Pretrained components are not fetched: the skeleton is random and every weight comes from the file. It is
        # built in the requested dtype (a float32 skeleton of Phi-3-mini alone is 15 GB), SAM2 cast back to float32
        # before loading so its weights arrive at full precision.
        with torch.device(device), _default_dtype(torch_dtype):
            model = cls.from_config(cfg, load_components=False, tokenizer=tokenizer)
        model.to(device)  # a component that makes a tensor outside the device context (from numpy, say) joins it here
        if torch_dtype is not None:
            model.to_dtype(torch_dtype)
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
        if missing or unexpected:
            missing, unexpected = sorted(missing), sorted(unexpected)  # safetensors returns sets
            raise MissingWeightsError(f"{weights} does not match the model built from its config: "
                                      f"{len(missing)} missing (first {missing[:3]}), "
                                      f"{len(unexpected)} unexpected (first {unexpected[:3]})")
        return model.eval()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None):
    """Create floating-point tensors in ``dtype`` inside the block (no change for None)."""
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def builtin_models() -> dict[str, Path]:
    """Short names of the models shipped in ``vglamm/weights/<name>/``."""
    spec = importlib.util.find_spec("vglamm")
    root = Path(spec.origin).parent / "weights"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CONFIG_NAME).is_file()}


def resolve_model_path(dir_or_name: str | os.PathLike) -> Path:
    """A saved-model folder from a path or a built-in short name; MissingWeightsError says what to do."""
    path = Path(dir_or_name)
    if (path / CONFIG_NAME).is_file():
        return path
    if path.exists():
        raise MissingWeightsError(f"{path} exists but has no {CONFIG_NAME}; it is not a saved VideoGLaMM model")
    builtins = builtin_models()
    if str(dir_or_name) in builtins:
        return builtins[str(dir_or_name)]
    if str(dir_or_name) == DEFAULT_MODEL:
        raise MissingWeightsError(
            "the default model is not installed (vglamm/weights/default/ is missing). Reinstall vglamm from a "
            "release that ships it, train one with `vglamm train` and pass its folder with --model, or pass the "
            "folder of any model saved with VideoGLaMM.save_pretrained.")
    raise MissingWeightsError(f"no model folder or built-in model named {str(dir_or_name)!r}; built-in: "
                              f"{sorted(builtins) or 'none installed'}. Pass a folder written by save_pretrained.")


def load_default_model(*, torch_dtype: torch.dtype | None = None, device=None) -> VideoGLaMM:
    """The demonstration model shipped in ``vglamm/weights/default``."""
    return VideoGLaMM.from_pretrained(DEFAULT_MODEL, torch_dtype=torch_dtype, device=device)
