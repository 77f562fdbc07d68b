"""GCG mIoU / recall pairing, phrase encoders, caption metrics and CLAIR against a fake chat server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from vglamm.errors import MaskError
from vglamm.evaluation import (
    BagOfWordsEncoder,
    ClairJudge,
    GCGRecord,
    caption_metrics,
    clair_score,
    evaluate_gcg,
    gcg_miou,
    gcg_recall_matches,
)
from vglamm.evaluation.captions import java_available, parse_clair_response
from vglamm.evaluation.gcg import clean_caption, extract_phrases, mask_iou_matrix


def _obj(x0, x1, T=2, H=10, W=20):
    m = np.zeros((T, H, W), bool)
    m[:, :, x0:x1] = True
    return m


def test_iou_matrix_and_empty_masks():
    a, b = _obj(0, 4), _obj(2, 6)
    iou = mask_iou_matrix([a, np.zeros_like(a)], [b, np.zeros_like(a)])
    np.testing.assert_allclose(iou, [[2 / 6, 0], [0, 0]])
    with pytest.raises(MaskError):
        mask_iou_matrix([a], [np.zeros((2, 10, 21), bool)])


def test_miou_pairs_greedily_one_to_one():
    gt = [_obj(0, 10), _obj(10, 20)]
    # IoUs: p0-g0 0.8, p1-g0 2/16, p1-g1 6/12 -> pairs (p0,g0) then (p1,g1); p2 matches nothing
    p0, p1, p2 = _obj(0, 8), _obj(8, 16), np.zeros_like(gt[0])
    assert gcg_miou([p0, p1, p2], gt) == pytest.approx((0.8 + 0.5) / 2)
    # one to one: two predictions best matching gt0 -> only the better one pairs; the other has IoU 0 with gt1
    assert gcg_miou([_obj(0, 9), _obj(0, 8)], gt) == pytest.approx(0.9)
    assert gcg_miou([], gt) == 0.0
    assert gcg_miou([p2], gt) == 0.0


def test_recall_needs_both_iou_and_phrase_similarity_and_stops_at_first_failure():
    enc = BagOfWordsEncoder()
    gt = [_obj(0, 10), _obj(10, 20)]
    pred = [_obj(10, 20), _obj(0, 9)]  # swapped order, IoU 1.0 and 0.9
    m = gcg_recall_matches(gt, ["a red car", "the dog"], pred, ["the dog", "red car"], enc)
    assert sorted(m) == [(0, 1), (1, 0)]
    # the best-IoU pair has unrelated phrases: matching stops there (reference rule), the other pair is lost
    m = gcg_recall_matches(gt, ["a red car", "the dog"], pred, ["a cat", "red car"], enc)
    assert m == []
    # IoU below 0.5 never counts
    assert gcg_recall_matches(gt[:1], ["car"], [_obj(0, 4)], ["car"], enc) == []


def test_evaluate_gcg_dataset_level_recall_and_skips():
    enc = BagOfWordsEncoder()
    r1 = GCGRecord("v1", [_obj(0, 10), _obj(10, 20)], ["a man", "a horse"], [_obj(0, 10)], ["man"],
                   "<p> A man </p> [SEG] rides <p> a horse </p> [SEG].", "<p> man </p> [SEG] walks.")
    r2 = GCGRecord("v2", [_obj(0, 5)], ["ball"], [_obj(0, 5)], ["ball"], "A ball.", "A ball.")
    res = evaluate_gcg([r1, r2], encoder=enc, captions=False)
    assert res["Recall"] == pytest.approx(2 / 3)  # dataset level: 2 matched of 3 gt phrases
    assert res["mIoU"] == pytest.approx(1.0)
    assert "CLAIR" in res["skipped"] and "METEOR" not in res
    assert evaluate_gcg([r1], encoder=None, captions=False)["skipped"]["Recall"]


def test_caption_cleaning_and_phrases():
    text = "<p> A man </p> [SEG] rides <p>a horse</p> [SEG]."
    assert clean_caption(text) == "A man rides a horse ."
    assert extract_phrases(text) == ["A man", "a horse"]


def test_cider_ranks_closer_caption_higher():
    refs = ["a man rides a brown horse on the beach", "a dog catches a red ball in the park",
            "two children play football on grass"]
    good = ["a man rides a horse on the beach", "a dog catches a ball in the park", "children play football"]
    bad = ["a bowl of soup", "a car drives at night", "a plane in the sky"]
    s_good = caption_metrics(refs, good, metrics=("CIDEr",))
    s_bad = caption_metrics(refs, bad, metrics=("CIDEr",))
    assert s_good["CIDEr"] > s_bad["CIDEr"] >= 0.0
    assert len(s_good["per_video"]["CIDEr"]) == 3


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
def test_meteor_identical_beats_unrelated():
    refs = ["a man rides a brown horse", "a dog runs after a ball"]
    res = caption_metrics(refs + refs, refs + ["soup in a bowl", ""], metrics=("METEOR",))
    per = res["per_video"]["METEOR"]
    assert per[0] > 0.9 and per[1] > 0.9 and per[2] < 0.3 and per[3] == pytest.approx(0.0)
    assert res["tokenizer"] == "ptb"


def test_meteor_skipped_without_java(monkeypatch):
    monkeypatch.setattr("vglamm.evaluation.captions.shutil.which", lambda name: None)
    res = caption_metrics(["a cat."], ["a cat."])
    assert "METEOR" not in res and "Java" in res["skipped"]["METEOR"]
    assert res["tokenizer"] == "simple" and res["CIDEr"] >= 0.0


def test_parse_clair_response_forms():
    assert parse_clair_response('Sure: {"score": 72, "reason": "same scene"}') == (72.0, "same scene")
    assert parse_clair_response("score 0.4, reason: close")[0] == pytest.approx(40.0)
    assert parse_clair_response("no idea") is None


class _FakeChat(BaseHTTPRequestHandler):
    replies: list = []
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers.get("Authorization"), body))
        content = type(self).replies.pop(0) if type(self).replies else '{"score": 50, "reason": "x"}'
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_clair_against_fake_openai_compatible_server(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("TEST_CLAIR_KEY", "sk-test")
        judge = ClairJudge(f"http://127.0.0.1:{server.server_port}/v1", "judge-model", api_key_env="TEST_CLAIR_KEY")
        _FakeChat.replies[:] = ["I cannot say", '{"score": 80, "reason": "same horse"}']
        score, reason = clair_score("a man rides a horse", "a person riding a horse", judge)
        assert score == pytest.approx(0.8) and reason == "same horse"
        path, auth, body = _FakeChat.requests[-1]
        assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
        assert body["model"] == "judge-model" and "a person riding a horse" in body["messages"][1]["content"]
        _FakeChat.replies[:] = ["?", "?", "?"]
        assert clair_score("a", "b", judge) == (0.0, None)  # unreadable three times: 0, as the reference
        r = GCGRecord("v", [], [], [], [], "a horse", "a horse")
        _FakeChat.replies[:] = ['{"score": 90, "reason": "ok"}']
        res = evaluate_gcg([r], encoder=None, captions=False, clair=judge)
        assert res["CLAIR"] == pytest.approx(0.9) and "CLAIR" not in res["skipped"]
    finally:
        server.shutdown()
        server.server_close()
