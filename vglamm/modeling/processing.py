"""Turning GroundedSamples into model batches: chat template, [SEG] labels, pixels for each encoder, target masks.

Sequence layout of one sample (Phi-3 template; ``<video>`` is one placeholder id the model expands into
``[CLIP tokens of every frame][InternVideo2 tokens of every frame]``)::

    <|system|>\\n{system}<|end|>\\n<|user|>\\n<video>\\n{question}<|end|>\\n<|assistant|>\\n{answer}<|end|>...

Labels are -100 everywhere except the assistant answers (their ``[SEG]`` and closing ``<|end|>`` included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vglamm.errors import DataFormatError
from vglamm.io.sampling import uniform_indices
from vglamm.modeling.configuration import IGNORE_INDEX, VIDEO_PLACEHOLDER_ID, VideoGLaMMConfig
from vglamm.modeling.image_encoder import clip_preprocess
from vglamm.modeling.language_model import END_OF_TURN
from vglamm.modeling.pixel_decoder import preprocess_frames as sam_preprocess
from vglamm.modeling.video_encoder import preprocess_frames as video_preprocess
from vglamm.sample import SEG_TOKEN, GroundedSample


GCG_PROMPT = ("Could you please give me a detailed description of the video? Please respond with interleaved "
              "segmentation masks for the corresponding parts of the answer.")
REFERRING_TEMPLATE = "What is {exp} in this video? Please respond with segmentation masks."


def gcg_prompt() -> str:
    """The reference's grounded-caption question."""
    return GCG_PROMPT


def referring_prompt(expression: str) -> str:
    """The reference's referring-segmentation question for ``expression`` (MeViS / Ref-YTVOS / Ref-DAVIS)."""
    return REFERRING_TEMPLATE.format(exp=expression.strip().rstrip("?.").strip())


_TAG = re.compile(r"<[^<>]*>")
_PHRASE = re.compile(r"<p>(.*?)</p>", re.S)


def clean_answer(raw: str) -> str:
    """Answer text without tags (``<p>``, ``<|end|>`` ...) and ``[SEG]``, whitespace tidied."""
    text = _TAG.sub("", raw.replace(SEG_TOKEN, ""))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" ([.,;:!?])", r"\1", text)
    return text.strip()


def seg_phrases(raw: str) -> list[str]:
    """The phrase of each ``[SEG]`` in order: the last ``<p>...</p>`` before it, else the text since the last
    [SEG] (answers like "It is [SEG]." have no tags)."""
    phrases, start = [], 0
    for m in re.finditer(re.escape(SEG_TOKEN), raw):
        before = raw[start:m.start()]
        tagged = _PHRASE.findall(before)
        phrases.append(tagged[-1].strip() if tagged else clean_answer(before))
        start = m.end()
    return phrases


def phrase_token_weights(ids: torch.Tensor, predicting: torch.Tensor, seg_id: int, open_id: int,
                         close_id: int) -> torch.Tensor:
    """(N, L) averaging weights over each ``[SEG]``'s phrase tokens, the ones inside the last ``<p> ... </p>`` since
    the previous ``[SEG]``; a row of zeros for a ``[SEG]`` without one. ``ids`` (B, L) token ids and ``predicting``
    (B, L) bool, True before each ``[SEG]``; rows come in the order of ``predicting.nonzero()``."""
    rows = []
    for b, k in predicting.nonzero().tolist():
        row = ids[b, :k + 1].tolist()
        weights = torch.zeros(ids.shape[1])
        close = next((j for j in range(k, -1, -1) if row[j] in (close_id, seg_id)), None)
        if close is not None and row[close] == close_id:
            start = next((j for j in range(close - 1, -1, -1) if row[j] in (open_id, seg_id)), None)
            if start is not None and row[start] == open_id and close - start > 1:
                weights[start + 1:close] = 1.0 / (close - start - 1)
        rows.append(weights)
    return torch.stack(rows) if rows else torch.zeros(0, ids.shape[1])


# ------------------------------------------------------------------------------------------- pixels
def llm_frame_indices(num_source: int, num_frames: int) -> np.ndarray:
    """Indices of the frames the LLM sees: ``num_frames`` uniform, the last repeated when the clip is shorter."""
    return uniform_indices(num_source, num_frames)


def nearest_llm_frames(frame_indices, llm_indices) -> np.ndarray:
    """For each frame (by source index), the position among the LLM's frames (source indices) of the closest one."""
    frames, llm = np.asarray(frame_indices), np.asarray(llm_indices)
    return np.abs(frames[:, None] - llm[None, :]).argmin(1)


def clip_llm_frames(num_source: int, num_frames: int) -> torch.Tensor:
    """(num_source,) for a clip whose every frame goes to SAM2: the position of the LLM frame closest to each."""
    return torch.as_tensor(nearest_llm_frames(np.arange(num_source), llm_frame_indices(num_source, num_frames)))


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N,T,H,W) bool → (N,T,h,w) float in {0,1} (area-weighted resize, then thresholded at 0.5)."""
    n, t, h, w = masks.shape
    if (h, w) == tuple(size):
        return masks.float()
    x = F.interpolate(masks.reshape(n * t, 1, h, w).float(), size=size, mode="bilinear", align_corners=False,
                      antialias=True)
    return (x > 0.5).float().reshape(n, t, *size)


# ------------------------------------------------------------------------------------------- processor
@dataclass
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]


class VideoGLaMMProcessor:
    """Builds model batches from :class:`GroundedSample` lists, and prompts for inference.

    ``__call__(samples) -> dict`` with
      input_ids (B,L) long (one ``VIDEO_PLACEHOLDER_ID`` per row, right-padded), attention_mask (B,L),
      labels (B,L), clip_pixels (B,N,3,S,S), video_pixels (B,N,3,s,s) (N = cfg.num_frames; None when
      ``cfg.use_video_encoder`` is False),
      sam_pixels [ (T_i,3,S',S') ], target_masks [ (K_i,T_i,h,w) float ], num_seg (B,), sources [str],
      sam_llm_frames [ (T_i,) ]: the LLM frame closest to each SAM2 frame, frame_sizes [ (H_i, W_i) ].
    """

    def __init__(self, tokenizer, cfg: VideoGLaMMConfig):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seg_token_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        if self.seg_token_id is None or self.seg_token_id == tokenizer.unk_token_id:
            raise DataFormatError("the tokenizer has no [SEG] token; build it with language_model.build_tokenizer")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.bos = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None else []

    # -------------------------------------------------------------- text
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode_conversation(self, conversation: Sequence[dict], add_generation_prompt: bool = False) -> EncodedConversation:
        """Token ids + labels of a conversation in the chat template, the video placeholder in the first user turn.

        With ``add_generation_prompt`` the ids end with the assistant header (inference prompt).
        """
        if not conversation or conversation[0].get("role") != "user":
            raise DataFormatError("a conversation must start with a user message")
        ids = list(self.bos) + self._ids(f"<|system|>\n{self.cfg.language_model.system_prompt}{END_OF_TURN}")
        labels = [IGNORE_INDEX] * len(ids)
        first_user = True
        for msg in conversation:
            role, content = msg.get("role"), msg.get("content", "")
            if role == "user":
                head = self._ids("\n<|user|>\n")
                if first_user:
                    head += [VIDEO_PLACEHOLDER_ID] + self._ids("\n")
                    first_user = False
                part = head + self._ids(f"{content}{END_OF_TURN}") + self._ids("\n<|assistant|>\n")
                ids += part
                labels += [IGNORE_INDEX] * len(part)
            elif role == "assistant":
                part = self._ids(content) + self._ids(END_OF_TURN)
                ids += part
                labels += part
            else:
                raise DataFormatError(f"unknown role {role!r} in conversation (use 'user' / 'assistant')")
        if conversation[-1]["role"] == "assistant" and add_generation_prompt:
            raise DataFormatError("add_generation_prompt needs a conversation that ends with a user message")
        return EncodedConversation(ids, labels)

    def prompt_ids(self, prompt: str) -> list[int]:
        """Inference prompt for one question (ends with the assistant header)."""
        return self.encode_conversation([{"role": "user", "content": prompt}], add_generation_prompt=True).input_ids

    # -------------------------------------------------------------- pixels
    def llm_pixels(self, frames: np.ndarray | torch.Tensor,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (T,H,W,3) → (clip (N,3,S,S), video (N,3,s,s) or None without a video encoder) for the
        ``cfg.num_frames`` LLM frames, resized and normalised on ``device`` (default: the CPU)."""
        frames = torch.as_tensor(np.asarray(frames))
        idx = torch.as_tensor(llm_frame_indices(len(frames), self.cfg.num_frames))
        picked = frames[idx].to(device)  # only the uint8 frames used cross to the device
        ic = self.cfg.image_encoder
        video = video_preprocess(picked, self.cfg.video_encoder.img_size) if self.cfg.use_video_encoder else None
        return clip_preprocess(picked, ic.crop_size, ic.mean, ic.std), video

    def sam_pixels(self, frames: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        return sam_preprocess(torch.as_tensor(np.asarray(frames)).to(device), self.cfg.pixel_decoder.image_size)

    def target_masks(self, masks: np.ndarray) -> torch.Tensor:
        m = torch.as_tensor(np.asarray(masks)).bool()
        if self.cfg.mask_target == "lowres":
            s = self.cfg.pixel_decoder.image_size // 4
            return resize_masks(m, (s, s))
        return m.float()

    # -------------------------------------------------------------- batch
    def __call__(self, samples: Sequence[GroundedSample], device: torch.device | str | None = None) -> dict:
        """``device``: where the frames are resized and normalised and the pixel tensors are returned (a GPU does it
        in a fraction of the host's time); the rest stays on the CPU. Default: the CPU."""
        if not samples:
            raise DataFormatError("cannot build a batch from zero samples")
        rows, clip, video, sam, near, targets, num_seg, prompt_targets = [], [], [], [], [], [], [], []
        max_text = self.cfg.language_model.max_length - self.cfg.visual_tokens_per_video + 1
        for s in samples:
            frames = np.asarray(s.frames)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise DataFormatError(f"{s.source or 'sample'}: frames must be uint8 (T,H,W,3), got "
                                      f"{frames.shape} {frames.dtype}")
            enc = self.encode_conversation(s.conversation)
            ids, labels = enc.input_ids[:max_text], enc.labels[:max_text]
            n_seg = sum(1 for i, l in zip(ids, labels) if i == self.seg_token_id and l != IGNORE_INDEX)
            masks = np.asarray(s.masks) if s.masks is not None else np.zeros((0, *frames.shape[:3]), bool)
            if masks.ndim != 4 or masks.shape[1:] != frames.shape[:3]:
                raise DataFormatError(f"{s.source or 'sample'}: masks must be (N,T,H,W) matching frames "
                                      f"{frames.shape[:3]}, got {masks.shape}")
            if len(masks) < n_seg or (len(ids) == len(enc.input_ids) and len(masks) != n_seg):
                raise DataFormatError(f"{s.source or 'sample'}: {n_seg} [SEG] in the answers but {len(masks)} masks; "
                                      "give one mask per [SEG], in order")
            if self.cfg.max_seg_per_sample is not None:
                n_seg = min(n_seg, self.cfg.max_seg_per_sample)
                labels = _ignore_seg_after(ids, labels, self.seg_token_id, n_seg)
            rows.append((ids, labels))
            c, v = self.llm_pixels(frames, device)
            clip.append(c)
            video.append(v)
            sam.append(self.sam_pixels(frames, device))
            near.append(clip_llm_frames(len(frames), self.cfg.num_frames))
            targets.append(self.target_masks(masks[:n_seg]))
            num_seg.append(n_seg)
            prompt_targets.append(None if s.meta.get("prompt_targets") is None
                                  else np.asarray(s.meta["prompt_targets"], np.float32)[:n_seg])

        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels_t = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (ids, labels) in enumerate(rows):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            labels_t[i, :len(labels)] = torch.tensor(labels)
            attention[i, :len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels_t,
            "clip_pixels": torch.stack(clip),
            "video_pixels": torch.stack(video) if self.cfg.use_video_encoder else None,
            "sam_pixels": sam,
            "sam_llm_frames": near,
            "frame_sizes": [tuple(np.asarray(s.frames).shape[1:3]) for s in samples],
            "target_masks": targets,
            "num_seg": torch.tensor(num_seg, dtype=torch.long),
            "sources": [s.source for s in samples],
            "prompt_targets": _stack_prompt_targets(prompt_targets, num_seg),
        }


def _stack_prompt_targets(rows: list[np.ndarray | None], num_seg: list[int]) -> torch.Tensor | None:
    """Per-sample ``meta["prompt_targets"]`` (N_i, D) → one (sum N_i, D) tensor in [SEG] order, NaN rows where a
    sample gives none; None when no sample does."""
    given = [r for r in rows if r is not None]
    if not given:
        return None
    dim = given[0].shape[-1]
    out = []
    for r, n in zip(rows, num_seg):
        if r is not None and (r.ndim != 2 or r.shape != (n, dim)):
            raise DataFormatError(f"prompt_targets must be one ({dim},) row per [SEG] ({n}), got {r.shape}")
        out.append(np.full((n, dim), np.nan, np.float32) if r is None else r)
    return torch.from_numpy(np.concatenate(out))


def _ignore_seg_after(ids: list[int], labels: list[int], seg_id: int, keep: int) -> list[int]:
    """Labels where answer [SEG] tokens beyond the first ``keep`` are ignored (they have no mask target)."""
    out, seen = list(labels), 0
    for j, (i, l) in enumerate(zip(ids, labels)):
        if i == seg_id and l != IGNORE_INDEX:
            seen += 1
            if seen > keep:
                out[j] = IGNORE_INDEX
    return out
