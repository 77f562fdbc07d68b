"""Editors, one module each, registered by name (see ``registry``)."""

from editing.editors.registry import EditorSpec, available_editors, get_editor, register_editor

__all__ = ["EditorSpec", "available_editors", "get_editor", "register_editor"]
