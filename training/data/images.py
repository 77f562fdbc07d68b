"""Image datasets as 1-frame videos: refCOCO / refCOCO+ / refCOCOg (refer format) and semantic segmentation
(ADE20K, COCO-Stuff) as class prompts.

refer layout (lichengunc/refer, as LISA ships it)::

    <root>/refs(unc).p        pickle: [{"ref_id", "ann_id", "image_id", "split", "sentences": [{"sent", ...}], ...}]
    <root>/instances.json     COCO: images [{"id", "file_name", "height", "width"}], annotations [{"id",
                              "image_id", "segmentation" (polygons or RLE)}]
    images: <root>/../images/mscoco/images/train2014/<file_name> (or pass images_root)

The pickle is read by an unpickler that only constructs plain builtin values (dict, list, str, numbers ...):
any other global in the stream (functions, classes, modules) is refused, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vglamm.errors import DataFormatError
from vglamm.sample import GroundedSample

from ._rle import decode_rle
from .base import GroundedDataset, load_json, read_image, read_index_png
from .templates import REFER_ANSWERS, REFER_IMAGE_QUESTIONS, SEM_SEG_QUESTIONS, pick

_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
                            "float", "complex", "bool", "NoneType", "object"})


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # py2 pickles name the module __builtin__; copy_reg._reconstructor appears for old-style objects
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            import builtins

            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only builtin data types are allowed")


def safe_load_pickle(path: str | os.PathLike):
    """Load a pickle that may only contain builtin data (dicts, lists, strings, numbers)."""
    data = Path(path).read_bytes()
    last: Exception | None = None
    for enc in ("ASCII", "latin1"):  # refer's pickles come from Python 2
        try:
            return _BuiltinsOnlyUnpickler(io.BytesIO(data), encoding=enc).load()
        except UnicodeDecodeError as e:
            last = e
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise DataFormatError(f"{path}: not a plain-data pickle ({e})") from e
    raise DataFormatError(f"{path}: cannot decode pickle strings ({last})")


def coco_segmentation_mask(segm, h: int, w: int) -> np.ndarray:
    """COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) -> (H, W) bool."""
    from pycocotools import mask as cocomask

    if isinstance(segm, list):  # polygons: rasterise to RLE, then decode like the other kinds
        rles = cocomask.frPyObjects(segm, h, w)
        rle = cocomask.merge(rles) if isinstance(rles, list) else rles
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        rle = segm
    else:
        raise DataFormatError(f"unknown COCO segmentation of type {type(segm).__name__}")
    return decode_rle({"size": list(rle["size"]), "counts": rle["counts"]})


@dataclass
class RefRecord:
    ref_id: int
    image_id: int
    ann_ids: list[int]
    sentences: list[str]
    file_name: str


_DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


class RefCOCODataset(GroundedDataset):
    """refCOCO / refCOCO+ / refCOCOg: one sample per referring object; the sentence is drawn per epoch
    (``random_templates``) or the first one."""

    name = "refcoco"

    def __init__(self, root: str | os.PathLike, split: str = "train", *, dataset: str | None = None,
                 split_by: str | None = None, images_root: str | os.PathLike | None = None, name: str | None = None,
                 random_templates: bool = False, sampling=None):
        self.root = Path(root)
        dataset = dataset or self.root.name
        super().__init__(sampling, name=name or dataset, random_templates=random_templates)
        split_by = split_by or _DEFAULT_SPLIT_BY.get(dataset, "unc")
        refs_path = self.root / f"refs({split_by}).p"
        refs = safe_load_pickle(refs_path)
        inst_path = self.root / "instances.json"
        inst = load_json(inst_path)
        self.images_root = Path(images_root) if images_root else self._default_images_root()
        try:
            self.images = {int(im["id"]): im for im in inst["images"]}
            self.anns = {int(a["id"]): a for a in inst["annotations"]}
            for r in refs:
                if r["split"] != split:
                    continue
                ann_ids = r["ann_id"] if isinstance(r["ann_id"], list) else [r["ann_id"]]
                for a in ann_ids:
                    if int(a) not in self.anns:
                        raise DataFormatError(f"{refs_path}: ref {r['ref_id']} uses ann_id {a}, absent from {inst_path}")
                sents = [s["sent"] for s in r["sentences"]]
                if not sents:
                    raise DataFormatError(f"{refs_path}: ref {r['ref_id']} has no sentences")
                image = self.images[int(r["image_id"])]
                self._records.append(RefRecord(int(r["ref_id"]), int(r["image_id"]), [int(a) for a in ann_ids],
                                               sents, image["file_name"]))
        except (KeyError, TypeError) as e:
            raise DataFormatError(f"{refs_path} / {inst_path}: missing or bad field {e}") from e

    def _default_images_root(self) -> Path:
        for cand in (self.root.parent / "images" / "mscoco" / "images" / "train2014", self.root / "images"):
            if cand.is_dir():
                return cand
        return self.root.parent / "images" / "mscoco" / "images" / "train2014"

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r: RefRecord = self._records[i]
        image = read_image(self.images_root / r.file_name)
        h, w = image.shape[:2]
        mask = np.zeros((h, w), bool)
        for a in r.ann_ids:
            mask |= coco_segmentation_mask(self.anns[a]["segmentation"], h, w)
        trng = self.template_rng(rng)
        sent = r.sentences[0] if trng is None else r.sentences[int(trng.integers(len(r.sentences)))]
        conversation = [{"role": "user", "content": pick(REFER_IMAGE_QUESTIONS, trng).format(exp=sent.strip())},
                        {"role": "assistant", "content": pick(REFER_ANSWERS, trng)}]
        return GroundedSample(image[None], conversation, mask[None, None], np.array([0]),
                              f"{self.name}:{r.ref_id}", {"image_id": r.image_id, "sentence": sent})


# ---------------------------------------------------------------------------------------------------------------
# semantic segmentation as class prompts


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names, index order, from a JSON list, ADE20K's ``objectInfo150`` (csv/txt: Idx, ..., Name) or a text
    file of ``name`` / ``id: name`` lines. Synonyms after ``;`` or ``,`` are dropped (``"wall;walls"`` -> ``"wall"``)."""
    path = Path(path)
    if path.suffix == ".json":
        names = load_json(path)
        if not isinstance(names, list):
            raise DataFormatError(f"{path}: expected a JSON list of class names")
        return [str(n) for n in names]
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    names = []
    if path.stem.lower().startswith("objectinfo"):
        sep = "," if path.suffix == ".csv" else "\t"
        for ln in lines[1:]:  # header: Idx Ratio Train Val Name
            cols = ln.split(sep) if sep in ln else ln.split()
            names.append(cols[-1].split(";")[0].strip().strip('"'))
        return names
    for ln in lines:
        name = ln.split(":", 1)[1] if ":" in ln and ln.split(":", 1)[0].strip().isdigit() else ln
        names.append(name.split(";")[0].strip())
    return names


@dataclass
class SemSegRecord:
    image: Path
    label: Path


class SemSegDataset(GroundedDataset):
    """Semantic segmentation label maps as class prompts: "What is {class} in this image?" -> "It is [SEG]."

    Each sample asks about ``classes_per_sample`` classes present in the image (one turn each), chosen at random
    per epoch with ``random_templates`` or else the largest ones. Label value ``v`` is class ``v - label_offset``;
    values outside the class list (``ignore_index``, "other") are never asked about.
    """

    name = "sem_seg"

    def __init__(self, images_dir: str | os.PathLike, labels_dir: str | os.PathLike, class_names: Sequence[str], *,
                 label_offset: int = 0, ignore_index: int = 255, classes_per_sample: int = 1,
                 image_exts: Sequence[str] = (".jpg", ".jpeg", ".png"), name: str | None = None,
                 random_templates: bool = False, sampling=None):
        super().__init__(sampling, name=name, random_templates=random_templates)
        self.images_dir, self.labels_dir = Path(images_dir), Path(labels_dir)
        self.class_names = list(class_names)
        self.label_offset, self.ignore_index = label_offset, ignore_index
        self.classes_per_sample = classes_per_sample
        if not self.labels_dir.is_dir():
            raise DataFormatError(f"label folder {self.labels_dir} does not exist")
        for label in sorted(self.labels_dir.glob("*.png")):
            image = next((self.images_dir / f"{label.stem}{e}" for e in image_exts
                          if (self.images_dir / f"{label.stem}{e}").exists()), None)
            if image is not None:  # COCO-Stuff ships labels for images of a separately downloaded split
                self._records.append(SemSegRecord(image, label))
        if not self._records:
            raise DataFormatError(f"no image in {self.images_dir} has a label PNG in {self.labels_dir}")

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        # an image labelled only "other"/ignore has nothing to ask about: use the next image instead, so a
        # training run never stops on one (checking every label map up front would read the whole dataset)
        for k in range(len(self._records)):
            sample = self._load_one(self._records[(i + k) % len(self._records)], rng)
            if sample is not None:
                return sample
        raise DataFormatError(f"{self.labels_dir}: no label map has a class of the class list")

    def _load_one(self, r: SemSegRecord, rng: np.random.Generator) -> GroundedSample | None:
        image = read_image(r.image)
        label = read_index_png(r.label)
        if label.shape != image.shape[:2]:
            raise DataFormatError(f"{r.label}: label map {label.shape} does not match image {image.shape[:2]}")
        values, counts = np.unique(label, return_counts=True)
        keep = [(int(v), int(c)) for v, c in zip(values, counts)
                if v != self.ignore_index and 0 <= v - self.label_offset < len(self.class_names)]
        if not keep:
            return None
        trng = self.template_rng(rng)
        if trng is None:
            keep.sort(key=lambda vc: -vc[1])
            chosen = [v for v, _ in keep[: self.classes_per_sample]]
        else:
            pickn = min(self.classes_per_sample, len(keep))
            chosen = [keep[k][0] for k in trng.choice(len(keep), size=pickn, replace=False)]
        names = [self.class_names[v - self.label_offset] for v in chosen]
        conversation = []
        for cname in names:
            conversation += [{"role": "user", "content": pick(SEM_SEG_QUESTIONS, trng).format(class_name=cname)},
                             {"role": "assistant", "content": pick(REFER_ANSWERS, trng)}]
        masks = np.stack([label == v for v in chosen])[:, None]
        return GroundedSample(image[None], conversation, masks, np.array([0]), f"{self.name}:{r.image.stem}",
                              {"classes": names})


def ade20k(root: str | os.PathLike, split: str = "training", class_names: Sequence[str] | str | None = None,
           **kw) -> SemSegDataset:
    """ADE20K SceneParsing (``ADEChallengeData2016``): ``images/<split>/*.jpg``, ``annotations/<split>/*.png``
    (0 = other, class k at value k). Class names from ``class_names`` or ``objectInfo150.{csv,txt}`` /
    ``ade20k_classes.json`` in the root."""
    root = Path(root)
    names = _class_names(root, class_names, ("ade20k_classes.json", "objectInfo150.csv", "objectInfo150.txt"))
    kw.setdefault("name", "ade20k")
    return SemSegDataset(root / "images" / split, root / "annotations" / split, names, label_offset=1,
                         ignore_index=0, **kw)


def cocostuff(root: str | os.PathLike, images_root: str | os.PathLike | None = None, split: str = "train2017",
              class_names: Sequence[str] | str | None = None, **kw) -> SemSegDataset:
    """COCO-Stuff 164k: label PNGs ``<root>/<split>/*.png`` (value = class index, 255 unlabeled), images in
    ``images_root`` (default ``<root>/../coco/<split>``). Class names from ``class_names`` or
    ``cocostuff_classes.txt`` / ``.json`` in the root."""
    root = Path(root)
    names = _class_names(root, class_names, ("cocostuff_classes.json", "cocostuff_classes.txt", "labels.txt"))
    kw.setdefault("name", "cocostuff")
    images = Path(images_root) if images_root else root.parent / "coco" / split
    return SemSegDataset(images, root / split, names, label_offset=0, ignore_index=255, **kw)


def _class_names(root: Path, given, candidates) -> list[str]:
    if given is not None and not isinstance(given, (str, os.PathLike)):
        return list(given)
    if given is not None:
        return read_class_names(given)
    for c in candidates:
        if (root / c).exists():
            return read_class_names(root / c)
    raise DataFormatError(f"no class-name file in {root} (looked for {', '.join(candidates)}); pass class_names")
