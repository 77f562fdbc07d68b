"""The editor registry: ``@register_editor("name")`` plugs an editor in without touching ``edit_video``.

An editor is a function ``fn(frames, masks, prompt, options) -> frames`` where ``frames`` is (T,H,W,3) uint8,
``masks`` a :class:`~editing.conditioning.ConditionedMasks`, ``prompt`` the user's text (may be None) and
``options`` an instance of the editor's options dataclass. It returns edited frames of the same shape
(or RGBA), or ``(frames, alpha)`` to override the blend weights; either way the flow composites so that
pixels outside the edit region stay the source's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from vglamm.errors import ConfigError


@dataclass
class EditorSpec:
    name: str
    fn: Callable
    options_cls: type | None = None
    region: str = "inside"          # "inside": edits the target; "outside": edits everything but the target
    generative: bool = False        # needs a diffusion pipeline (weights)
    doc: str = ""

    def make_options(self, options: dict[str, Any] | Any | None):
        """Build the options dataclass from a dict, naming the valid fields when one is unknown."""
        if self.options_cls is None:
            if options:
                raise ConfigError(f"editor {self.name!r} takes no options; got {sorted(options)}.")
            return None
        if isinstance(options, self.options_cls):
            return options
        options = dict(options or {})
        valid = {f.name for f in dataclasses.fields(self.options_cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for editor {self.name!r}; valid options: {sorted(valid)}.")
        return self.options_cls(**options)


_EDITORS: dict[str, EditorSpec] = {}


def register_editor(name: str, *, options: type | None = None, region: str = "inside", generative: bool = False):
    """Decorator registering ``fn`` as the editor ``name`` (see module docstring for the signature)."""
    if region not in ("inside", "outside"):
        raise ConfigError(f"region must be 'inside' or 'outside', got {region!r}")

    def deco(fn: Callable) -> Callable:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _EDITORS[name] = EditorSpec(name, fn, options, region, generative, doc)
        return fn

    return deco


def _load_builtin() -> None:
    # Importing the modules runs their @register_editor decorators.
    from editing.editors import background, diffusion, highlight, recolor, redact, remove  # noqa: F401


def available_editors() -> list[str]:
    """Names of the registered editors, plus "auto"."""
    _load_builtin()
    return sorted(_EDITORS) + ["auto"]


def get_editor(name: str) -> EditorSpec:
    """The registered editor ``name``; ConfigError listing the choices when there is none."""
    _load_builtin()
    if name not in _EDITORS:
        raise ConfigError(f"unknown editor {name!r}; choose one of {available_editors()} "
                          "or register your own with @editing.register_editor(name).")
    return _EDITORS[name]
