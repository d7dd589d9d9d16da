"""Reading operator arguments after Jinja rendering, shared by the operators.

Templated fields render to strings: ``None`` becomes ``"None"`` and a list becomes its JSON text.
"""

from __future__ import annotations

import json


def blank(value: object) -> bool:
    """Whether a (rendered) argument means "not given": ``None``, empty, or the text ``"None"``."""
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def maybe_json_list(value: object) -> object:
    """Templated lists often render as strings: accept a JSON list string (anything else unchanged)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
