"""Model back-ends the annotation pipeline talks to, behind one small interface.

A back-end turns a :class:`ChatRequest` (system text, a prompt, optional frames) into the model's text answer.
``payload(request)`` is the JSON the back-end would send (images included as data URLs); the cache hashes it, so
two requests that differ in any pixel, word or model setting never share an answer.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
import urllib.error
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from vglamm.chat_endpoint import chat_url, post_chat
from vglamm.errors import ConfigError, VglammError

log = logging.getLogger(__name__)


class BackendError(VglammError, RuntimeError):
    """The model back-end did not answer (network error, HTTP error after retries, malformed response)."""


class BudgetExhausted(VglammError):
    """The request budget is spent; the item asking for more is reported as skipped, not failed."""


@dataclass
class ChatRequest:
    """One question to a model: a prompt, optional frames (uint8 (H,W,3) each), and sampling settings."""

    prompt: str
    images: Sequence[np.ndarray] = ()
    system: str | None = None
    max_tokens: int = 512
    temperature: float = 0.2
    json_mode: bool = False


@runtime_checkable
class ChatBackend(Protocol):
    """What the pipeline needs from a model: a stable request payload and an answer for it."""

    name: str

    def payload(self, request: ChatRequest) -> dict: ...

    def complete(self, request: ChatRequest) -> str: ...


def image_data_url(image: np.ndarray, *, max_side: int = 512, fmt: str = "jpeg", quality: int = 90) -> str:
    """Encode an (H,W,3) uint8 frame as a base64 data URL, downscaled so its longer side is at most ``max_side``."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"images must be (H,W,3) uint8, got {image.shape} {image.dtype}")
    pil = Image.fromarray(image)
    scale = max_side / max(pil.size)
    if scale < 1:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG")
        mime = "image/png"
    else:
        # Fixed quality and no optimiser randomness: identical frames must give identical bytes (cache keys).
        pil.save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def openai_messages(request: ChatRequest, *, max_side: int, fmt: str) -> list[dict]:
    """The chat ``messages`` list in the OpenAI format, frames attached as ``image_url`` parts after the text."""
    messages = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    if request.images:
        content = [{"type": "text", "text": request.prompt}]
        content += [{"type": "image_url", "image_url": {"url": image_data_url(im, max_side=max_side, fmt=fmt)}}
                    for im in request.images]
    else:
        content = request.prompt
    messages.append({"role": "user", "content": content})
    return messages


@dataclass
class OpenAIBackendConfig:
    """An OpenAI-compatible ``/chat/completions`` endpoint.

    base_url:     e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1`` (vLLM, llama.cpp, ...).
    model:        the model name the server expects.
    api_key_env:  the environment variable holding the key (never the key itself, so configs can be shared);
                  an unset variable sends no Authorization header (local servers).
    max_retries:  retries after the first try, on network errors, HTTP 429 and 5xx; waits
                  ``backoff_s * 2**attempt`` (capped at ``backoff_max_s``, with jitter).
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    image_max_side: int = 512
    image_format: str = "jpeg"
    extra_body: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ConfigError("model must name the served model")
        if self.image_format not in ("jpeg", "png"):
            raise ConfigError(f"image_format must be 'jpeg' or 'png', got {self.image_format!r}")
        if self.max_retries < 0:
            raise ConfigError("max_retries must be >= 0")


_RETRY_STATUS = {408, 409, 429}


class OpenAIChatBackend:
    """Talks to an OpenAI-compatible chat endpoint with plain ``urllib`` (no SDK dependency)."""

    def __init__(self, config: OpenAIBackendConfig):
        self.config = config
        self.name = f"openai:{config.model}"
        self.url = chat_url(config.base_url)

    def payload(self, request: ChatRequest) -> dict:
        cfg = self.config
        body = {
            "model": cfg.model,
            "messages": openai_messages(request, max_side=cfg.image_max_side, fmt=cfg.image_format),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_mode:
            body["response_format"] = {"type": "json_object"}
        body.update(cfg.extra_body)
        return body

    def complete(self, request: ChatRequest) -> str:
        return self.complete_payload(self.payload(request))

    def complete_payload(self, body: dict) -> str:
        """POST ``body``; retry transient failures with exponential backoff; return the first choice's text."""
        cfg = self.config
        last = "no attempt made"
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                delay = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random() / 2))
            try:
                return post_chat(self.url, body, api_key_env=cfg.api_key_env, timeout=cfg.timeout_s)
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                last = f"HTTP {e.code} from {self.url}: {detail}"
                if e.code >= 500 or e.code in _RETRY_STATUS:
                    log.warning("attempt %d: %s; retrying", attempt + 1, last)
                    continue
                raise BackendError(f"{last}. Check the model name, API key (${cfg.api_key_env}) and request.") from e
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"cannot reach {self.url}: {e}"
                log.warning("attempt %d: %s; retrying", attempt + 1, last)
                continue
            except ValueError as e:  # a reply that is not a chat completion: retrying will not help
                raise BackendError(str(e)) from e
        raise BackendError(f"{last} (gave up after {cfg.max_retries + 1} attempts). Is the server up?")


class TransformersChatBackend:
    """A local ``transformers`` model with the same interface as :class:`OpenAIChatBackend`.

    ``model`` and ``processor`` are passed in (components, not paths) so any chat model works: an image-text model
    with its processor, or a text-only causal LM with its tokenizer (then frames are refused). Generation is greedy
    when ``temperature == 0``. Calls are serialised with a lock: one model, many annotation threads.
    """

    def __init__(self, model, processor, *, name: str = "transformers", image_max_side: int = 448):
        self.model = model
        self.processor = processor
        self.name = f"transformers:{name}"
        self.image_max_side = image_max_side
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "cpu", **kwargs) -> "TransformersChatBackend":
        """Load a local model folder: an image-text-to-text model if its config says so, else a causal LM."""
        import transformers

        if not os.path.isdir(path):
            raise ConfigError(f"{path} is not a local model folder; the annotation back-end loads no hub models here")
        try:
            processor = transformers.AutoProcessor.from_pretrained(path)
            model = transformers.AutoModelForImageTextToText.from_pretrained(path)
        except (ValueError, OSError, KeyError):
            processor = transformers.AutoTokenizer.from_pretrained(path)
            model = transformers.AutoModelForCausalLM.from_pretrained(path)
        model.to(device).eval()
        return cls(model, processor, name=os.path.basename(os.path.normpath(path)), **kwargs)

    def payload(self, request: ChatRequest) -> dict:
        return {
            "model": self.name,
            "messages": openai_messages(request, max_side=self.image_max_side, fmt="png"),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }

    def complete(self, request: ChatRequest) -> str:
        import torch
        from PIL import Image

        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        if request.images:
            if not hasattr(self.processor, "image_processor"):
                raise BackendError(f"{self.name} is a text-only model; it cannot take frames")
            parts = [{"type": "image", "image": Image.fromarray(np.asarray(im))} for im in request.images]
            messages.append({"role": "user", "content": parts + [{"type": "text", "text": request.prompt}]})
        else:
            messages.append({"role": "user", "content": request.prompt})
        gen = {"max_new_tokens": request.max_tokens, "do_sample": request.temperature > 0}
        if request.temperature > 0:
            gen["temperature"] = request.temperature
        with self._lock, torch.inference_mode():
            try:
                inputs = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                            return_dict=True, return_tensors="pt")
            except (ValueError, TypeError) as e:
                raise BackendError(f"{self.name}: cannot build the chat prompt: {e}") from e
            inputs = {k: v.to(self.model.device) for k, v in inputs.items() if hasattr(v, "to")}
            out = self.model.generate(**inputs, **gen)
        new_tokens = out[0, inputs["input_ids"].shape[1]:]
        decode = getattr(self.processor, "decode", None) or self.processor.tokenizer.decode
        return decode(new_tokens, skip_special_tokens=True).strip()
