"""Turn a model's answer into a grounded caption: ``[phrase](ids)`` marks, ``{obj_N}`` tags, JSON wrappers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from vglamm.errors import DataFormatError


class AnswerParseError(DataFormatError):
    """A model answer does not follow the requested format; the item is reported as failed, the batch goes on."""


@dataclass(frozen=True)
class GroundedPhrase:
    text: str
    obj_ids: tuple[int, ...]


@dataclass
class GroundedCaption:
    """``marked`` uses ``[phrase](ids)`` (what the GCG writer reads); ``answer`` uses ``<p> phrase </p> [SEG]``."""

    marked: str
    answer: str
    plain: str
    phrases: list[GroundedPhrase]


_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.S)
_BRACKET = re.compile(r"\[([^\[\]]+)\]\(([^()]*)\)")
_OBJ_TAGS = re.compile(r"(?:\s*\{obj_?(\w+)\})+")
_OBJ_TAG = re.compile(r"\{obj_?(\w+)\}")
# words that end a noun phrase when walking back from an {obj_N} tag ("a man in [a red shirt]{obj_1}")
_STOP = set("""a an the this that these those his her its their our your my and or but of in on at to from with by
for into onto over under near behind while as is are was were be being been who which then than""".split())
_MAX_TAG_WORDS = 4


def extract_text(answer: str, key: str = "caption") -> str:
    """The caption inside an answer: JSON ``{key: ...}`` (optionally in a code fence), or plain text.

    Plain text is accepted for servers without a JSON mode; text that starts like JSON but does not parse,
    or JSON without ``key``, is an :class:`AnswerParseError`.
    """
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if text.startswith("{"):  # not "[": a caption may start with "[A man](1)"
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise AnswerParseError(f"answer looks like JSON but does not parse ({e.msg}): {answer[:120]!r}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get(key), str):
            raise AnswerParseError(f"JSON answer has no string field '{key}': {answer[:120]!r}")
        text = doc[key].strip()
    if not text:
        raise AnswerParseError("the answer is empty")
    return text


def _ids(raw: str, where: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,\s]+", raw.strip()) if p]
    try:
        ids = tuple(int(re.sub(r"^(?:obj_?|id\s*)", "", p)) for p in parts)
    except ValueError:
        raise AnswerParseError(f"object ids '({raw})' are not integers in {where!r}") from None
    if not ids:
        raise AnswerParseError(f"empty object id list in {where!r}")
    return tuple(dict.fromkeys(ids))


def _tags_to_brackets(text: str) -> str:
    """Rewrite ``the red car {obj_2}`` as ``the [red car](2)``: the phrase is the words before the tag, back to
    a determiner, preposition, conjunction or punctuation (at most four words)."""
    out, pos = [], 0
    for m in _OBJ_TAGS.finditer(text):
        ids = _OBJ_TAG.findall(m.group(0))
        before = text[pos:m.start()]
        words = list(re.finditer(r"[\w'-]+", before))
        start = None
        for w in reversed(words):
            gap = before[w.end(): start if start is not None else len(before)]
            if re.search(r"[^\s]", gap) or w.group(0).lower() in _STOP:
                break
            start = w.start()
            if len(before[start:].split()) >= _MAX_TAG_WORDS:
                break
        if start is None:
            raise AnswerParseError(f"tag {m.group(0).strip()} follows no word: {text[:120]!r}")
        phrase = before[start:].rstrip()
        out.append(before[:start] + f"[{phrase}]({', '.join(ids)})")
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def parse_grounded_caption(answer: str, key: str = "caption") -> GroundedCaption:
    """Parse a model answer into a :class:`GroundedCaption`; raises :class:`AnswerParseError` on bad markup."""
    text = extract_text(answer, key)
    text = _tags_to_brackets(text)
    phrases: list[GroundedPhrase] = []
    marked, answer_parts, plain_parts, pos = [], [], [], 0
    for m in _BRACKET.finditer(text):
        phrase = " ".join(m.group(1).split())
        ids = _ids(m.group(2), m.group(0))
        if not phrase:
            raise AnswerParseError(f"empty phrase in {m.group(0)!r}")
        gap = text[pos:m.start()]
        marked += [gap, f"[{phrase}]({', '.join(map(str, ids))})"]
        answer_parts += [gap, f"<p> {phrase} </p> [SEG]"]
        plain_parts += [gap, phrase]
        phrases.append(GroundedPhrase(phrase, ids))
        pos = m.end()
    for parts in (marked, answer_parts, plain_parts):
        parts.append(text[pos:])
    rest = "".join(plain_parts)
    if re.search(r"\]\s*\(|\{obj", rest) or rest.count("[") != rest.count("]"):
        raise AnswerParseError(f"unbalanced or malformed object markup in {text[:160]!r}")
    return GroundedCaption("".join(marked).strip(), " ".join("".join(answer_parts).split()),
                           " ".join(rest.split()), phrases)
