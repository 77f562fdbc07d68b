"""``editor="auto"``: read the prompt; a plain request maps to a no-weights editor, anything else to diffusion."""

from __future__ import annotations

import re

from editing.colors import find_color_name
from vglamm.errors import ConfigError

# Order matters: "blur the background" is a background edit, not a redaction of the target.
_RULES: list[tuple[str, str, dict]] = [
    (r"\b(background|backdrop|surroundings|everything else|rest of (the )?(frame|image|video|scene))\b", "background", {}),
    (r"\b(pixelate|pixelize|pixellate|mosaic)\b", "pixelate", {}),
    (r"\b(blur|blurred|redact|anonymi[sz]e|censor|obscure|hide)\b", "blur", {}),
    (r"\b(remove|erase|delete|get rid of|take out|make (it|them) disappear|inpaint it out)\b", "remove", {}),
    (r"\b(highlight|spotlight|outline|emphasi[sz]e)\b", "highlight", {}),
]
# Recolouring is plain only when the prompt is essentially "<verb> ... <colour>", not "a blue dragon".
_RECOLOR = re.compile(r"\b(make|turn|paint|color|colour|recolou?r|change|dye|repaint|set)\b")
_GENERATIVE_HINTS = re.compile(r"\b(into an?|replace (it|the \w+) with|as an?|wearing|like an?|add)\b")


def choose_editor(prompt: str | None) -> tuple[str, dict]:
    """(editor name, options) for ``prompt``; "diffusion" when no no-weights editor plainly fits."""
    p = (prompt or "").lower().strip()
    for pattern, name, opts in _RULES:
        if re.search(pattern, p):
            if name == "background" and not re.search(r"\b(blur|replace|remove|transparent|cut|color|colour|make|turn|"
                                                      r"green screen|black|white|matte)\b", p):
                continue
            return name, dict(opts)
    colour = find_color_name(p)
    if colour and _RECOLOR.search(p) and not _GENERATIVE_HINTS.search(p) and len(p.split()) <= 8:
        return "recolor", {"color": colour}
    return "diffusion", {}


def resolve_auto(prompt: str | None, pipeline) -> tuple[str, dict]:
    """Like :func:`choose_editor`, but a generative prompt with no pipeline is a ConfigError, never a no-op."""
    name, opts = choose_editor(prompt)
    if name == "diffusion" and pipeline is None:
        raise ConfigError(f"the prompt {prompt!r} needs a generative editor, and no diffusion pipeline is configured. "
                          "Pass pipeline='Wan-AI/Wan2.1-VACE-1.3B-diffusers' (or a local directory / a loaded "
                          "WanVACEPipeline), or use a no-weights editor: editor='recolor'|'blur'|'pixelate'|'remove'|"
                          "'background'|'highlight'.")
    return name, opts
