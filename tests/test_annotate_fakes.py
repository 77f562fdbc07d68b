"""Shared fakes for the annotation tests: an OpenAI-compatible server on 127.0.0.1 and tiny input clips.

No tests here; the test_annotate_* modules import it.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from vglamm.io.masks import encode_rle


class FakeChatServer:
    """Canned answers chosen from the prompt; counts requests; answers HTTP 500 to the first ``fail_first``.

    Keywords in a prompt steer the answer: "glitch" -> malformed JSON, "ghost" -> a phrase with an unknown
    object id, "silent" -> a caption with no grounded phrase.
    """

    def __init__(self, fail_first: int = 1, tag_style: bool = False):
        self.fail_first = fail_first
        self.tag_style = tag_style
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    n = len(outer.requests)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if n <= outer.fail_first:
                    return self._send(500, {"error": "overloaded"})
                text = outer.answer(body)
                self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

            def _send(self, code, doc):
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    @staticmethod
    def prompt_of(body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, list):
            return " ".join(p["text"] for p in content if p["type"] == "text")
        return content

    def answer(self, body: dict) -> str:
        prompt = self.prompt_of(body)
        if "glitch" in prompt and ("Mark every mention" in prompt):
            return '{"caption": "[a thing](1) is brok'
        if "crops of the same" in prompt:
            return "A small object moving to the right."
        if "outlined by a red box" in prompt:
            what = re.search(r"the (.+?) with id", prompt).group(1)  # echo the category so keywords reach step 3
            return json.dumps({"description": f"A small {what} that slides across the frame."})
        if "Describe the video in detail" in prompt:
            return "Two coloured squares move across a grey background; one goes right, the other goes down."
        ids = [int(i) for i in re.findall(r"^- object (\d+):", prompt, re.M)]
        if "silent" in prompt:
            return json.dumps({"caption": "Something happens in the video."})
        if "ghost" in prompt:
            return json.dumps({"caption": f"[a ghost](99) haunts [the square]({ids[0]})."})
        if self.tag_style:
            parts = [f"the square {{obj_{i}}}" for i in ids]
            return "```json\n" + json.dumps({"caption": "In the video " + " and ".join(parts) + " move."}) + "\n```"
        parts = [f"[the square number {i}]({i})" for i in ids]
        return json.dumps({"caption": "In the video " + " meets ".join(parts) + " while they move."})


# ---------------------------------------------------------------------------------------------------- tiny clips

T, H, W = 8, 64, 96


def square_boxes(oid: int) -> list[list[float]]:
    """Object ``oid``'s box on each of the T frames: object 1 moves right, object 2 moves down."""
    if oid == 1:
        return [[4.0 + 6 * t, 10.0, 24.0 + 6 * t, 30.0] for t in range(T)]
    return [[60.0, 4.0 + 4 * t, 80.0, 20.0 + 4 * t] for t in range(T)]


def write_clip(folder: Path, seed: int = 0) -> Path:
    """A JPEG frame folder with two coloured squares following square_boxes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(T):
        frame = np.full((H, W, 3), 120, np.uint8) + rng.integers(0, 10, (H, W, 3), dtype=np.uint8)
        for oid, colour in ((1, (220, 30, 30)), (2, (30, 30, 220))):
            x0, y0, x1, y1 = (int(v) for v in square_boxes(oid)[t])
            frame[y0:y1, x0:x1] = colour
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return folder


def box_mask_rles(oid: int, absent: tuple[int, ...] = ()) -> list[dict | None]:
    out = []
    for t, (x0, y0, x1, y1) in enumerate(square_boxes(oid)):
        if t in absent:
            out.append(None)
            continue
        m = np.zeros((H, W), bool)
        m[int(y0):int(y1), int(x0):int(x1)] = True
        out.append(encode_rle(m))
    return out


def write_inputs(root: Path, stream: str, names: list[str]) -> Path:
    """An input JSONL for ``stream`` with one clip per name; a name's keywords steer the fake server."""
    lines = []
    for k, name in enumerate(names):
        video = write_clip(root / "videos" / name, seed=k)
        rec = {"id": name, "video": str(video.relative_to(root))}
        if stream == "masks":
            cat = "glitch square" if "glitch" in name else ("ghost square" if "ghost" in name else "square")
            rec["objects"] = [{"id": 1, "category": cat, "masks": box_mask_rles(1, absent=(0,))},
                              {"id": 2, "category": "silent square" if "silent" in name else "square",
                               "masks": {str(t): r for t, r in enumerate(box_mask_rles(2)) if r}}]
            if "silent" in name:
                rec["objects"][0]["category"] = "silent square"
        else:
            rec["objects"] = [{"id": 1, "category": "square", "boxes": square_boxes(1)},
                              {"id": 2, "category": "square",
                               "boxes": {str(t): b for t, b in enumerate(square_boxes(2)) if t >= 2}}]
            word = " ".join(w for w in ("glitch", "ghost", "silent") if w in name)  # steers the fake server
            if stream == "boxes-captions":
                rec["caption"] = f"Two squares move {word}".strip() + "."
            else:
                rec["expressions"] = [{"text": f"the red square moving right in {name}", "obj_ids": [1]},
                                      {"text": "the blue square going down", "obj_ids": [2]},
                                      {"text": "both squares", "obj_ids": [1, 2]}]
        lines.append(json.dumps(rec))
    path = root / f"{stream}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
