"""Unit checks of the annotation pieces: answer parsing, gates, cache keys, HTTP retries, input validation, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_annotate_fakes import FakeChatServer, T, write_inputs
from training.annotate.backends import BackendError, ChatRequest, OpenAIBackendConfig, OpenAIChatBackend
from training.annotate.cache import CachedClient, RequestBudget, ResponseCache, payload_key
from training.annotate.backends import BudgetExhausted
from training.annotate.gates import GateConfig, check_item
from training.annotate.inputs import read_items
from training.annotate.parsing import AnswerParseError, parse_grounded_caption
from vglamm.errors import ConfigError, DataFormatError


# ------------------------------------------------------------------------------------------------------ parsing

def test_parse_bracket_marks_json_and_fences():
    cap = parse_grounded_caption('```json\n{"caption": "[A man](1) throws [two balls](2, 3) to [the dog](obj_4)."}\n```')
    assert cap.marked == "[A man](1) throws [two balls](2, 3) to [the dog](4)."
    assert cap.answer == "<p> A man </p> [SEG] throws <p> two balls </p> [SEG] to <p> the dog </p> [SEG]."
    assert cap.plain == "A man throws two balls to the dog."
    assert [p.obj_ids for p in cap.phrases] == [(1,), (2, 3), (4,)]
    # plain text (a server without JSON mode) and a caption that starts with a mark
    assert parse_grounded_caption("[The cat](2) sleeps.").phrases[0].text == "The cat"


def test_parse_obj_tags_take_the_noun_phrase_before_the_tag():
    cap = parse_grounded_caption("A man in a red shirt {obj_1} walks past the parked car {obj_2}{obj_3}.")
    assert cap.marked == "A man in a [red shirt](1) walks past the [parked car](2, 3)."


@pytest.mark.parametrize("answer", ['{"caption": "[a](1) is brok', '{"text": "no caption key"}', "",
                                    "[a dog](one) runs", "[a dog](2 runs", "a cat {obj_x} sits"])
def test_parse_rejects_malformed_answers(answer):
    with pytest.raises(AnswerParseError):
        parse_grounded_caption(answer)


# -------------------------------------------------------------------------------------------------------- gates

def test_gates_name_every_problem():
    masks = {1: np.ones((3, 4, 4), bool), 2: np.zeros((3, 4, 4), bool)}
    visible = {1: np.ones(3, bool), 2: np.array([False, True, False])}
    assert check_item(parse_grounded_caption("[a](1) and [b](1)"), masks, visible) == []
    reasons = check_item(parse_grounded_caption("[a](1) meets [b](2) and [c](7)"), masks, visible)
    assert any("unknown object id(s) [7]" in r for r in reasons)
    assert any("object 2 has no mask on frame(s) [1]" in r for r in reasons)
    assert check_item(parse_grounded_caption("nothing grounded"), masks, visible)[0].startswith("caption has 0")
    strict = check_item(parse_grounded_caption("[a](1)"), masks, visible, GateConfig(require_all_objects=True))
    assert strict == ["object(s) [2] are never mentioned"]


# ---------------------------------------------------------------------------------------------- cache and backend

def test_cache_key_covers_images_and_model(tmp_path):
    be = OpenAIChatBackend(OpenAIBackendConfig("http://127.0.0.1:9/v1", "m"))
    img = np.zeros((8, 8, 3), np.uint8)
    k1 = payload_key(be.payload(ChatRequest("hi", [img])))
    assert k1 == payload_key(be.payload(ChatRequest("hi", [img.copy()])))
    img2 = img.copy()
    img2[0, 0] = 255
    assert k1 != payload_key(be.payload(ChatRequest("hi", [img2])))
    other = OpenAIChatBackend(OpenAIBackendConfig("http://127.0.0.1:9/v1", "m2"))
    assert k1 != payload_key(other.payload(ChatRequest("hi", [img])))
    cache = ResponseCache(tmp_path)
    assert cache.get(k1) is None
    cache.put(k1, "answer", model="m")
    assert cache.get(k1) == "answer"


def test_retries_on_500_then_answers_and_budget_counts_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("VGLAMM_TEST_KEY", "sk-test")
    with FakeChatServer(fail_first=2) as server:
        be = OpenAIChatBackend(OpenAIBackendConfig(server.url, "m", api_key_env="VGLAMM_TEST_KEY", backoff_s=0.01))
        client = CachedClient(be, ResponseCache(tmp_path), RequestBudget(1))
        req = ChatRequest("Describe the video in detail please")
        assert client.ask(req).startswith("Two coloured squares")
        assert server.count == 3  # two 500s, then the answer
        assert client.ask(req) == client.ask(req) and server.count == 3  # cached, free
        with pytest.raises(BudgetExhausted):
            client.ask(ChatRequest("Describe the video in detail, again"))
        assert client.stats.requests == 1 and client.stats.cache_hits == 2


def test_gives_up_after_retries_and_does_not_retry_4xx():
    with FakeChatServer(fail_first=100) as server:
        be = OpenAIChatBackend(OpenAIBackendConfig(server.url, "m", max_retries=2, backoff_s=0.01))
        with pytest.raises(BackendError, match="gave up after 3 attempts"):
            be.complete(ChatRequest("x"))
        assert server.count == 3
    with FakeChatServer(fail_first=0) as server:
        be = OpenAIChatBackend(OpenAIBackendConfig(server.url.replace("/v1", "/v2"), "m", backoff_s=0.01))
        with pytest.raises(BackendError, match="HTTP 404"):
            be.complete(ChatRequest("x"))
        assert server.count == 1
    with pytest.raises(ConfigError):
        OpenAIBackendConfig("127.0.0.1:8000", "m")


# ------------------------------------------------------------------------------------------------------- inputs

def test_input_validation_names_the_line(tmp_path):
    path = write_inputs(tmp_path, "boxes-expressions", ["a"])
    items = read_items(path, "boxes-expressions")
    boxes = items[0].object(2).boxes_at(range(T))  # object 2 has boxes from frame 2 on (a {frame: box} dict)
    assert np.isnan(boxes[:2]).all() and np.isfinite(boxes[2:]).all()
    with pytest.raises(DataFormatError, match="needs a non-empty 'caption'"):
        read_items(path, "boxes-captions")
    good = path.read_text()
    bad = json.loads(good)
    bad["objects"][0]["boxes"][3] = [10, 10, 5, 20]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "ok", **{k: v for k, v in bad.items() if k != "id"}}))
    with pytest.raises(DataFormatError, match=r"bad.jsonl:1 \(id ok\) object 1: frame 3"):
        read_items(tmp_path / "bad.jsonl", "boxes-expressions")
    bad = json.loads(good)
    bad["expressions"][0]["obj_ids"] = [9]
    (tmp_path / "bad2.jsonl").write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match="unknown object ids"):
        read_items(tmp_path / "bad2.jsonl", "boxes-expressions")


# ---------------------------------------------------------------------------------------------------------- CLI

def test_cli_runs_a_stream_then_review_accept_finalize(tmp_path, capsys):
    from training.data.video_gcg import VideoGCGDataset
    from vglamm.cli import main

    inputs = write_inputs(tmp_path / "in", "boxes-expressions", ["c1", "c2_ghost"])
    out = tmp_path / "out"
    with FakeChatServer(fail_first=1) as server:
        rc = main(["annotate", "boxes-expressions", "--input", str(inputs), "--out", str(out), "--base-url",
                   server.url, "--model", "fake", "--mask-backend", "box", "--max-frames", "4", "--workers", "2",
                   "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "produced 1" in printed and "dropped c2_ghost" in printed
    assert main(["annotate", "review", str(out)]) == 0
    assert main(["annotate", "finalize", str(out), "--gcg", str(tmp_path / "g.json")]) == 2  # nothing accepted
    assert main(["annotate", "accept", str(out), "--all"]) == 0
    assert main(["annotate", "finalize", str(out), "--gcg", str(tmp_path / "g.json")]) == 0
    sample = VideoGCGDataset(tmp_path / "g.json")[0]
    assert sample.frames.shape[0] == 4 and sample.masks.shape[:2] == (2, 4)


def test_transformers_backend_same_interface_with_a_tiny_local_model(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from training.annotate.backends import TransformersChatBackend

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(["describe the video a square moves right user assistant"],
                            trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant {% endif %}")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    backend = TransformersChatBackend(model, tok, name="tiny")
    req = ChatRequest("describe the video", max_tokens=4, temperature=0)
    answer = backend.complete(req)
    assert isinstance(answer, str) and answer == backend.complete(req)  # greedy: deterministic
    client = CachedClient(backend, ResponseCache(tmp_path))
    assert client.ask(req) == answer and client.ask(req) == answer and client.stats.cache_hits == 1
    with pytest.raises(BackendError, match="text-only"):
        backend.complete(ChatRequest("x", [np.zeros((4, 4, 3), np.uint8)]))
