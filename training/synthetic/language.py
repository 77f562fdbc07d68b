"""Language for synthetic clips: a unique noun phrase per object, grounded captions, referring expressions.

Every expression is a query over object attributes (category, colour, size, direction, stops, static); it is
kept only when exactly one object in the clip satisfies it, so no expression is ambiguous by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .world import CATEGORIES, PALETTE, SIZE_SCALE, Scene, SceneObject

_VERB = {  # present participle used in motion expressions ("the car driving left")
    "car": "driving", "truck": "driving", "ball": "rolling", "box": "sliding", "person": "walking",
}
_VERB_3RD = {"car": "drives", "truck": "drives", "ball": "rolls", "box": "slides", "person": "walks"}
_STILL = {"car": "is parked", "truck": "is parked", "ball": "lies still", "box": "stays in place",
          "person": "stands still"}
_DIR_WORDS = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}


ATTRIBUTES = ("colour", "category", "size")  # what a name can state (stage 0 embeds each)


def attributes(obj: SceneObject) -> dict:
    """The facts expressions may refer to."""
    return {"category": obj.category, "colour": obj.colour, "size": obj.size, "direction": obj.direction,
            "stops": obj.stops, "static": not obj.moves}


def matching(scene: Scene, query: dict) -> list[int]:
    """Ids of the objects whose attributes agree with every key of ``query``."""
    return [o.obj_id for o in scene.objects if all(attributes(o)[k] == v for k, v in query.items())]


@dataclass(frozen=True)
class Expression:
    text: str
    obj_ids: tuple[int, ...]
    kind: str  # "attribute" | "motion"
    query: dict = field(hash=False, compare=False, default_factory=dict)

    @property
    def stated(self) -> dict:
        """The colour, category and size the expression states ("the car moving left": category)."""
        return {k: self.query[k] for k in ATTRIBUTES if k in self.query}


def _attribute_candidates(o: SceneObject) -> list[tuple[str, dict]]:
    c, col, s = o.category, o.colour, o.size
    return [
        (f"the {col} {c}", {"colour": col, "category": c}),
        (f"the {s} {c}", {"size": s, "category": c}),
        (f"the {s} {col} {c}", {"size": s, "colour": col, "category": c}),
        (f"the {col} object", {"colour": col}),
        (f"the {c}", {"category": c}),
    ]


def _motion_candidates(o: SceneObject) -> list[tuple[str, dict]]:
    c = o.category
    if not o.moves:
        return [
            (f"the {c} that does not move", {"category": c, "static": True}),
            ("the object that stays still", {"static": True}),
            (f"the static {c}", {"category": c, "static": True}),
        ]
    d = o.direction
    out = [
        (f"the object moving {d}", {"direction": d}),
        (f"the {c} moving {d}", {"category": c, "direction": d}),
        (f"the {c} {_VERB[c]} {d}", {"category": c, "direction": d}),
    ]
    if o.stops:
        out += [
            (f"the {c} that stops", {"category": c, "stops": True}),
            ("the object that stops", {"stops": True}),
            (f"the {c} that moves {d} and then stops", {"category": c, "direction": d, "stops": True}),
        ]
    else:
        out += [
            (f"the {c} that keeps moving {d}", {"category": c, "direction": d, "stops": False}),
            ("the object that keeps moving " + d, {"direction": d, "stops": False}),
        ]
    return out


def referring_expressions(scene: Scene, rng: np.random.Generator, per_object: int = 2) -> list[Expression]:
    """Up to ``per_object`` attribute and ``per_object`` motion expressions per object, each matching exactly one."""
    out: list[Expression] = []
    for o in scene.objects:
        for kind, candidates in (("attribute", _attribute_candidates(o)), ("motion", _motion_candidates(o))):
            unique = [(text, q) for text, q in candidates if matching(scene, q) == [o.obj_id]]
            if not unique:
                continue
            pick = rng.permutation(len(unique))[:per_object]
            out.extend(Expression(unique[i][0], (o.obj_id,), kind, unique[i][1]) for i in sorted(pick))
    return out


def full_name(o: SceneObject) -> str:
    """``the large red car``: size, colour and category, which no other object of its clip shares."""
    return f"the {o.size} {o.colour} {o.category}"


def short_name(scene: Scene, o: SceneObject, stated: dict | None = None) -> str:
    """``the red car``; ``the large red car`` when the size is ``stated`` or needed to single ``o`` out."""
    sized = "size" in (stated or {}) or matching(scene, {"colour": o.colour, "category": o.category}) != [o.obj_id]
    return full_name(o) if sized else f"the {o.colour} {o.category}"


def referred_name(scene: Scene, obj_ids, query: dict | None = None) -> str:
    """What an ``answers: name`` answer says for an expression: its objects' full names joined by "and"; with the
    expression's ``query``, their short names instead (``answers: short_name``)."""
    by_id = {o.obj_id: o for o in scene.objects}
    if query is None:
        return " and ".join(full_name(by_id[i]) for i in obj_ids)
    return " and ".join(short_name(scene, by_id[i], query) for i in obj_ids)


def stated_attributes(phrase: str) -> dict | None:
    """The attributes a name phrase states: ``the large red car`` -> size, colour and category; ``a red object``
    -> colour. None if the phrase is not a name (no leading article, a word that is no attribute, one stated twice,
    or nothing stated)."""
    words = phrase.split()
    generic = words[-1:] == ["object"]  # "the red object": states no category
    if generic:
        words = words[:-1]
    if len(words) < 2 or words[0] not in ("the", "a", "an"):
        return None
    query: dict = {}
    for w in words[1:]:
        key = "size" if w in SIZE_SCALE else "colour" if w in PALETTE else "category" if w in CATEGORIES else None
        if key is None or key in query:
            return None
        query[key] = w
    return None if generic and "category" in query else query


def named_objects(scene: Scene, phrase: str) -> list[int] | None:
    """The ids a name answer's phrase picks out ("the large red car and the blue ball", "the red object"): each
    ``the ...`` part must state attributes (``stated_attributes``) that match exactly one object; None if any part
    does not."""
    ids = []
    for part in phrase.strip().split(" and "):
        query = stated_attributes(part) if part.startswith("the ") else None
        found = matching(scene, query) if query else []
        if len(found) != 1:
            return None
        ids.append(found[0])
    return ids


def _indefinite(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def object_phrase(scene: Scene, o: SceneObject, rng: np.random.Generator) -> str:
    """A short indefinite noun phrase naming ``o`` and no other object in the clip ("a red car")."""
    c, col, s = o.category, o.colour, o.size
    options = [(_indefinite(f"{col} {c}"), {"colour": col, "category": c}),
               (_indefinite(f"{s} {col} {c}"), {"size": s, "colour": col, "category": c})]
    unique = [text for text, q in options if matching(scene, q) == [o.obj_id]]
    # Identities are distinct by construction, so the full phrase is always unique; sometimes use it anyway for variety.
    if len(unique) > 1 and rng.random() < 0.3:
        return unique[1]
    return unique[0]


def _motion_clause(o: SceneObject) -> str:
    if not o.moves:
        return _STILL[o.category]
    clause = f"{_VERB_3RD[o.category]} {_DIR_WORDS[o.direction]}"
    return clause + " and then stops" if o.stops else clause


@dataclass
class GroundedCaption:
    """A caption whose noun phrases are tied to objects; phrases appear in ``obj_ids`` order."""

    text: str  # plain caption
    spans: list[tuple[int, int]]  # character [start, end) of each phrase in ``text``
    obj_ids: list[int]  # the object each phrase names

    @property
    def phrases(self) -> list[str]:
        return [self.text[a:b] for a, b in self.spans]

    def grounded(self) -> str:
        """``... <p> a red car </p> [SEG] ...``: the form the model writes."""
        out, pos = [], 0
        for a, b in self.spans:
            out.append(self.text[pos:a])
            out.append(f"<p> {self.text[a:b]} </p> [SEG]")
            pos = b
        out.append(self.text[pos:])
        return "".join(out)

    def bracketed(self) -> str:
        """``... [a red car](1) ...``: the MeViS/VidSTG-GCG caption form."""
        out, pos = [], 0
        for (a, b), oid in zip(self.spans, self.obj_ids):
            out.append(self.text[pos:a])
            out.append(f"[{self.text[a:b]}]({oid})")
            pos = b
        out.append(self.text[pos:])
        return "".join(out)

    def word_positions(self) -> list[list[int]]:
        """Indices (in ``text.split()``) of each phrase's words."""
        starts, pos = [], 0
        for word in self.text.split():
            pos = self.text.index(word, pos)
            starts.append(pos)
            pos += len(word)
        return [[i for i, s in enumerate(starts) if a <= s < b] for a, b in self.spans]


def grounded_caption(scene: Scene, rng: np.random.Generator) -> GroundedCaption:
    """One or two sentences mentioning every object once, left to right by where it starts."""
    objs = sorted(scene.objects, key=lambda o: (o.start[0], o.obj_id))
    clauses = [(object_phrase(scene, o, rng), _motion_clause(o), o.obj_id) for o in objs]
    bg = scene.background.describe()
    opener = (f"On {bg}, " if scene.background.kind == "road" else
              str(rng.choice([f"In front of {bg}, ", f"Against {bg}, ", "In this video, ", "In the clip, "])))
    text, spans, ids = opener, [], []

    def add(phrase: str, rest: str, oid: int) -> None:
        nonlocal text
        spans.append((len(text), len(text) + len(phrase)))
        ids.append(oid)
        text += phrase + " " + rest

    # Two clauses per sentence ("A ..., while B ..."), a new sentence after each pair.
    for i, (phrase, rest, oid) in enumerate(clauses):
        if i > 0:
            text += " while " if i % 2 == 1 else ". Meanwhile, "
        add(phrase, rest, oid)
    text += "."
    return GroundedCaption(text=text, spans=spans, obj_ids=ids)
