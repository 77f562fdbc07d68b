"""Caption quality: METEOR and CIDEr (pycocoevalcap, one reference per video) and the CLAIR LLM judge.

Texts are cut at 2000 characters, as in VideoGLaMM's evaluation. With Java available the texts are tokenised by
pycocoevalcap's PTB tokenizer (what ``COCOEvalCap`` does); without Java METEOR is skipped and CIDEr uses a
Python tokenisation close to it (lower case, punctuation removed), reported as ``"tokenizer": "simple"``.

CLAIR asks a chat model how likely two captions describe the same video (0-100, JSON ``{"score", "reason"}``),
reported / 100, through any OpenAI-compatible ``/chat/completions`` endpoint.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import urllib.error
from dataclasses import dataclass

from vglamm.chat_endpoint import chat_url, post_chat
from vglamm.errors import ConfigError

log = logging.getLogger(__name__)

MAX_CHARS = 2000
_PUNCT = re.compile(r"[^\w\s']|'(?!\w)|(?<!\w)'")


def java_available() -> bool:
    return shutil.which("java") is not None


def _simple_tokenize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _tokenize(texts: dict[str, str], use_java: bool) -> dict[str, list[str]]:
    if not use_java:
        return {k: [_simple_tokenize(v)] for k, v in texts.items()}
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # Empty captions would shift the tokenizer's one-line-per-caption output: they stay empty without Java.
    out = {k: [""] for k, v in texts.items() if not v.strip()}
    rest = {k: [{"caption": v}] for k, v in texts.items() if v.strip()}
    if rest:
        out.update(PTBTokenizer().tokenize(rest))
    return {k: out[k] for k in texts}


def caption_metrics(references: list[str], candidates: list[str], *, metrics=("METEOR", "CIDEr")) -> dict:
    """Corpus METEOR / CIDEr of ``candidates`` against one reference each. -> {metric: score, "per_video",
    "tokenizer", "skipped"}; METEOR is skipped (with the reason) when ``java`` is not on PATH."""
    if len(references) != len(candidates):
        raise ConfigError(f"{len(references)} references for {len(candidates)} candidates: give one of each "
                          "per video.")
    out: dict = {"skipped": {}, "per_video": {}}
    if not references:
        return out
    use_java = java_available()
    out["tokenizer"] = "ptb" if use_java else "simple"
    ids = [str(i) for i in range(len(references))]
    # Newlines would split a caption into two lines for the Java tools.
    gts = _tokenize({i: r[:MAX_CHARS].replace("\n", " ") for i, r in zip(ids, references)}, use_java)
    res = _tokenize({i: c[:MAX_CHARS].replace("\n", " ") for i, c in zip(ids, candidates)}, use_java)
    for name in metrics:
        if name == "METEOR":
            if not use_java:
                out["skipped"]["METEOR"] = "METEOR needs Java: install a JRE (e.g. apt-get install default-jre)"
                continue
            from pycocoevalcap.meteor.meteor import Meteor

            scorer = Meteor()
        elif name == "CIDEr":
            from pycocoevalcap.cider.cider import Cider

            scorer = Cider()
        else:
            raise ConfigError(f"unknown caption metric {name!r}: use 'METEOR' or 'CIDEr'.")
        score, per = scorer.compute_score(gts, res)
        out[name] = float(score)
        out["per_video"][name] = [float(x) for x in per]
    return out


# ---------------------------------------------------------------------------------------------------------------
# CLAIR
# ---------------------------------------------------------------------------------------------------------------
CLAIR_PROMPT = (
    "You are trying to tell if a candidate set of captions is describing the same video as a reference set of "
    "captions.\nCandidate set:\n{candidates}Reference set:\n{references}"
    "On a precise scale from 0 to 100, how likely is it that the candidate set is describing the same video as "
    'the reference set? (JSON format, with a key "score", value between 0 and 100, and a key "reason" with a '
    "string value.)\n"
)


@dataclass
class ClairJudge:
    """An OpenAI-compatible chat endpoint used as the CLAIR judge.

    ``base_url`` is the API root (``.../v1``); ``/chat/completions`` is appended. The key is read from the
    environment variable ``api_key_env`` when set there (local servers often need none).
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.5
    max_tokens: int = 100
    tries: int = 3
    timeout: float = 60.0

    def complete(self, prompt: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        return post_chat(chat_url(self.base_url), body, api_key_env=self.api_key_env, timeout=self.timeout)


def parse_clair_response(text: str) -> tuple[float, str] | None:
    """(score 0-100, reason) from a judge's reply: the first ``{...}`` JSON object, else the first number (a
    value below 1 is read as already normalised and scaled by 100). None when nothing can be read."""
    m = re.search(r"\{.*?\}", text, flags=re.S)
    if m:
        try:
            data = json.loads(m.group(0))
            return float(data["score"]), str(data.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            pass
    nums = re.findall(r"\d*\.?\d+", text)
    if nums:
        score = float(nums[0])
        reason = re.search(r"(?i)reason\W*(.*)", text)
        return (score * 100 if score < 1 else score), (reason.group(1).strip() if reason else "")
    return None


def clair_score(candidate: str, reference: str, judge: ClairJudge) -> tuple[float, str | None]:
    """CLAIR of one candidate caption against one reference, in [0, 1]; (0, None) after ``judge.tries``
    unreadable replies or failed requests (logged), as the reference does."""
    prompt = CLAIR_PROMPT.format(candidates=f"- {candidate[:MAX_CHARS]}\n", references=f"- {reference[:MAX_CHARS]}\n")
    for attempt in range(judge.tries):
        try:
            reply = judge.complete(prompt)
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as e:
            log.warning("CLAIR request %d/%d to %s failed: %s", attempt + 1, judge.tries, judge.base_url, e)
            continue
        parsed = parse_clair_response(reply)
        if parsed is not None:
            score, reason = parsed
            return min(max(score, 0.0), 100.0) / 100.0, reason
        log.warning("CLAIR reply %d/%d could not be read: %r", attempt + 1, judge.tries, reply[:200])
    log.error("CLAIR gave no readable score after %d tries; scoring this caption 0.", judge.tries)
    return 0.0, None
