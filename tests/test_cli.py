"""The `vglamm` command line: help, and what `segment` / `chat` write.

The model is replaced by a stub with known masks here: what is under test is the command's I/O (the model's own
behaviour is tested in test_model_*.py).
"""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vglamm.cli import main
from vglamm.errors import NoTargetFoundError
from vglamm.io.masks import load_davis_pngs, load_rle_json
from vglamm.io.video import load_video, write_video

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "vglamm.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for command in ["segment", "chat", "edit", "eval", "train", "validate-data", "annotate", "convert", "doctor"]:
        assert f"    {command}" in out.stdout, command


@pytest.fixture
def clip(tmp_path):
    frames = np.zeros((6, 48, 64, 3), np.uint8)
    frames[:, 10:30, 20:40] = (200, 30, 30)
    return write_video(tmp_path / "clip.mp4", frames, fps=6)


class StubModel:
    def __init__(self, found=True):
        self.found = found

    def _masks(self, video):
        m = np.zeros(video.frames.shape[:3], bool)
        m[:, 10:30, 20:40] = True
        return m

    def segment(self, video, expression, mode="temporal"):
        if not self.found:
            raise NoTargetFoundError(f"the model did not find {expression!r}")
        return self._masks(video)

    def chat(self, video, prompt, max_new_tokens=256, mode="temporal"):
        obj = SimpleNamespace(phrase="a red box", masks=self._masks(video))
        return SimpleNamespace(text="A red box sits still.", raw_text="<p> a red box </p> [SEG] sits still.",
                               objects=[obj])


@pytest.fixture
def stub(monkeypatch):
    import vglamm.modeling

    holder = SimpleNamespace(model=StubModel())
    monkeypatch.setattr(vglamm.modeling.VideoGLaMM, "from_pretrained", classmethod(lambda cls, *a, **k: holder.model))
    return holder


def test_segment_writes_rle_davis_and_overlay(clip, stub, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(clip), "the red box", "--out", str(out)]) == 0
    assert "found 'the red box' on 6/6 frames" in capsys.readouterr().out
    doc = load_rle_json(out / "masks.json")
    assert doc["objects"][0]["phrase"] == "the red box"
    masks = doc["objects"][0]["masks"]
    assert masks.shape == (6, 48, 64) and masks[:, 10:30, 20:40].all() and masks.sum() == 6 * 20 * 20
    labels = load_davis_pngs(out / "masks")
    assert np.array_equal(labels == 1, masks)
    assert len(load_video(out / "overlay.mp4")) == 6


def test_segment_not_found_is_a_clear_error(clip, stub, tmp_path, capsys):
    stub.model = StubModel(found=False)
    assert main(["segment", str(clip), "the blue whale", "--out", str(tmp_path / "o")]) == 2
    assert "the blue whale" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_chat_prints_answer_and_writes_files(clip, stub, tmp_path, capsys):
    out = tmp_path / "chat"
    assert main(["chat", str(clip), "What is there?", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "A red box sits still." in printed and "a red box: visible on 6 frames" in printed
    answer = json.loads((out / "answer.json").read_text())
    assert answer["phrases"] == ["a red box"]
    assert load_rle_json(out / "masks.json")["objects"][0]["masks"].shape == (6, 48, 64)


def test_bad_video_is_a_typed_error(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    assert main(["segment", str(bad), "x", "--out", str(tmp_path / "o")]) == 2
    assert "notes.mp4" in capsys.readouterr().err


def test_installed_training_package_is_vglamms():
    # the sam2 wheel ships a top-level `training` package; `make setup` removes it so ours is found from anywhere
    from vglamm._install_check import sam2_training_files, training_shadowed

    assert training_shadowed() is None and sam2_training_files() == []
    out = subprocess.run([sys.executable, "-c", "import training, sys; sys.stdout.write(training.__file__)"],
                         cwd="/", capture_output=True, text=True, check=True).stdout
    assert Path(out).resolve() == Path(__file__).resolve().parents[1] / "training" / "__init__.py"


def test_shadowed_training_package_gives_a_fix_it_error(monkeypatch, capsys):
    import vglamm._install_check as check

    monkeypatch.setattr(check, "training_shadowed", lambda: "/site-packages/training/__init__.py")
    assert main(["train", "recipe.yaml"]) == 2
    err = capsys.readouterr().err
    assert "sam2 wheel" in err and "--fix-sam2-training" in err
    with pytest.raises(SystemExit) as exit_info:  # other commands are unaffected
        main(["segment", "--help"])
    assert exit_info.value.code == 0
