"""Every prompt the annotation pipeline sends, in one file so they can be read and tuned together.

The marking conventions follow the paper's data generation: a grounded mention is written ``[phrase](3)`` (or
``[phrase](3, 5)`` for a phrase covering several objects); ``{obj_3}`` right after a noun is also accepted.
Answers are asked for as JSON ``{"caption": "..."}`` so chatty preambles do not leak into the caption.
"""

from __future__ import annotations

from typing import Iterable, Mapping

SYSTEM = (
    "You are a careful video annotator. You describe only what is visible, never guess identities or names, "
    "and follow the requested output format exactly."
)

MARKING_RULES = (
    "Mark every mention of an annotated object with square brackets and its id: write [noun phrase](id), "
    "e.g. \"[a man in a red jacket](1) throws [a ball](2) to [the dog](3)\". A phrase that refers to several "
    "objects lists all their ids: \"[two girls](4, 5)\". Use only the ids listed above; mention every object at "
    "least once; keep the phrase short (the object, not the whole clause)."
)

JSON_ANSWER = 'Answer with JSON only: {"caption": "<your caption>"}.'


def _object_lines(objects: Mapping[int, str]) -> str:
    return "\n".join(f"- object {oid}: {desc}" for oid, desc in sorted(objects.items()))


# ----------------------------------------------------------------------------------------------------------------
# Stream 1: videos with masks only (crops -> rough description -> refined description -> dense grounded caption)
# ----------------------------------------------------------------------------------------------------------------

def describe_object_crop(category: str | None) -> str:
    """Step 1: frames are crops around one object, in time order."""
    what = category or "object"
    return (
        f"These images are crops of the same {what} taken from consecutive moments of a video, in time order. "
        f"What does the {what} look like, and what is the {what} doing over time? "
        "Answer in one or two plain sentences, without mentioning the crops."
    )


def refine_object_description(obj_id: int, category: str | None, rough: str) -> str:
    """Step 2: full frames with this object's box drawn in red and labelled with its id."""
    what = category or "object"
    return (
        f"In these video frames the {what} with id {obj_id} is outlined by a red box labelled {obj_id}. "
        f"A first description of it, made from close-up crops, is: \"{rough.strip()}\"\n"
        "Correct and complete this description using the full frames: its appearance, its actions over time, and "
        "how it interacts with its surroundings. Describe only the boxed object, in at most three sentences. "
        + JSON_ANSWER.replace("caption", "description")
    )


def dense_caption_from_objects(objects: Mapping[int, str]) -> str:
    """Step 3: frames with every object's box drawn in its own colour and labelled with its id."""
    return (
        "In these video frames every annotated object is outlined by a coloured box labelled with its id. "
        "The objects are:\n" + _object_lines(objects) + "\n\n"
        "Write one dense caption of the whole video (two to five sentences) that tells what happens, in order, "
        "and how the objects interact. " + MARKING_RULES + " " + JSON_ANSWER
    )


# ----------------------------------------------------------------------------------------------------------------
# Stream 2: videos with boxes and a caption (video model caption + given caption -> LLM grounded caption)
# ----------------------------------------------------------------------------------------------------------------

def detailed_video_caption() -> str:
    """A video model describes the sampled frames."""
    return (
        "These are frames of one video, in time order. Describe the video in detail: the people, animals and "
        "objects, their appearance, what each of them does over time, and the setting. Plain prose, at most "
        "six sentences."
    )


def grounded_caption_from_caption(given_caption: str, detailed_caption: str, objects: Mapping[int, str]) -> str:
    """A text LLM merges the dataset's caption and the video model's caption into one grounded caption."""
    return (
        "You write grounded video captions.\n"
        f"Caption from the dataset (reliable, but short): \"{given_caption.strip()}\"\n"
        f"Detailed caption from a video model (richer, may contain mistakes): \"{detailed_caption.strip()}\"\n"
        "Annotated objects (id: category and where its box first appears, as fractions of the frame):\n"
        + _object_lines(objects) + "\n\n"
        "Write one dense caption of the video (two to five sentences) that agrees with the dataset caption and "
        "adds the reliable details of the detailed caption. " + MARKING_RULES + " " + JSON_ANSWER
    )


# ----------------------------------------------------------------------------------------------------------------
# Stream 3: videos with boxes and referring expressions (LLM turns expressions into a grounded caption)
# ----------------------------------------------------------------------------------------------------------------

def grounded_caption_from_expressions(expressions: Iterable[tuple[tuple[int, ...], str]],
                                      objects: Mapping[int, str]) -> str:
    """A text LLM combines referring expressions ``(object ids): expression`` into one grounded caption."""
    lines = "\n".join(f"- ({', '.join(map(str, ids))}): {text.strip()}" for ids, text in expressions)
    return (
        "You write grounded video captions. Annotated objects:\n" + _object_lines(objects) + "\n"
        "Referring expressions written by people, each with the ids of the objects it refers to:\n" + lines + "\n\n"
        "Combine them into one fluent dense caption of the video (two to five sentences) that keeps the facts of "
        "every expression. " + MARKING_RULES + " " + JSON_ANSWER
    )
