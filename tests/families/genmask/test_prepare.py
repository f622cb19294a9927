"""Prepared datasets (genmask_sdk.data.prepared) and their converters (genmask_sdk.data.converters).

Every converter reads a small fixture that the tests build in its real on-disk layout (refer's
pickle + COCO instances + train2014 jpgs; COCO-Stuff label maps; ADE20K; COCO captions json), is
written with ``write_prepared``, opened with ``open_prepared`` and compared with what the test put
in. Bad data must fail with a typed error naming the sample, leaving nothing half-written.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from genmask_sdk.data.converters import (
    ADE20K_CLASSES,
    COCO_STUFF_CLASSES,
    ade20k_samples,
    coco_caption_samples,
    coco_stuff_samples,
    refer_samples,
    scene_samples,
)
from genmask_sdk.data.prepared import INFO_FILE, PREPARED_VERSION, PreparedSample, open_prepared, write_prepared
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError, InvalidSampleError

H, W = 24, 32  # fixture images: small, not square (catches transposed masks)


# ---------------------------------------------------------------- fixture builders (real layouts)

def save_jpg(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """Write a random RGB jpg; return its pixels as decoded from disk (uint8 (H, W, 3))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return np.asarray(Image.open(path).convert("RGB"))


def save_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (iscrowd style), computed here without pycocotools."""
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = ([0] if flat[0] else []) + np.diff(bounds).tolist()  # runs start with background
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def block(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def build_refer(root: Path) -> dict:
    """refer's data folder: refcoco/{instances.json, refs(unc).p} + images/mscoco/images/train2014.

    Returns what the converter must give back: image pixels by image id and masks by ann id.
    """
    images = root / "images/mscoco/images/train2014"
    pixels = {9: save_jpg(images / "COCO_train2014_000000000009.jpg", 1),
              25: save_jpg(images / "COCO_train2014_000000000025.jpg", 2)}
    crowd = block(2, 3, 10, 12)
    crowd[5, 4] = False
    compressed = block(12, 20, 22, 30)
    polygon = [[4.0, 14.0, 14.0, 14.0, 14.0, 20.0, 4.0, 20.0]]  # x, y pairs: a 10 x 6 rectangle
    polygon_rle = coco_mask.merge(coco_mask.frPyObjects(polygon, H, W))
    anns = [
        {"id": 101, "image_id": 9, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(crowd)},
        {"id": 102, "image_id": 25, "category_id": 1, "iscrowd": 0, "segmentation": polygon},
        {"id": 103, "image_id": 9, "category_id": 1, "iscrowd": 0, "segmentation": {
            "size": [H, W],
            "counts": coco_mask.encode(np.asfortranarray(compressed.astype(np.uint8)))["counts"].decode()}},
    ]
    instances = {"images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": H, "width": W}
                            for i in (9, 25)],
                 "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    refs = [
        {"ref_id": 0, "ann_id": 101, "image_id": 9, "split": "train", "category_id": 1, "sent_ids": [0, 1],
         "file_name": "COCO_train2014_000000000009_101.jpg",
         "sentences": [{"sent_id": 0, "sent": "man on the left", "raw": "Man on the left", "tokens": []},
                       {"sent_id": 1, "sent": "guy in red", "raw": "guy in red", "tokens": []}]},
        {"ref_id": 1, "ann_id": 102, "image_id": 25, "split": "train", "category_id": 1, "sent_ids": [2],
         "sentences": [{"sent_id": 2, "sent": "the bottom box", "raw": "the bottom box", "tokens": []}]},
        {"ref_id": 2, "ann_id": 103, "image_id": 9, "split": "testA", "category_id": 1, "sent_ids": [3],
         "sentences": [{"sent_id": 3, "sent": "right corner", "raw": "right corner", "tokens": []}]},
    ]
    (root / "refcoco").mkdir(parents=True)
    (root / "refcoco/instances.json").write_text(json.dumps(instances))
    with open(root / "refcoco/refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    masks = {101: crowd, 102: coco_mask.decode(polygon_rle).astype(bool), 103: compressed}
    return {"pixels": pixels, "masks": masks}


def build_coco_stuff(root: Path) -> dict:
    """COCO-Stuff: train2017/*.jpg + stuffthingmaps_trainval2017/train2017/*.png (255 = unlabeled)."""
    labels = np.full((H, W), 255, dtype=np.uint8)
    labels[:, :10] = 0            # person
    labels[:12, 10:] = 95         # building-other (hyphenated: left out by default)
    labels[12:, 10:] = 168        # tree
    labels[0, 31] = 1             # bicycle: 1 pixel, under min_pixels
    stem = "000000000139"
    pixels = save_jpg(root / "train2017" / f"{stem}.jpg", 3)
    save_labels(root / "stuffthingmaps_trainval2017/train2017" / f"{stem}.png", labels)
    return {"stem": stem, "pixels": pixels, "labels": labels}


def build_ade20k(root: Path) -> dict:
    """ADEChallengeData2016/{images,annotations}/training (0 = other, 1..150 = classes)."""
    base = root / "ADEChallengeData2016"
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[:8] = 3                # sky
    labels[8:, :16] = 1           # wall
    labels[8:, 16:] = 13          # person
    out = {}
    for index, labelling in ((1, labels), (2, labels[::-1].copy())):
        stem = f"ADE_train_{index:08d}"
        out[stem] = (save_jpg(base / "images/training" / f"{stem}.jpg", 10 + index), labelling)
        save_labels(base / "annotations/training" / f"{stem}.png", labelling)
    return out


def build_captions(root: Path, captions: dict[int, list[str]]) -> dict[int, np.ndarray]:
    """COCO captions: annotations/captions_train2014.json + train2014/COCO_train2014_*.jpg."""
    pixels = {i: save_jpg(root / "train2014" / f"COCO_train2014_{i:012d}.jpg", 20 + i) for i in captions}
    anns, next_id = [], 500
    for image_id, texts in captions.items():
        for text in texts:
            anns.append({"id": next_id, "image_id": image_id, "caption": text})
            next_id += 1
    data = {"images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": H, "width": W}
                       for i in captions], "annotations": anns}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/captions_train2014.json").write_text(json.dumps(data))
    return pixels


def round_trip(samples, out: Path) -> tuple[list[PreparedSample], list[PreparedSample], object]:
    """(what the converter gave, what the prepared set gives back, the opened set)."""
    given = list(samples)
    write_prepared(iter(given), out, description="test", progress=False)
    prepared = open_prepared(out)
    return given, list(prepared), prepared


def assert_same(given: list[PreparedSample], got: list[PreparedSample]) -> None:
    assert [s.id for s in got] == [s.id for s in given]
    for a, b in zip(given, got):
        assert np.array_equal(a.image, b.image) and b.image.dtype == np.uint8 and b.image.shape[2] == 3
        assert (a.instruction, a.task, a.source) == (b.instruction, b.task, b.source)
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            assert b.mask.dtype == bool and np.array_equal(a.mask, b.mask)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- converters: round trips

def test_refer_round_trip(tmp_path):
    truth = build_refer(tmp_path / "refer")
    given, got, prepared = round_trip(refer_samples(tmp_path / "refer", dataset="refcoco", split_by="unc",
                                                    split="train"), tmp_path / "out")
    assert_same(given, got)
    assert [s.id for s in got] == ["refcoco/train/ref0/sent0", "refcoco/train/ref0/sent1", "refcoco/train/ref1/sent2"]
    assert [s.instruction for s in got] == ["man on the left", "guy in red", "the bottom box"]
    assert {s.source for s in got} == {"refcoco"} and {s.task for s in got} == {"seg"}
    assert np.array_equal(got[0].image, truth["pixels"][9]) and np.array_equal(got[2].image, truth["pixels"][25])
    assert np.array_equal(got[0].mask, truth["masks"][101]) and np.array_equal(got[1].mask, truth["masks"][101])
    assert np.array_equal(got[2].mask, truth["masks"][102])
    assert got[2].mask[14:20, 4:14].mean() > 0.9 and got[2].mask.sum() < 90  # the polygon's rectangle, y down
    assert prepared.info["version"] == PREPARED_VERSION
    assert prepared.info["counts"] == {"task": {"seg": 3}, "source": {"refcoco": 3}}
    test_a = list(refer_samples(tmp_path / "refer", split="testA"))  # compressed-RLE annotation
    assert [s.id for s in test_a] == ["refcoco/testA/ref2/sent3"]
    assert np.array_equal(test_a[0].mask, truth["masks"][103])


def test_refer_bad_split_and_split_by_say_what_exists(tmp_path):
    build_refer(tmp_path / "refer")
    with pytest.raises(ConfigError, match=r"split 'val'.*\['testA', 'train'\]"):
        refer_samples(tmp_path / "refer", split="val")
    with pytest.raises(ArtifactNotFoundError, match=r"refs\(google\)\.p.*refs\(unc\)\.p"):
        refer_samples(tmp_path / "refer", split_by="google")


def test_coco_stuff_round_trip(tmp_path):
    truth = build_coco_stuff(tmp_path / "coco")
    given, got, prepared = round_trip(coco_stuff_samples(tmp_path / "coco", split="train2017"), tmp_path / "out")
    assert_same(given, got)
    stem, labels = truth["stem"], truth["labels"]
    assert [(s.id, s.instruction) for s in got] == [(f"coco-stuff/train2017/{stem}/0", "person"),
                                                    (f"coco-stuff/train2017/{stem}/168", "tree")]
    assert COCO_STUFF_CLASSES[168] == "tree" and len(COCO_STUFF_CLASSES) == 182
    for sample, value in zip(got, (0, 168)):
        assert np.array_equal(sample.image, truth["pixels"]) and np.array_equal(sample.mask, labels == value)
    assert prepared.info["counts"]["source"] == {"coco-stuff": 2}
    kept = [s.instruction for s in coco_stuff_samples(tmp_path / "coco", keep_hyphenated=True, min_pixels=1)]
    assert kept == ["person", "bicycle", "building-other", "tree"]


def test_ade20k_round_trip_and_class_limit(tmp_path):
    truth = build_ade20k(tmp_path)
    given, got, prepared = round_trip(ade20k_samples(tmp_path, split="training"), tmp_path / "out")
    assert_same(given, got)
    assert len(ADE20K_CLASSES) == 150 and [s.instruction for s in got[:3]] == ["wall", "sky", "person"]
    for sample in got:
        stem, value = sample.id.split("/")[2], int(sample.id.split("/")[3])
        pixels, labels = truth[stem]
        assert sample.source == "ade20k" and np.array_equal(sample.image, pixels)
        assert np.array_equal(sample.mask, labels == value) and ADE20K_CLASSES[value - 1] == sample.instruction
    assert prepared.info["counts"] == {"task": {"seg": 6}, "source": {"ade20k": 6}}
    one = [s.id for s in ade20k_samples(tmp_path / "ADEChallengeData2016", max_classes_per_image=1, seed=5)]
    assert len(one) == 2 and one == [s.id for s in ade20k_samples(tmp_path, max_classes_per_image=1, seed=5)]


def test_captions_round_trip(tmp_path):
    pixels = build_captions(tmp_path / "coco", {9: ["A cat.", " a cat on a mat "], 25: ["Two dogs."], 30: []})
    given, got, prepared = round_trip(coco_caption_samples(tmp_path / "coco", split="train2014",
                                                           captions_per_image=0), tmp_path / "out")
    assert_same(given, got)
    assert [(s.id, s.instruction) for s in got] == [("captions/train2014/9/500", "A cat."),
                                                    ("captions/train2014/9/501", "a cat on a mat"),
                                                    ("captions/train2014/25/502", "Two dogs.")]
    assert all(s.task == "gen" and s.mask is None and s.source == "captions" for s in got)
    assert np.array_equal(got[0].image, pixels[9]) and np.array_equal(got[2].image, pixels[25])
    assert prepared.info["counts"] == {"task": {"gen": 3}, "source": {"captions": 3}}
    assert prepared.indices("gen").tolist() == [0, 1, 2] and prepared.indices("seg").tolist() == []
    assert len(list(coco_caption_samples(tmp_path / "coco"))) == 2  # default: first caption per image


def test_scenes_mixed_tasks_indices_and_shards(tmp_path):
    given = list(scene_samples(7, seed=1, size=48, captions=3))
    out = write_prepared(given, tmp_path / "out", description="test", max_shard_size=20_000, progress=False)
    prepared = open_prepared(out)
    got = list(prepared)
    assert_same(given, got)
    assert len(list(out.glob("data-*.arrow"))) > 1  # several shards, read back in order
    assert out.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # not mkdtemp's 0700
    assert prepared.info["counts"] == {"task": {"gen": 3, "seg": 7}, "source": {"scenes": 10}}
    assert prepared.indices("seg").tolist() == list(range(7)) and prepared.indices("gen").tolist() == [7, 8, 9]
    assert got[0].image.shape == (48, 48, 3) and got[0].mask.shape == (48, 48)
    assert np.array_equal(prepared[-1].image, got[-1].image) and len(prepared.hf) == 10
    with pytest.raises(IndexError):
        prepared[10]
    with pytest.raises(ConfigError, match="max_shard_size"):
        write_prepared(given, tmp_path / "bad", description="x", max_shard_size="lots", progress=False)


# ---------------------------------------------------------------- bad data: typed errors, nothing half-written

def test_missing_image_names_the_sample_and_leaves_nothing(tmp_path):
    build_refer(tmp_path / "refer")
    (tmp_path / "refer/images/mscoco/images/train2014/COCO_train2014_000000000025.jpg").unlink()
    out = tmp_path / "prep" / "refcoco"
    with pytest.raises(InvalidSampleError, match=r"'refcoco/train/ref1'.*COCO_train2014_000000000025\.jpg.*missing"):
        write_prepared(refer_samples(tmp_path / "refer"), out, description="x", progress=False)
    assert not out.exists() and leftovers(out.parent) == []


def test_mask_image_size_mismatch_names_the_sample(tmp_path):
    truth = build_coco_stuff(tmp_path / "coco")
    save_labels(tmp_path / "coco/stuffthingmaps_trainval2017/train2017" / f"{truth['stem']}.png",
                truth["labels"].T.copy())  # (W, H): transposed labels
    out = tmp_path / "out"
    with pytest.raises(InvalidSampleError, match=rf"'coco-stuff/train2017/{truth['stem']}'.*size mismatch.*\(32, 24\)"):
        write_prepared(coco_stuff_samples(tmp_path / "coco"), out, description="x", progress=False)
    assert not out.exists() and leftovers(tmp_path) == []
    image = np.zeros((H, W, 3), np.uint8)
    bad = PreparedSample("custom/1", image, "thing", "seg", "scenes", mask=np.zeros((W, H), bool))
    with pytest.raises(InvalidSampleError, match=r"'custom/1'.*size mismatch"):
        write_prepared([bad], out, description="x", progress=False)


def test_empty_instruction_fails_after_good_samples_and_keeps_previous_set(tmp_path):
    build_captions(tmp_path / "coco", {9: ["A cat."], 25: ["   "]})
    out = tmp_path / "out"
    write_prepared(scene_samples(2, size=32), out, description="previous", progress=False)
    before = sorted((p.name, p.stat().st_size) for p in out.iterdir())
    with pytest.raises(InvalidSampleError, match=r"'captions/train2014/25/501'.*empty instruction"):
        write_prepared(coco_caption_samples(tmp_path / "coco"), out, description="x", progress=False)
    assert sorted((p.name, p.stat().st_size) for p in out.iterdir()) == before
    assert open_prepared(out).info["description"] == "previous" and leftovers(tmp_path) == []


def test_version_mismatch_and_missing_sets_say_to_re_prepare(tmp_path):
    out = write_prepared(scene_samples(2, size=32), tmp_path / "out", description="x", progress=False)
    info = json.loads((out / INFO_FILE).read_text())
    (out / INFO_FILE).write_text(json.dumps({**info, "version": PREPARED_VERSION + 1}))
    expected = rf"{out}.*version {PREPARED_VERSION + 1}.*genmask_sdk\.families\.genmask\.train\.prepare"
    with pytest.raises(ArtifactMismatchError, match=expected):
        open_prepared(out)
    with pytest.raises(ArtifactNotFoundError, match="genmask_sdk.families.genmask.train.prepare"):
        open_prepared(tmp_path / "nowhere")
    (out / INFO_FILE).unlink()
    with pytest.raises(ArtifactNotFoundError, match=INFO_FILE):
        open_prepared(out)


def test_duplicate_ids_empty_input_and_foreign_out_dir(tmp_path):
    sample = next(iter(scene_samples(1, size=32)))
    with pytest.raises(InvalidSampleError, match="duplicate id"):
        write_prepared([sample, sample], tmp_path / "a", description="x", progress=False)
    with pytest.raises(ValueError, match="no samples"):
        write_prepared([], tmp_path / "b", description="x", progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        write_prepared([sample], foreign, description="x", progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


# ------------------------------------------------- records validated before they are stored (issue 34)

def _damage_instances(root: Path, change) -> None:
    path = root / "refcoco/instances.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


@pytest.mark.parametrize("change, words", [
    (lambda d: d["images"], "must be a JSON object with a list 'images'"),
    (lambda d: {k: v for k, v in d.items() if k != "images"}, "no 'images'"),
    (lambda d: {**d, "images": d["images"] + [dict(d["images"][0], file_name="other.jpg")]}, "id 9 appears twice"),
    (lambda d: {**d, "images": [dict(d["images"][0], height="64")] + d["images"][1:]}, "positive integers"),
    (lambda d: {**d, "images": [dict(d["images"][0], width=float("nan"))] + d["images"][1:]}, "positive integers"),
    (lambda d: {**d, "images": [{k: v for k, v in d["images"][0].items() if k != "id"}] + d["images"][1:]},
     r"images\[0\] must be an object with 'id'"),
    (lambda d: {**d, "images": [dict(d["images"][0], id="9")] + d["images"][1:]}, "ids mix types"),
    (lambda d: {**d, "annotations": d["annotations"] + [d["annotations"][0]]}, "annotations id 101 appears twice"),
])
def test_malformed_instances_json_is_one_typed_error(tmp_path, change, words):
    build_refer(tmp_path / "refer")
    _damage_instances(tmp_path / "refer", change)
    with pytest.raises(ArtifactMismatchError, match=words):
        list(refer_samples(tmp_path / "refer", split="train"))


def test_a_caption_image_listed_twice_is_refused(tmp_path):
    build_captions(tmp_path / "coco", {9: ["A cat."], 25: ["A dog."]})
    path = tmp_path / "coco/annotations/captions_train2014.json"
    data = json.loads(path.read_text())
    data["images"].append(dict(data["images"][0], file_name="COCO_train2014_000000000025.jpg"))  # id 9 again
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactMismatchError, match="images id 9 appears twice"):
        list(coco_caption_samples(tmp_path / "coco"))


def test_null_sentences_name_the_ref(tmp_path):
    build_refer(tmp_path / "refer")
    path = tmp_path / "refer/refcoco/refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    refs[0]["sentences"] = None
    path.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(InvalidSampleError, match=r"'refcoco/train/ref0'.*'sentences' must be a list"):
        list(refer_samples(tmp_path / "refer", split="train"))


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from genmask_sdk.data.converters.common import load_rgb

    grey = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    Image.fromarray(grey).save(tmp_path / "deep.png")
    rgb = load_rgb(tmp_path / "deep.png", "s")
    assert rgb.shape == (48, 64, 3) and np.array_equal(rgb[..., 0], np.rint(grey / 257.0).astype(np.uint8))
    assert (rgb == 255).mean() < 0.01  # was 99.5 % clipped


@pytest.mark.parametrize("instruction, words", [("the \x00 cat", "control characters"), ("x" * 100_000, "characters long"),
                                                ("a \ud800 b", "lone surrogate")])
def test_instructions_inference_would_refuse_are_not_stored(tmp_path, instruction, words):
    import dataclasses

    sample = dataclasses.replace(next(iter(scene_samples(1, size=32))), instruction=instruction)
    with pytest.raises(InvalidSampleError, match=f"instruction not accepted at inference.*{words}"):
        write_prepared([sample], tmp_path / "out", description="x", progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- command line

def test_cli_scenes(tmp_path, capsys):
    from genmask_sdk.families.genmask.train.prepare import main

    out = tmp_path / "scenes"
    assert main(["--source", "scenes", "--count", "6", "--captions", "2", "--size", "48", "--out", str(out),
                 "--no-progress"]) == 0
    prepared = open_prepared(out)
    assert len(prepared) == 8 and prepared.info["counts"]["task"] == {"gen": 2, "seg": 6}
    assert "--count 6" in prepared.info["description"]
    assert main(["--source", "scenes", "--count", "3", "--size", "32", "--out", str(out), "--no-progress"]) == 0
    assert len(open_prepared(out)) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]
    assert main(["--source", "refer", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--source refer needs --root" in capsys.readouterr().err
