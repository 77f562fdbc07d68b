"""The one record type every data source produces and the model's processor consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SEG_TOKEN = "[SEG]"


@dataclass
class GroundedSample:
    """One training or evaluation example: frames, a conversation, and a mask per ``[SEG]``.

    frames:        (T, H, W, 3) uint8, the frames given to the model (already sampled).
    conversation:  chat messages ``{"role": "user" | "assistant", "content": str}``, starting with a user turn.
                   Grounded answers use ``<p> phrase </p> [SEG]``; the video placeholder is *not* written here,
                   the processor puts the visual tokens before the first user message.
    masks:         (N, T, H, W) bool, one per ``[SEG]`` in order of appearance over all assistant turns
                   (N == 0 for conversation-only data). Frames where an object is absent are all False.
    frame_indices: index in the source video of each of the T frames.
    source:        dataset name and record id, for logs and error messages.
    """

    frames: np.ndarray
    conversation: list[dict]
    masks: np.ndarray
    frame_indices: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def num_seg(self) -> int:
        return sum(m["content"].count(SEG_TOKEN) for m in self.conversation if m["role"] == "assistant")
