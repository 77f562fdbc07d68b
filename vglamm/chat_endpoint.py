"""One request to an OpenAI-compatible chat-completions endpoint, with plain urllib (no SDK dependency).

Used by the CLAIR judge (vglamm.evaluation.captions) and the annotation pipeline (training.annotate.backends);
each keeps its own retry policy around this call.
"""

from __future__ import annotations

import json
import os
import urllib.request


def chat_url(base_url: str) -> str:
    """``.../v1`` → ``.../v1/chat/completions``."""
    return base_url.rstrip("/") + "/chat/completions"


def post_chat(url: str, body: dict, *, api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 60.0) -> str:
    """POST a chat-completions ``body`` and return the first choice's text.

    The bearer key is read from ``api_key_env`` when that variable is set (local servers often need none).
    Raises ``urllib.error.HTTPError`` / ``URLError`` / ``OSError`` for transport failures and ``ValueError`` for
    a reply that is not a chat completion.
    """
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return first_choice_text(raw, url)


def first_choice_text(raw: bytes, url: str) -> str:
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"malformed response from {url}: {raw[:200]!r}") from e
    if content is None:
        return ""
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError(f"malformed response from {url}: message content is {type(content).__name__}")
    return content
