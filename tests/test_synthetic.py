"""The synthetic grounded-video world: determinism, exact masks, unambiguous expressions, true motion, loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synthetic import WorldConfig, clip_samples, clip_seed, generate_dataset, make_clip
from training.synthetic.language import matching, stated_attributes
from training.synthetic.render import part_colours, silhouette
from training.synthetic.world import CATEGORIES, PALETTE
from vglamm.errors import ConfigError

SEEDS = range(12)


@pytest.fixture(scope="module")
def clips():
    return [make_clip(s) for s in SEEDS]


def test_same_seed_same_clip_and_different_seed_differs():
    a, b, c = make_clip(5), make_clip(5), make_clip(6)
    assert a.frames.tobytes() == b.frames.tobytes() and a.masks.tobytes() == b.masks.tobytes()
    assert a.caption == b.caption and a.expressions == b.expressions
    assert a.frames.shape != c.frames.shape or not np.array_equal(a.frames, c.frames)
    assert a.scene != c.scene


def test_config_is_respected_and_validated():
    cfg = WorldConfig(num_frames=24, height=96, width=160, min_objects=4, max_objects=4)
    clip = make_clip(1, cfg)
    assert clip.frames.shape == (24, 96, 160, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (4, 24, 96, 160) and clip.masks.dtype == bool
    with pytest.raises(ConfigError):
        make_clip(0, WorldConfig(min_objects=3, max_objects=2))
    with pytest.raises(ConfigError):
        clip_seed(0, "nonsense", 0)


def test_splits_use_disjoint_seeds():
    train = {clip_seed(0, "train", i) for i in range(500)}
    valid = {clip_seed(0, "valid", i) for i in range(500)}
    assert len(train) == 500 and not train & valid


def test_visible_masks_are_silhouettes_minus_nearer_objects(clips):
    for clip in clips:
        s = clip.scene
        for t in range(0, s.num_frames, 3):
            full = {o.obj_id: silhouette(o, t, s.height, s.width) for o in s.objects}
            for n, o in enumerate(s.objects):
                nearer = np.zeros((s.height, s.width), bool)
                for p in s.objects:
                    if p.depth > o.depth:
                        nearer |= full[p.obj_id]
                np.testing.assert_array_equal(clip.masks[n, t], full[o.obj_id] & ~nearer)
        # masks of different objects never overlap
        assert clip.masks.sum(0).max() <= 1


def test_mask_pixels_show_the_objects_colours(clips):
    kernel = np.ones((3, 3), np.uint8)
    for clip in clips:
        for n, o in enumerate(clip.scene.objects):
            allowed = np.array(sorted(part_colours(o)), np.int16)
            own = total = 0
            for t in range(clip.scene.num_frames):
                inner = cv2.erode(clip.masks[n, t].astype(np.uint8), kernel).astype(bool)
                px = clip.frames[t][inner].astype(np.int16)
                if not len(px):
                    continue
                # every interior pixel is one of the object's drawing colours
                assert (np.abs(px[:, None, :] - allowed[None]).max(-1) == 0).any(1).all()
                own += int((px == np.array(o.rgb)).all(1).sum())
                total += len(px)
            assert total > 0 and own / total > 0.4, (o, own / max(total, 1))


def _referents(text: str, scene) -> list[int]:
    """Resolve an expression from its words alone (independent of the generator's queries)."""
    words = set(re.findall(r"[a-z]+", text))
    out = []
    for o in scene.objects:
        ok = True
        colour = words & set(PALETTE)
        category = words & set(CATEGORIES)
        size = words & {"small", "large"}
        direction = words & {"left", "right", "up", "down"}
        ok &= not colour or colour == {o.colour}
        ok &= not category or category == {o.category}
        ok &= not size or size == {o.size}
        ok &= not direction or direction == {o.direction}
        if "stops" in words:
            ok &= o.stops
        if "keeps" in words:
            ok &= o.moves and not o.stops
        if {"static", "still"} & words or "not move" in text:
            ok &= not o.moves
        if ok:
            out.append(o.obj_id)
    return out


def test_every_expression_names_exactly_one_object(clips):
    kinds = set()
    for clip in clips:
        assert clip.expressions
        for e in clip.expressions:
            assert len(e.obj_ids) == 1
            assert matching(clip.scene, e.query) == list(e.obj_ids)
            assert _referents(e.text, clip.scene) == list(e.obj_ids), e.text
            kinds.add(e.kind)
            motion_words = {"moving", "stops", "still", "static", "move", "driving", "rolling", "sliding", "walking"}
            assert (e.kind == "motion") == bool(motion_words & set(e.text.split())), e.text
    assert kinds == {"attribute", "motion"}


def _centroids(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) centroids over frames where the object is (almost) unoccluded, and those frame indices."""
    areas = masks.sum((1, 2))
    good = np.flatnonzero(areas >= 0.97 * areas.max())
    pts = []
    for t in good:
        ys, xs = np.nonzero(masks[t])
        pts.append((xs.mean(), ys.mean()))
    return np.array(pts), good


def test_motion_matches_mask_trajectories(clips):
    checked = 0
    for clip in clips:
        W, H = clip.scene.width, clip.scene.height
        for n, o in enumerate(clip.scene.objects):
            c, frames = _centroids(clip.masks[n])
            if len(frames) < 2:
                continue
            checked += 1
            d = c[-1] - c[0]
            span = frames[-1] - frames[0]
            if not o.moves:
                assert np.abs(c - c[0]).max() < 1.5, (o, c)
                continue
            axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[o.direction]
            speed = abs(o.velocity[axis])
            moving_span = min(frames[-1], o.stop_frame or frames[-1]) - min(frames[0], o.stop_frame or frames[0])
            assert sign * d[axis] >= 0.8 * speed * moving_span - 1.0, (o, d, frames)
            assert abs(d[1 - axis]) < 1.5, (o, d)
            if o.stops:  # no motion after the stop frame
                after = c[frames >= o.stop_frame]
                if len(after) >= 2:
                    assert np.abs(after - after[0]).max() < 1.5
            if span >= clip.scene.num_frames // 2 and not o.stops:
                assert sign * d[axis] > 0.05 * (W if axis == 0 else H)
    assert checked >= 20


def test_caption_grounds_every_object_once(clips):
    from training.data.video_gcg import gcg_clip, render_gcg_caption

    for clip in clips:
        cap = clip.caption
        assert sorted(cap.obj_ids) == [o.obj_id for o in clip.scene.objects]
        assert len(set(cap.phrases)) == len(cap.phrases)
        g = cap.grounded()
        assert g.count("[SEG]") == len(cap.obj_ids) and g.count("<p>") == len(cap.obj_ids)
        words = cap.text.split()
        for phrase, pos in zip(cap.phrases, cap.word_positions()):
            assert " ".join(words[p] for p in pos).rstrip(".,") == phrase
        # the bracketed form goes through the GCG record builder and renders back to the same answer
        masks = {o.obj_id: clip.masks[o.obj_id - 1] for o in clip.scene.objects}
        video, anns = gcg_clip(1, [f"{t}.jpg" for t in range(clip.scene.num_frames)], cap.bracketed(), masks)
        answer, seg_ids = render_gcg_caption(video.dense_cap)
        assert answer == g
        obj_of = {int(a): o for a, o in video.dense_cap.v_id2o_id.items()}
        assert [obj_of[ids[0]] for ids in seg_ids] == cap.obj_ids


def test_clip_samples_have_one_mask_per_seg(clips):
    rng = np.random.default_rng(0)
    for clip in clips[:4]:
        samples = clip_samples(clip, rng)
        assert len(samples) == 1 + len(clip.expressions)
        for s in samples:
            assert s.num_seg() == s.masks.shape[0] and s.masks.shape[1:] == clip.masks.shape[1:]
        e = clip.expressions[0]
        np.testing.assert_array_equal(samples[1].masks[0], clip.masks[e.obj_ids[0] - 1])


def test_dataset_on_disk_loads_with_the_gcg_and_mevis_loaders(tmp_path):
    from training.data.base import FrameSampling
    from training.data.mevis import MevisDataset
    from training.data.video_gcg import VideoGCGDataset

    train = generate_dataset(tmp_path / "ds", 4, seed=3, split="train")
    valid = generate_dataset(tmp_path / "ds", 2, seed=3, split="valid")
    assert train.num_videos == 4 and train.num_expressions == sum(train.expressions_by_kind.values())
    assert set(train.expressions_by_kind) == {"attribute", "motion"}
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path / "ds", 1, seed=3, split="train")
    assert not [p for p in (tmp_path / "ds").iterdir() if p.name.startswith(".")]  # no leftovers

    every = FrameSampling(num_frames=0)
    gcg = VideoGCGDataset(train.split_dir / "video_gcg.json", sampling=every)
    assert len(gcg) == 4
    for i in range(4):
        clip = make_clip(clip_seed(3, "train", i))
        s = gcg[i]
        assert s.conversation[1]["content"] == clip.caption.grounded()
        assert s.masks.shape == (len(clip.caption.obj_ids),) + clip.masks.shape[1:]
        for k, oid in enumerate(clip.caption.obj_ids):
            np.testing.assert_array_equal(s.masks[k], clip.masks[oid - 1])
        # JPEG frames are close to the rendered ones
        assert np.abs(s.frames.astype(int) - clip.frames).mean() < 6

    mevis = MevisDataset(tmp_path / "ds", "valid", sampling=every)
    meta = json.loads((valid.split_dir / "meta_expressions.json").read_text())
    assert len(mevis) == valid.num_expressions
    for i in range(len(mevis)):
        s = mevis[i]
        video, exp_id = s.meta["video"], s.meta["exp_id"]
        index = int(video.rsplit("_", 1)[1])
        clip = make_clip(clip_seed(3, "valid", index))
        e = clip.expressions[int(exp_id)]
        assert s.meta["expression"] == e.text
        assert meta["videos"][video]["expression_kinds"][exp_id] == e.kind
        np.testing.assert_array_equal(s.masks[0], clip.masks[e.obj_ids[0] - 1])

    # the same seed writes byte-identical files
    again = generate_dataset(tmp_path / "again", 4, seed=3, split="train")
    for name in ("video_gcg.json", "meta_expressions.json", "mask_dict.json", "scenes.json"):
        assert (again.split_dir / name).read_bytes() == (train.split_dir / name).read_bytes()
    f = Path("JPEGImages/train_000002/00007.jpg")
    assert (again.split_dir / f).read_bytes() == (train.split_dir / f).read_bytes()


def test_example_clip_has_its_red_car():
    root = Path(__file__).resolve().parents[1] / "examples" / "data"
    if not (root / "red_car.mp4").exists():
        pytest.skip("examples/data/red_car.mp4 not generated")
    from vglamm.io.masks import load_rle_json
    from vglamm.io.video import load_video

    video = load_video(root / "red_car.mp4")
    objects = load_rle_json(root / "red_car_masks.json")["objects"]
    assert 2 <= len(objects) - 1 <= 2 + 1
    red = next(o["masks"] for o in objects if o["phrase"] == "a red car")
    assert red.shape == video.frames.shape[:3] and red.any(axis=(1, 2)).all()
    assert (root / "red_car.mp4").stat().st_size < 300_000
    px = video.frames[red].astype(int)
    assert px[:, 0].mean() > 150 and px[:, 1:].mean() < 110  # mostly red where the car's mask is


def test_on_the_fly_dataset_yields_consistent_samples():
    from training.synthetic import SyntheticDataset

    ds = SyntheticDataset(6, seed=1, split="valid", p_gcg=0.5)
    assert len(ds) == 6
    tasks = set()
    for i in [k for k in range(len(ds)) for _ in (0, 1)]:
        ds.set_epoch(ds.epoch + 1)
        s = ds[i]
        assert s.frames.shape[0] == 8 and s.masks.shape[:2] == (s.num_seg(), 8)
        clip = make_clip(clip_seed(1, "valid", i))
        for k, oid in enumerate(s.meta["obj_ids"]):
            np.testing.assert_array_equal(s.masks[k], clip.masks[oid - 1][s.frame_indices])
        np.testing.assert_array_equal(s.frames, clip.frames[s.frame_indices])
        tasks.add(s.meta["task"])
    a, b = ds[3], ds[3]  # same index, same epoch -> same sample
    assert a.conversation == b.conversation and np.array_equal(a.frame_indices, b.frame_indices)
    assert tasks == {"gcg", "refer"}
    with pytest.raises(ConfigError):
        SyntheticDataset(0)


def test_several_expressions_per_sample_are_turns_about_different_objects():
    from training.synthetic import SyntheticDataset

    ds = SyntheticDataset(8, seed=2, split="valid", p_gcg=0.0, exprs_per_sample=3)
    for i in range(len(ds)):
        s = ds[i]
        clip = make_clip(clip_seed(2, "valid", i))
        turns = s.meta["expressions"]
        assert 1 <= len(turns) <= 3 and len(turns) == min(3, len({e.obj_ids for e in clip.expressions}))
        assert [m["role"] for m in s.conversation] == ["user", "assistant"] * len(turns)
        assert s.num_seg() == len(turns) == s.masks.shape[0]  # one [SEG] and one mask track per turn
        by_text = {e.text: e for e in clip.expressions}
        referred = [by_text[text].obj_ids for _, text in turns]
        assert len(set(referred)) == len(referred)  # every turn is about a different object
        for k, (kind, text) in enumerate(turns):
            assert text in s.conversation[2 * k]["content"] and by_text[text].kind == kind
            expected = np.any([clip.object_masks(o) for o in referred[k]], axis=0)[s.frame_indices]
            np.testing.assert_array_equal(s.masks[k], expected)
    with pytest.raises(ConfigError):
        SyntheticDataset(2, exprs_per_sample=0)


def test_motion_share_sets_how_often_a_turn_asks_by_motion():
    from training.synthetic import SyntheticDataset

    def kinds(share):
        ds = SyntheticDataset(12, seed=4, split="valid", p_gcg=0.0, exprs_per_sample=3, motion_share=share)
        out = []
        for i in range(len(ds)):
            clip = make_clip(clip_seed(4, "valid", i))
            both = {e.obj_ids for e in clip.expressions if e.kind == "motion"} & \
                   {e.obj_ids for e in clip.expressions if e.kind == "attribute"}
            by_text = {e.text: e for e in clip.expressions}
            turns = [by_text[text] for _, text in ds[i].meta["expressions"]]
            assert len({e.obj_ids for e in turns}) == len(turns)  # still one turn per object
            out += [e.kind for e in turns if e.obj_ids in both]
        return out

    assert set(kinds(1.0)) == {"motion"} and set(kinds(0.0)) == {"attribute"}
    half = kinds(0.5)
    assert 0.25 < half.count("motion") / len(half) < 0.75
    with pytest.raises(ConfigError, match="motion_share"):
        SyntheticDataset(2, motion_share=1.5)


def test_answer_styles_repeat_the_expression_or_name_the_object():
    from training.synthetic import SyntheticDataset
    from vglamm.modeling.processing import seg_phrases

    phrase = SyntheticDataset(4, seed=3, split="valid", p_gcg=0.0, exprs_per_sample=2, answers="phrase")
    named = SyntheticDataset(4, seed=3, split="valid", p_gcg=0.0, exprs_per_sample=2, answers="name")
    for i in range(len(phrase)):
        for k, (_, text) in enumerate(phrase[i].meta["expressions"]):
            assert seg_phrases(phrase[i].conversation[2 * k + 1]["content"]) == [text]
        s = named[i]
        clip = make_clip(named._records[i].seed, named.config)
        for k, obj_ids in enumerate(_turn_objects(s, clip)):
            (o,) = [o for o in clip.scene.objects if o.obj_id == obj_ids[0]]
            name = seg_phrases(s.conversation[2 * k + 1]["content"])
            assert name == [f"the {o.size} {o.colour} {o.category}"]
            # the name picks out the referred object alone: its mask is that object's
            np.testing.assert_array_equal(s.masks[k], clip.object_masks(o.obj_id)[s.frame_indices])
    short = SyntheticDataset(4, seed=3, split="valid", p_gcg=0.0, exprs_per_sample=3, answers="short_name")
    for i in range(len(short)):
        s, clip = short[i], make_clip(short._records[i].seed, short.config)
        by_text = {e.text: e for e in clip.expressions}
        for k, (_, text) in enumerate(s.meta["expressions"]):
            e = by_text[text]
            (o,) = [o for o in clip.scene.objects if o.obj_id == e.obj_ids[0]]
            (name,) = seg_phrases(s.conversation[2 * k + 1]["content"])
            # colour and category always; size only when the expression says it or colour + category is not unique
            needs_size = len(matching(clip.scene, {"colour": o.colour, "category": o.category})) > 1
            sized = f"the {o.size} {o.colour} {o.category}"
            assert name == (sized if "size" in e.query or needs_size else f"the {o.colour} {o.category}")
            assert all(w in name.split() for w in text.split() if w in (o.size, o.colour, o.category))
    # each [SEG]'s description: what its phrase states (the expression's own words when repeated) when that singles
    # the object out, else its full description
    full = 0
    for i in range(4):
        s, clip = phrase[i], make_clip(phrase._records[i].seed, phrase.config)
        by_text = {e.text: e for e in clip.expressions}
        for k, (_, text) in enumerate(s.meta["expressions"]):
            e = by_text[text]
            o = clip.scene.object(e.obj_ids[0])
            stated = {a: e.query[a] for a in ("colour", "category", "size") if a in e.query}
            alone = bool(stated) and matching(clip.scene, stated) == [o.obj_id]
            full += not alone
            assert s.meta["seg_described"][k] == (stated if alone else
                                                  {"colour": o.colour, "category": o.category, "size": o.size})
        s = named[i]
        assert s.meta["seg_described"] == [stated_attributes(seg_phrases(s.conversation[2 * k + 1]["content"])[0])
                                           for k in range(len(s.masks))]
        assert all(len(said) == 3 for said in s.meta["seg_described"])
    assert full > 0  # some motion expressions ("the object that stops") state no name
    plain = SyntheticDataset(4, seed=3, split="valid", p_gcg=0.0)[0]
    assert "<p>" not in plain.conversation[1]["content"] and "[SEG]" in plain.conversation[1]["content"]
    assert plain.meta["seg_described"] == [None] * len(plain.masks)
    with pytest.raises(ConfigError, match="answers"):
        SyntheticDataset(2, answers="shout")


def test_motion_answers_name_the_moving_object_and_leave_attribute_answers_alone():
    from training.synthetic import SyntheticDataset
    from vglamm.modeling.processing import seg_phrases

    phrase = SyntheticDataset(6, seed=3, split="valid", p_gcg=0.0, exprs_per_sample=3, answers="phrase")
    mixed = SyntheticDataset(6, seed=3, split="valid", p_gcg=0.0, exprs_per_sample=3, answers="phrase",
                             motion_answers="short_name")
    kinds = set()
    for i in range(len(mixed)):
        s, same = mixed[i], phrase[i]
        clip = make_clip(mixed._records[i].seed, mixed.config)
        # the same draws (expressions, frames, templates): only the motion answers' phrases differ
        assert s.meta["expressions"] == same.meta["expressions"]
        np.testing.assert_array_equal(s.masks, same.masks)
        for k, ((kind, text), obj_ids) in enumerate(zip(s.meta["expressions"], _turn_objects(s, clip))):
            kinds.add(kind)
            (said,) = seg_phrases(s.conversation[2 * k + 1]["content"])
            if kind == "attribute":
                assert said == text and s.meta["seg_described"][k] == same.meta["seg_described"][k]
            else:
                o = clip.scene.object(obj_ids[0])
                assert said in (f"the {o.colour} {o.category}", f"the {o.size} {o.colour} {o.category}")
                assert matching(clip.scene, stated_attributes(said)) == [o.obj_id]
                assert s.meta["seg_described"][k] == stated_attributes(said)
    assert kinds == {"attribute", "motion"}
    with pytest.raises(ConfigError, match="motion_answers"):
        SyntheticDataset(2, answers="phrase", motion_answers="shout")


def _turn_objects(sample, clip):
    """The referred object ids of each turn of a referring sample, looked up by expression text."""
    by_text = {e.text: e.obj_ids for e in clip.expressions}
    return [by_text[text] for _, text in sample.meta["expressions"]]


def test_named_objects_reads_names_back_into_objects():
    from training.synthetic.language import named_objects

    clip = make_clip(clip_seed(0, "test", 1), WorldConfig())
    objs = clip.scene.objects
    for o in objs:
        assert named_objects(clip.scene, f"the {o.size} {o.colour} {o.category}") == [o.obj_id]
        shared = [p for p in objs if (p.colour, p.category) == (o.colour, o.category)]
        assert named_objects(clip.scene, f" the {o.colour} {o.category} ") == ([o.obj_id] if len(shared) == 1 else None)
        alone = [p for p in objs if p.colour == o.colour]
        assert named_objects(clip.scene, f"the {o.colour} object") == ([o.obj_id] if len(alone) == 1 else None)
    a, b = objs[0], objs[-1]
    both = f"the {a.size} {a.colour} {a.category} and the {b.size} {b.colour} {b.category}"
    assert named_objects(clip.scene, both) == [a.obj_id, b.obj_id]
    absent = next(c for c in PALETTE if all(p.colour != c for p in objs))
    for phrase in (f"the {absent} {a.category}", f"a {a.colour} {a.category}", "the object moving left",
                   f"the {a.size} {a.size} {a.category}", f"the {a.colour} object {a.category}", "the object", ""):
        assert named_objects(clip.scene, phrase) is None, phrase
