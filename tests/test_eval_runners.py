"""`vglamm eval <benchmark> --model`: runners on tiny fixture datasets, resume, sharding, --predictions parity."""

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.mevis import MevisClip, MevisExpression, write_mevis
from training.data.video_gcg import gcg_clip, write_video_gcg
from vglamm.errors import ConfigError, DataFormatError, NoTargetFoundError
from vglamm.evaluation import cli
from vglamm.evaluation.runners import remove_small_components, shard
from vglamm.io.masks import save_davis_pngs
from vglamm.modeling import GroundedAnswer, GroundedObject, VideoGLaMM, VideoGLaMMConfig

T, H, W = 8, 64, 80
VIDEOS = ("cat", "dog")


# ------------------------------------------------------------------------------------------------ fixtures
def _video(seed):
    return np.random.default_rng(seed).integers(0, 255, (T, H, W, 3), dtype=np.uint8)


def _box_masks(seed):
    """A moving box: an object every frame, different per video."""
    m = np.zeros((T, H, W), bool)
    for t in range(T):
        y, x = 8 + seed * 4, 6 + 3 * t + seed * 10
        m[t, y:y + 20, x:x + 24] = True
    return m


def _save_frames(folder: Path, frames, ext=".jpg"):
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}{ext}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny LLM's attention is slower on 2 contended threads than on one.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_java(monkeypatch):
    # METEOR / the PTB tokenizer start a JVM each (tens of seconds on a loaded machine): CIDEr on the Python
    # tokenisation is enough to check that the runner wires the caption metrics.
    monkeypatch.setattr("vglamm.evaluation.captions.java_available", lambda: False)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    VideoGLaMM.from_config(VideoGLaMMConfig.tiny()).save_pretrained(d)
    return d


def _refdavis(root: Path) -> Path:
    meta = {"videos": {}}
    for s, v in enumerate(VIDEOS):
        _save_frames(root / "valid" / "JPEGImages" / v, _video(s))
        save_davis_pngs(root / "valid" / "Annotations" / v, _box_masks(s)[None])
        exps = {str(a): {"exp": f"the {v} ({a})", "obj_id": "1"} for a in range(4)}  # 1 object x 4 annotator sets
        meta["videos"][v] = {"frames": [f"{t:05d}" for t in range(T)], "expressions": exps}
    (root / "meta_expressions" / "valid").mkdir(parents=True)
    (root / "meta_expressions" / "valid" / "meta_expressions.json").write_text(json.dumps(meta))
    return root


def _mevis(root: Path) -> Path:
    clips = [MevisClip(v, {1: _box_masks(s)}, [MevisExpression(f"the {v}", [1]), MevisExpression("nothing", [1])],
                       frames=_video(s)) for s, v in enumerate(VIDEOS)]
    return write_mevis(root, clips)


def _gcg(root: Path) -> Path:
    videos, anns = [], []
    for s, v in enumerate(VIDEOS):
        _save_frames(root / v, _video(s), ".png")
        vid, a = gcg_clip(s + 1, [f"{v}/{t:05d}.png" for t in range(T)], f"[A {v}](1) walks on the grass.",
                          {1: _box_masks(s)})
        videos.append(vid)
        anns += a
    return write_video_gcg(root / "test.json", videos, anns)


def _vidstg(root: Path) -> Path:
    for s, v in enumerate(VIDEOS):
        _save_frames(root / "frames" / v, _video(s))
        m = _box_masks(s)
        boxes = {}
        for t in range(2, 6):  # tube: frames 2..5
            ys, xs = np.nonzero(m[t])
            boxes[str(t)] = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        q = {"video": v, "qtype": "interrogative" if s == 0 else "declarative",
             "caption": f"what is the {v}?" if s == 0 else f"the {v}", "boxes": boxes}
        (root / "questions").mkdir(parents=True, exist_ok=True)
        (root / "questions" / f"q{s}.json").write_text(json.dumps(q))
    return root


class OracleModel:
    """Answers with the fixture's box masks (shifted for 'dog', so J < 1) and no [SEG] for 'nothing'."""

    def __init__(self):
        self.calls = []

    def _masks(self, text):
        s = 1 if "dog" in text else 0
        m = _box_masks(s)
        return np.roll(m, 3, axis=2) if s else m

    def segment(self, frames, expression, *, mode="temporal", max_new_tokens=32):
        self.calls.append((expression, mode))
        assert frames.shape == (T, H, W, 3)
        if "nothing" in expression:
            raise NoTargetFoundError("no [SEG]")
        return self._masks(expression)

    def chat(self, frames, prompt=None, *, mode="temporal", max_new_tokens=256, **kw):
        self.calls.append((prompt, mode))
        if "segment the dog" in prompt:  # the declarative VidSTG question: not grounded
            return GroundedAnswer("no", "no")
        noun = "dog" if frames.mean() == _video(1).mean() else "cat"
        m = self._masks(noun)
        m[0, 0, 0] = True  # a speck that remove_small_objects must drop
        return GroundedAnswer(f"A {noun} walks on the grass.", f"<p> A {noun} </p> [SEG] walks on the grass.",
                              [GroundedObject(f"A {noun}", m)])


def _eval(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *map(str, argv), "--no-progress"])
    return args.func(args)


def _metrics(out: Path):
    return json.loads((out / "metrics.json").read_text())


def _numbers(res: dict, keys):
    return {k: res[k] for k in keys}


def _use_oracle(monkeypatch, oracle):
    monkeypatch.setattr(VideoGLaMM, "from_pretrained", classmethod(lambda cls, *a, **k: oracle))


def _forbid_model(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model was loaded on a resumed run")
    monkeypatch.setattr(VideoGLaMM, "from_pretrained", classmethod(boom))


# ------------------------------------------------------------------------------------------------ tiny model
def test_refdavis_tiny_model_run_resume_and_predictions(tmp_path, tiny_model_dir, monkeypatch):
    data, out = _refdavis(tmp_path / "ref-davis"), tmp_path / "out"
    assert _eval(["refdavis", "--data", data, "--model", tiny_model_dir, "--out", out, "--mode", "framewise"]) == 0
    res = _metrics(out)
    assert res["num_videos"] == 2 and res["num_expressions"] == 8 and res["mode"] == "framewise"
    per_video = {v: json.loads((out / "per_video" / f"{v}.json").read_text()) for v in VIDEOS}
    flags = [e["no_target"] for r in per_video.values() for s in r["sets"].values() for e in s["expressions"]]
    assert res["no_target"] == sum(flags)
    for k in ("J&F", "J", "F"):
        assert 0.0 <= res[k] <= 1.0
    assert set(res["per_annotator"]) == {f"anno_{a}" for a in range(4)}
    for a in range(4):
        for v in VIDEOS:
            files = sorted((out / "predictions" / f"anno_{a}" / v).glob("*.png"))
            assert [f.stem for f in files] == [f"{t:05d}" for t in range(T)]
            with Image.open(files[0]) as im:
                assert im.mode == "P" and im.size == (W, H)

    # resume: nothing left to infer, so the model is never loaded and the results are not rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "per_video").iterdir()}
    _forbid_model(monkeypatch)
    assert _eval(["refdavis", "--data", data, "--model", tiny_model_dir, "--out", out, "--mode", "framewise"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "per_video").iterdir()} == mtimes
    assert _metrics(out)["J&F"] == res["J&F"]
    # a rerun with other settings into the same folder is refused
    with pytest.raises(ConfigError, match="another run"):
        _eval(["refdavis", "--data", data, "--model", tiny_model_dir, "--out", out, "--mode", "temporal"])

    _eval(["refdavis", "--data", data, "--predictions", out / "predictions", "--out", tmp_path / "scored"])
    assert _numbers(_metrics(tmp_path / "scored"), ("J&F", "J", "F")) == _numbers(res, ("J&F", "J", "F"))


def test_mevis_tiny_model_limit_and_predictions(tmp_path, tiny_model_dir):
    data, out = _mevis(tmp_path / "valid_u"), tmp_path / "out"
    _eval(["mevis", "--data", data, "--model", tiny_model_dir, "--out", out, "--limit", 1, "--zip"])
    res = _metrics(out)
    assert res["num_videos"] == 1 and res["num_expressions"] == 2 and 0 <= res["no_target"] <= 2
    assert {"J", "F", "J&F"} <= set(res) and all(0 <= res[k] <= 1 for k in ("J", "F", "J&F"))
    assert [p.name for p in (out / "per_video").iterdir()] == ["cat.json"]
    pngs = sorted((out / "predictions" / "cat" / "0").glob("*.png"))
    assert len(pngs) == T and set(np.unique(np.asarray(Image.open(pngs[0])))) <= {0, 255}
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert sorted(zf.namelist())[0] == "cat/0/00000.png" and len(zf.namelist()) == 2 * T
    _eval(["mevis", "--data", data, "--predictions", out / "predictions", "--out", tmp_path / "s", "--limit", 1])
    assert _numbers(_metrics(tmp_path / "s"), ("J", "F", "J&F")) == _numbers(res, ("J", "F", "J&F"))


def test_gcg_tiny_model(tmp_path, tiny_model_dir):
    data, out = _gcg(tmp_path / "gcg"), tmp_path / "out"
    _eval(["gcg", "--data", data, "--model", tiny_model_dir, "--out", out, "--phrase-encoder", "bow",
           "--max-new-tokens", 16, "--no-captions"])
    res = _metrics(out)
    assert res["num_videos"] == 2 and 0 <= res["no_target"] <= 2
    assert 0 <= res["mIoU"] <= 1 and 0 <= res["Recall"] <= 1 and res["phrase_encoder"] == "bag-of-words"
    assert {"CLAIR", "METEOR", "CIDEr"} <= set(res["skipped"])
    for key in ("1", "2"):
        doc = json.loads((out / "predictions" / f"{key}.json").read_text())
        assert doc["size"] == [H, W] and doc["num_frames"] == T and "caption" in doc
        assert json.loads((out / "per_video" / f"{key}.json").read_text())["num_gt"] == 1


def test_vidstg_tiny_model_forced_seg_reaches_sam2(tmp_path, tiny_model_dir, monkeypatch):
    """The tiny model made to answer [SEG] at every step: real SAM2 masks flow through the runner."""
    load = VideoGLaMM.from_pretrained.__func__

    def forced(cls, *a, **k):
        model = load(cls, *a, **k)
        head, seg = model.language_model.lm_head, model.seg_token_id

        def logits(hidden):
            out = head(hidden)
            out[..., seg] = out.abs().amax(-1) + 1.0
            return out
        model.language_model.logits = logits
        return model

    monkeypatch.setattr(VideoGLaMM, "from_pretrained", classmethod(forced))
    data, out = _vidstg(tmp_path / "vidstg"), tmp_path / "out"
    _eval(["vidstg", "--data", data, "--model", tiny_model_dir, "--out", out, "--max-new-tokens", 2, "--limit", 1])
    res = _metrics(out)
    assert res["no_target"] == 0 and res["num_questions"] == 1 and 0 <= res["interrogative"]["mIoU"] <= 1
    doc = json.loads((out / "predictions" / "q0.json").read_text())
    assert len(doc["objects"]) == 1 and doc["size"] == [H, W] and len(doc["objects"][0]["segmentations"]) == T


# ------------------------------------------------------------------------------------------------ real masks
def test_mevis_sharded_ranks_merge_to_the_single_process_metrics(tmp_path, monkeypatch):
    data = _mevis(tmp_path / "valid_u")
    oracle = OracleModel()
    _use_oracle(monkeypatch, oracle)
    single = tmp_path / "single"
    _eval(["mevis", "--data", data, "--model", "m", "--out", single])
    ref = _metrics(single)
    assert ref["no_target"] == 2 and ref["num_expressions"] == 4
    assert 0.25 < ref["J"] < 0.5  # cat perfect, dog shifted, both "nothing" expressions empty (0)

    sharded = tmp_path / "sharded"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    _eval(["mevis", "--data", data, "--model", "m", "--out", sharded])
    assert [p.name for p in (sharded / "per_video").iterdir()] == ["cat.json"]  # video 0 of 2
    assert not (sharded / "metrics.json").exists()  # rank 1 is not done
    with pytest.raises(DataFormatError, match="missing"):
        _eval(["mevis", "--data", data, "--merge-only", "--out", sharded])
    monkeypatch.setenv("RANK", "1")
    _eval(["mevis", "--data", data, "--model", "m", "--out", sharded])
    merged = _metrics(sharded)  # the last rank to finish merges
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    (sharded / "metrics.json").unlink()
    _eval(["mevis", "--data", data, "--merge-only", "--out", sharded])
    keys = ("J", "F", "J&F", "no_target", "num_expressions")
    assert _numbers(_metrics(sharded), keys) == _numbers(merged, keys) == _numbers(ref, keys)

    _eval(["mevis", "--data", data, "--predictions", sharded / "predictions", "--out", tmp_path / "scored"])
    assert _numbers(_metrics(tmp_path / "scored"), ("J", "F", "J&F")) == _numbers(ref, ("J", "F", "J&F"))


def test_refdavis_oracle_scores_and_label_maps(tmp_path, monkeypatch):
    data, out = _refdavis(tmp_path / "ref-davis"), tmp_path / "out"
    oracle = OracleModel()
    _use_oracle(monkeypatch, oracle)
    _eval(["refdavis", "--data", data, "--model", "m", "--out", out])
    res = _metrics(out)
    assert res["no_target"] == 0 and len(oracle.calls) == 8 and {m for _, m in oracle.calls} == {"temporal"}
    cat = res["per_annotator"]["anno_0"]
    assert 0.5 < res["J&F"] < 1.0 and cat["num_objects"] == 2
    labels = np.asarray(Image.open(out / "predictions" / "anno_2" / "cat" / "00003.png"))
    np.testing.assert_array_equal(labels == 1, _box_masks(0)[3])
    _eval(["refdavis", "--data", data, "--predictions", out / "predictions", "--out", tmp_path / "s"])
    assert _numbers(_metrics(tmp_path / "s"), ("J&F", "J", "F")) == _numbers(res, ("J&F", "J", "F"))


def test_gcg_oracle_perfect_cat_and_predictions_parity(tmp_path, monkeypatch, no_java):
    data, out = _gcg(tmp_path / "gcg"), tmp_path / "out"
    _use_oracle(monkeypatch, OracleModel())
    _eval(["gcg", "--data", data, "--model", "m", "--out", out, "--phrase-encoder", "bow"])
    res = _metrics(out)
    per = res["per_video"]
    assert per["1"]["mIoU"] == 1.0 and 0 < per["2"]["mIoU"] < 1  # the speck was removed; the dog is shifted
    assert res["Recall"] == 1.0 and res["no_target"] == 0
    assert res["CIDEr"] > 0 and "METEOR" in res["skipped"] and res["tokenizer"] == "simple"
    _eval(["gcg", "--data", data, "--predictions", out / "predictions", "--out", tmp_path / "s",
           "--phrase-encoder", "bow"])
    keys = ("mIoU", "Recall", "CIDEr")
    assert _numbers(_metrics(tmp_path / "s"), keys) == _numbers(res, keys)


def test_vidstg_prompts_boxes_and_parity(tmp_path, monkeypatch):
    data, out = _vidstg(tmp_path / "vidstg"), tmp_path / "out"
    oracle = OracleModel()
    _use_oracle(monkeypatch, oracle)
    _eval(["vidstg", "--data", data, "--model", "m", "--out", out])
    assert [p for p, _ in oracle.calls] == ["what is the cat? Please respond with segmentation masks.",
                                            "Can you segment the dog in this video?"]
    res = _metrics(out)
    assert res["interrogative"]["mIoU"] == 1.0 and res["declarative"]["mIoU"] == 0.0 and res["no_target"] == 1
    assert json.loads((out / "per_video" / "q1.json").read_text())["no_target"] is True
    _eval(["vidstg", "--data", data, "--predictions", out / "predictions", "--out", tmp_path / "s"])
    assert _metrics(tmp_path / "s")["interrogative"] == res["interrogative"]


# ------------------------------------------------------------------------------------------------ units
def test_shard_and_small_components():
    assert shard(list("abcde"), 0, 2) == ["a", "c", "e"] and shard(list("abcde"), 1, 2) == ["b", "d"]
    m = np.zeros((1, 20, 20), bool)
    m[0, :5, :4] = True  # 20 px: kept
    m[0, 10:13, 10:16] = True  # 18 px: removed
    m[0, 19, 19] = True
    assert remove_small_components(m).sum() == 20


def test_source_required_and_errors(tmp_path):
    data = _mevis(tmp_path / "valid_u")
    with pytest.raises(ConfigError, match="--model"):
        _eval(["mevis", "--data", data, "--out", tmp_path / "o"])
    with pytest.raises(DataFormatError, match="meta_expressions"):
        _eval(["refdavis", "--data", tmp_path / "nowhere", "--model", "m", "--out", tmp_path / "o"])
