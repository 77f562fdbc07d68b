"""End to end: the three annotation streams against a fake OpenAI-compatible server, on tiny clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_annotate_fakes import FakeChatServer, H, T, W, write_inputs
from training.annotate.backends import OpenAIBackendConfig, OpenAIChatBackend
from training.annotate.masks_from_boxes import BoxFillMasks, SAM2BoxMasks, SAM2MaskConfig
from training.annotate.pipeline import AnnotationConfig, AnnotationPipeline
from training.annotate.review import export_review, finalize, read_decisions, set_decision
from training.data.video_gcg import VideoGCGDataset, read_video_gcg


def backend(server: FakeChatServer, model: str = "fake-vlm") -> OpenAIChatBackend:
    return OpenAIChatBackend(OpenAIBackendConfig(server.url, model, api_key_env="VGLAMM_TEST_NO_KEY",
                                                 max_retries=3, backoff_s=0.01, timeout_s=10))


def config(stream: str, **kw) -> AnnotationConfig:
    return AnnotationConfig(stream, max_frames=T, workers=2, progress=False, **kw)


def test_masks_stream_end_to_end_with_review_and_gcg(tmp_path):
    names = ["clip_a", "clip_b", "clip_glitch", "clip_ghost", "clip_silent"]
    inputs = write_inputs(tmp_path / "in", "masks", names)
    out = tmp_path / "out"
    with FakeChatServer(fail_first=1, tag_style=True) as server:
        summary = AnnotationPipeline(config("masks"), backend(server)).run(inputs, out)
        first_count = server.count

        assert sorted(summary.produced) == ["clip_a", "clip_b"]
        assert list(summary.failed) == ["clip_glitch"] and summary.failed["clip_glitch"].startswith("parse:")
        assert "unknown object id(s) [99]" in " ".join(summary.dropped["clip_ghost"])
        assert "0 grounded phrase" in " ".join(summary.dropped["clip_silent"])
        # 5 clips x (2 objects x 2 steps + 1 dense caption) answered, plus the one HTTP 500 retried
        assert summary.requests == 25 and first_count == 26

        # the rerun in the same folder redoes only what is not written, from the cache: no request at all
        again = AnnotationPipeline(config("masks"), backend(server)).run(inputs, out)
        assert server.count == first_count
        assert again.already_done == ["clip_a", "clip_b"] and again.requests == 0 and again.cache_hits == 15

    item = json.loads((out / "items" / "clip_a.json").read_text())
    # {obj_N} tags become [phrase](N); object 1 has no mask on frame 0 (absent there)
    assert item["caption"] == "In the video the [square](1) and the [square](2) move."
    assert item["objects"]["1"]["segmentations"][0] is None
    assert len(item["file_names"]) == T and all((out / f).exists() for f in item["file_names"])
    assert json.loads((out / "summary.json").read_text())["failed"]["clip_glitch"].startswith("parse:")

    # review: overlay video + caption per item, all pending; only accepted items reach the GCG file
    rdir = export_review(out)
    assert (rdir / "clip_a.mp4").stat().st_size > 0 and "<p> square </p> [SEG]" in (rdir / "clip_a.txt").read_text()
    assert read_decisions(out) == {"clip_a": "pending", "clip_b": "pending"}
    with pytest.raises(Exception, match="no accepted items"):
        finalize(out, tmp_path / "gcg" / "train.json")
    set_decision(out, ["clip_b"], "accepted")
    set_decision(out, ["clip_a"], "rejected")
    gcg, ids = finalize(out, tmp_path / "gcg" / "train.json")
    assert ids == ["clip_b"]

    videos, anns = read_video_gcg(gcg)
    assert len(videos) == 1 and len(anns) == 2
    ds = VideoGCGDataset(gcg)
    sample = ds[0]
    assert sample.num_seg() == 2 and sample.masks.shape[0] == 2
    assert sample.masks.shape[2:] == (H, W) and sample.frames.shape[1:] == (H, W, 3)
    assert sample.masks.any(axis=(2, 3))[1].all()  # object 2 is visible on every frame


def test_boxes_captions_stream_with_sam2_random_weights(tmp_path):
    inputs = write_inputs(tmp_path / "in", "boxes-captions", ["cap_a", "cap_glitch"])
    sam2 = SAM2BoxMasks(SAM2MaskConfig(config="configs/sam2.1/sam2.1_hiera_t.yaml", checkpoint=None,
                                       image_size=128, empty_to_box=True))
    out = tmp_path / "out"
    with FakeChatServer(fail_first=0) as server:
        summary = AnnotationPipeline(config("boxes-captions"), backend(server), backend(server, "fake-llm"),
                                     sam2).run(inputs, out)
        # one video-model caption and one LLM caption per clip; the two models are cached apart
        assert summary.requests == 4 and server.count == 4
        assert {r["model"] for r in server.requests} == {"fake-vlm", "fake-llm"}
        images = [p for r in server.requests for m in r["messages"] if isinstance(m["content"], list)
                  for p in m["content"] if p["type"] == "image_url"]
        assert images and all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in images)
    assert summary.produced == ["cap_a"] and list(summary.failed) == ["cap_glitch"]

    item = json.loads((out / "items" / "cap_a.json").read_text())
    from training.annotate.review import item_masks

    masks = item_masks(item)
    assert set(masks) == {1, 2}
    for oid, m in masks.items():
        assert m.shape == (T, H, W) and m.dtype == bool
    # object 2 has boxes from frame 2 on: no mask before, a mask on every boxed frame
    assert not masks[2][:2].any() and masks[2][2:].any(axis=(1, 2)).all()
    assert masks[1].any(axis=(1, 2)).all()


def test_boxes_expressions_stream_budget_and_cache(tmp_path):
    names = [f"expr_{k}" for k in range(4)]
    inputs = write_inputs(tmp_path / "in", "boxes-expressions", names)
    cache = tmp_path / "cache"
    with FakeChatServer(fail_first=0) as server:
        # a budget of 2 requests: 2 items produced, the other 2 reported as skipped
        summary = AnnotationPipeline(config("boxes-expressions", max_requests=2, cache_dir=str(cache)),
                                     backend(server), masks=BoxFillMasks()).run(inputs, tmp_path / "out1")
        assert server.count == 2 and summary.requests == 2
        assert len(summary.produced) == 2 and len(summary.skipped) == 2
        assert all("budget" in r for r in summary.skipped.values())

        # with more budget, a run into a new folder asks only for the two missing answers
        summary = AnnotationPipeline(config("boxes-expressions", max_requests=10, cache_dir=str(cache)),
                                     backend(server), masks=BoxFillMasks()).run(inputs, tmp_path / "out2")
        assert server.count == 4 and summary.cache_hits == 2 and sorted(summary.produced) == names

        # and a third run costs nothing at all
        summary = AnnotationPipeline(config("boxes-expressions", max_requests=0, cache_dir=str(cache)),
                                     backend(server), masks=BoxFillMasks()).run(inputs, tmp_path / "out3")
        assert server.count == 4 and sorted(summary.produced) == names

    item = json.loads((tmp_path / "out3" / "items" / "expr_0.json").read_text())
    assert [p["obj_ids"] for p in item["phrases"]] == [[1], [2]]
    prompt = FakeChatServer.prompt_of(server.requests[0])
    assert "- (1, 2): both squares" in prompt
    set_decision(tmp_path / "out3", [], "accepted", all_items=True)
    gcg, ids = finalize(tmp_path / "out3", tmp_path / "out3" / "gcg.json")
    ds = VideoGCGDataset(gcg)
    assert len(ds) == 4
    s = ds[1]
    # box-fill masks: the [SEG] of object 2 is exactly its box on a frame where it has one
    assert s.masks.shape[0] == 2 and s.masks[1].sum(axis=(1, 2)).max() == 20 * 16
