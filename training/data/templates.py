"""Question and answer templates (paraphrases of the reference's; the choice per sample is seeded)."""

from __future__ import annotations

import numpy as np

GCG_QUESTIONS = (
    "Could you please give me a detailed description of the video? Please respond with interleaved "
    "segmentation masks for the corresponding parts of the answer.",
    "Can you provide a thorough description of this video? Please output with interleaved segmentation masks "
    "for the corresponding phrases.",
    "Please describe in detail the contents of the video. Please respond with interleaved segmentation masks "
    "for the corresponding parts of the answer.",
    "Could you give a comprehensive explanation of what can be found in this video? Please output with "
    "interleaved segmentation masks for the corresponding phrases.",
    "Could you give me an elaborate explanation of this video? Please respond with interleaved segmentation "
    "masks for the corresponding phrases.",
    "Could you provide me with a detailed analysis of this video? Please output with interleaved segmentation "
    "masks for the corresponding parts of the answer.",
)

REFER_VIDEO_QUESTIONS = (
    "What is {exp} in this video? Please respond with segmentation masks.",
    "Can you segment {exp} in this video?",
    "Please segment {exp} in this video.",
    "Where is {exp} in this video? Please respond with segmentation masks.",
)

REFER_IMAGE_QUESTIONS = (
    "What is {exp} in this image? Please respond with segmentation mask.",
    "Can you segment {exp} in this image?",
    "Please segment {exp} in this image.",
    "Where is {exp} in this image? Please respond with segmentation mask.",
)

SEM_SEG_QUESTIONS = (
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "Can you segment the {class_name} in this image?",
    "Please segment the {class_name} in this image.",
)

REFER_ANSWERS = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)

# Referring answers that name the expression the way GCG answers name phrases. Repeating the phrase makes the
# answer tokens before [SEG] depend on the question, so the language loss itself trains attention from the answer
# back to the expression (with "It is [SEG]." only the mask loss, through [SEG], can teach that).
REFER_PHRASE_ANSWERS = (
    "<p> {exp} </p> [SEG].",
    "Sure, <p> {exp} </p> [SEG].",
    "Sure, it is <p> {exp} </p> [SEG].",
)


def pick(templates: tuple[str, ...], rng: np.random.Generator | None) -> str:
    """One template: the first when ``rng`` is None (deterministic evaluation), else a seeded draw."""
    return templates[0] if rng is None else templates[int(rng.integers(len(templates)))]
