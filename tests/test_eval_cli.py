"""`vglamm eval ... --predictions`: scoring masks made elsewhere, on the shared DAVIS sample."""

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vglamm.errors import ConfigError
from vglamm.evaluation import cli

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-sample"


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.skipif(not DAVIS.exists(), reason="shared DAVIS sample not found beside the repo")
def test_refdavis_predictions_scoring(tmp_path):
    data = tmp_path / "davis"
    pred = tmp_path / "pred"
    for seq in ("car-shadow",):
        files = sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))[:6]
        (data / "Annotations" / "480p" / seq).mkdir(parents=True)
        (pred / seq).mkdir(parents=True)
        for i, f in enumerate(files):
            shutil.copy(f, data / "Annotations" / "480p" / seq / f.name)
            m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if i == 2:
                m[:] = 0  # one emptied frame
            cv2.imwrite(str(pred / seq / f.name), m)
    args = _parse(["eval", "refdavis", "--data", str(data), "--predictions", str(pred), "--out",
                   str(tmp_path / "out"), "--no-progress"])
    assert args.func(args) == 0
    res = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert res["J-Mean"] == pytest.approx(5 / 6) and res["F-Mean"] == pytest.approx(5 / 6)
    assert res["protocol"] == "unsupervised" and res["num_objects"] == 1


def test_no_model_nor_predictions_says_what_to_do(tmp_path):
    args = _parse(["eval", "mevis", "--data", str(tmp_path), "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--predictions"):
        args.func(args)
