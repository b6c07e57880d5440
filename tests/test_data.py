"""Data pipeline: ratio sampler, synthetic determinism, LMDB round trip, decoding, counted skips."""
import random

import numpy as np
import pytest
import torch

from openrec.config import ConfigError
from openrec.data import build_dataset, build_loader, validate_section
from openrec.data.lmdb_writer import LMDBWriter, create_lmdb_from_folder, parse_label_line
from openrec.data.sampler import RatioBatchSampler, bucket_batch_size
from openrec.data.sources import LMDBSource, SynthSource
from openrec.data.transforms import DecodeError, bucket_size, decode_image
from openrec.text import build_charset, build_label_encoder

CHARSET = build_charset()
CHARS = "".join(CHARSET.characters)


def _items(ratios):
    ratios = np.asarray(ratios)
    return lambda epoch: (np.arange(len(ratios)), ratios)


# Bucket sizes chosen so that some are exact multiples of the batch size (OpenOCR drops those).
RATIOS = [1] * 16 + [2] * 7 + [4] * 33 + [5] * 12 + [8] * 1 + [12] * 3


def _flatten(batches):
    return [item[0] for b in batches for item in b]


def test_every_sample_once_per_epoch_and_no_bucket_dropped():
    sampler = RatioBatchSampler(_items(RATIOS), batch_size=8, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(_flatten(batches)) == list(range(len(RATIOS)))
        merged = {2: 1, 8: 5, 12: 5}  # buckets under min_batch (8) join the nearest narrower bucket
        size_to_ratio = {bucket_size(r): r for r in (1, 4, 5)}
        for b in batches:
            sizes = {(w, h) for _, w, h, _ in b}
            assert len(sizes) == 1  # one image size per batch
            own = {merged.get(RATIOS[i], RATIOS[i]) for i, *_ in b}
            assert own == {size_to_ratio[sizes.pop()]}
            # a remainder under min_batch is folded into the bucket's previous batch
            assert len(b) < bucket_batch_size(8, own.pop()) + 8
            assert all(e == epoch for *_, e in b)
    assert bucket_batch_size(8, 8) == 4 and bucket_size(5) == (160, 32) and bucket_size(2) == (96, 48)


def test_sampler_is_deterministic_and_varies_by_epoch():
    a = RatioBatchSampler(_items(RATIOS), batch_size=8, seed=3)
    b = RatioBatchSampler(_items(RATIOS), batch_size=8, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)
    b.set_epoch(1, start_batch=3)
    assert list(b) == list(a)[3:]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ddp_shards_disjoint_cover_everything_equal_length(world):
    shards = []
    for rank in range(world):
        s = RatioBatchSampler(_items(RATIOS), batch_size=4, seed=5, rank=rank, world_size=world)
        s.set_epoch(2)
        shards.append(list(s))
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank
    assert all(len(b) > 0 for s in shards for b in s)
    flat = [_flatten(s) for s in shards]
    for i in range(world):
        for j in range(i + 1, world):
            assert not set(flat[i]) & set(flat[j])
    assert sorted(sum(flat, [])) == list(range(len(RATIOS)))
    for step in range(len(shards[0])):  # ranks agree on the image size of every step
        assert len({s[step][0][1:3] for s in shards}) == 1


def test_synth_is_reproducible_and_labels_in_charset():
    a = SynthSource(CHARS, 25, num_samples=20, seed=7, preset="default")
    b = SynthSource(CHARS, 25, num_samples=20, seed=7, preset="default")
    assert len(a.fonts) >= 20
    assert a.texts(0) == b.texts(0) and a.texts(1) != a.texts(0)
    for i in (0, 5, 19):
        img_a, text_a = a.load(i, 0, random.Random(0))
        img_b, text_b = b.load(i, 0, random.Random(99))
        assert text_a == text_b and np.array_equal(img_a, img_b)
        assert set(text_a) <= set(CHARS) and 1 <= len(text_a) <= 25
        assert img_a.dtype == np.uint8 and img_a.ndim == 3 and img_a.shape[2] == 3
    fixed = SynthSource(CHARS, 25, num_samples=5, seed=7, fixed=True)
    assert fixed.texts(0) == fixed.texts(3)


def test_lmdb_round_trip(tmp_path):
    import cv2
    rng = np.random.default_rng(0)
    records = []
    with LMDBWriter(str(tmp_path / "db"), commit_every=2) as writer:
        for i, label in enumerate(["hello", "World", "42", "naïve"]):
            img = rng.integers(0, 255, size=(32, 20 * (i + 1), 3), dtype=np.uint8)
            ok, buf = cv2.imencode(".png", img)
            writer.add(buf.tobytes(), label, img.shape[1], img.shape[0])
            records.append((img, label))
    src = LMDBSource(str(tmp_path / "db"))
    assert len(src) == 4 and src.missing_wh == 0
    assert src.aspect_ratios(0, 12).tolist() == [1, 1, 2, 2]
    for i, (img, label) in enumerate(records):
        got, text = src.load(i, 0, random.Random(0))
        assert text == label and np.array_equal(got, img[..., ::-1])  # PNG stored BGR by cv2 -> RGB


def test_lmdb_split_parts_are_disjoint_fixed_and_cover_the_folder(tmp_path):
    import cv2
    from openrec.data import build_sources
    from openrec.data.sources import split_records
    with LMDBWriter(str(tmp_path / "db")) as writer:
        for i in range(20):
            ok, buf = cv2.imencode(".png", np.full((32, 32 + 8 * i, 3), i, np.uint8))
            writer.add(buf.tobytes(), f"w{i}", 32 + 8 * i, 32)
    kept, held = split_records(20, 0.25, seed=3)
    assert len(held) == 5 and sorted(kept.tolist() + held.tolist()) == list(range(20))
    assert np.array_equal(held, split_records(20, 0.25, seed=3)[1])  # fixed by n, fraction and seed
    assert not np.array_equal(held, split_records(20, 0.25, seed=4)[1])
    train = LMDBSource(str(tmp_path / "db"), split={"holdout": 0.25, "part": "train", "seed": 3})
    hold = LMDBSource(str(tmp_path / "db"), split={"holdout": 0.25, "part": "holdout", "seed": 3})
    assert (train.name, len(train), hold.name, len(hold)) == ("db[train]", 15, "db[holdout]", 5)
    held_labels = [hold.load(i, 0, None)[1] for i in range(5)]
    assert held_labels == [f"w{r}" for r in held]  # sample i is the i-th held-out record
    assert not set(held_labels) & {train.load(i, 0, None)[1] for i in range(15)}
    assert hold.aspect_ratios(0, 12).tolist() == [round((32 + 8 * r) / 32) for r in held]  # sizes follow the records
    section = {"datasets": [{"type": "lmdb", "path": str(tmp_path / "db"), "split": {"holdout": 0.25, "part": "holdout", "seed": 3}}]}
    assert [len(s) for s in build_sources(validate_section(section, "Eval"), build_charset())[0]] == [5]
    for split, message in (({"holdout": 0.25, "part": "test"}, "split.part must be 'train' or 'holdout'"),
                           ({"holdout": 1.0, "part": "train"}, r"split.holdout must be in \(0, 1\)"),
                           ({"holdot": 0.2, "part": "train"}, "unknown key 'holdot'"),
                           ({"part": "train"}, "missing required key 'holdout'")):
        section["datasets"][0]["split"] = split
        with pytest.raises(ConfigError, match=message):
            validate_section(section, "Eval")


def test_create_lmdb_from_folder_reports_bad_rows(tmp_path):
    import cv2
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.full((16, 40, 3), 200, np.uint8))
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "gt.txt").write_text('a.png\tabc\nimgs_missing.png\txyz\nbroken.jpg, "Quoted, label"\na.png\t\n\nnot a row\n')
    report = create_lmdb_from_folder(str(tmp_path / "imgs"), str(tmp_path / "gt.txt"), str(tmp_path / "db"))
    assert report["written"] == 1
    assert dict(report["bad"]) == {"missing_image": 1, "corrupt_image": 1, "empty_label": 1, "unparsable_line": 1}
    assert parse_label_line('x.jpg, "Quoted, label"') == ("x.jpg", "Quoted, label")
    assert LMDBSource(str(tmp_path / "db")).load(0, 0, None)[1] == "abc"


def test_decode_handles_modes_and_rejects_garbage():
    import io
    from PIL import Image
    for mode in ("L", "P", "RGBA", "CMYK", "I;16", "LA"):
        img = Image.new(mode, (20, 10))
        buf = io.BytesIO()
        img.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
        arr = decode_image(buf.getvalue())
        assert arr.shape == (10, 20, 3) and arr.dtype == np.uint8, mode
    for data, reason in ((b"", "empty_image"), (b"\x89PNG\r\n\x1a\n truncated", "corrupt_image")):
        with pytest.raises(DecodeError) as e:
            decode_image(data)
        assert e.value.reason == reason


def test_dataset_counts_skips_and_keeps_going(tmp_path):
    import cv2
    with LMDBWriter(str(tmp_path / "db")) as writer:
        ok, good = cv2.imencode(".png", np.full((32, 64, 3), 255, np.uint8))
        writer.add(good.tobytes(), "fine", 64, 32)
        writer.add(b"not an image", "bad", 64, 32)
        writer.add(good.tobytes(), "", 64, 32)
        writer.add(good.tobytes(), "x" * 40, 64, 32)
    cfg = validate_section({"datasets": [str(tmp_path / "db")], "batch_size": 8, "num_workers": 0}, "Train")
    ds = build_dataset(cfg, CHARSET, build_label_encoder({"name": "CTCLabelEncode"}, CHARSET), True, 0)
    batches = list(build_loader(ds, cfg, True, 0))
    skipped = {}
    for b in batches:
        for k, v in b["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    assert sum(len(b["text"]) for b in batches) == 1
    assert skipped == {"corrupt_image": 1, "empty": 1, "too_long": 1}
    assert batches[0]["image"].shape[1:] == (3, 48, 96) and torch.all(batches[0]["image"] <= 1)


def test_persistent_training_workers_follow_the_epoch():
    # Training workers outlive an epoch (their font caches stay warm): every epoch must still give the
    # batches a loader without workers gives, and the epochs must differ.
    cfg = validate_section({"datasets": [{"type": "synth", "num_samples": 24, "seed": 2}], "batch_size": 8,
                            "num_workers": 2}, "Train")
    ds = build_dataset(cfg, CHARSET, build_label_encoder({"name": "CTCLabelEncode"}, CHARSET), True, 0)
    with_workers, without = build_loader(ds, cfg, True, 0), build_loader(ds, dict(cfg, num_workers=0), True, 0)
    assert with_workers.persistent_workers and not build_loader(ds, cfg, False, 0).persistent_workers
    epochs = []
    for epoch in range(3):
        got = {}
        for name, loader in (("workers", with_workers), ("main", without)):
            loader.batch_sampler.set_epoch(epoch)
            got[name] = [(b["text"], b["image"]) for b in loader]
        assert [t for t, _ in got["workers"]] == [t for t, _ in got["main"]], epoch
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got["workers"], got["main"])), epoch
        epochs.append(sorted(t for texts, _ in got["main"] for t in texts))
    assert epochs[0] != epochs[1] != epochs[2]


def test_section_validation_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"Train: unknown key 'batchsize'.*'batch_size'"):
        validate_section({"datasets": [{"type": "synth", "num_samples": 2}], "batchsize": 4}, "Train")
    with pytest.raises(ConfigError, match=r"Train.datasets is empty"):
        validate_section({"datasets": []}, "Train")
    with pytest.raises(ConfigError, match=r"Train.datasets\[0\].path: LMDB folder not found"):
        validate_section({"datasets": [str(tmp_path / "nope")]}, "Train")
    with pytest.raises(ConfigError, match=r"Train.datasets\[0\]: unknown key 'num_sample'"):
        validate_section({"datasets": [{"type": "synth", "num_sample": 2}]}, "Train")


def test_lmdb_is_read_by_forked_workers_and_listed_twice(tmp_path):
    import cv2
    with LMDBWriter(str(tmp_path / "db")) as writer:
        for i in range(40):
            ok, buf = cv2.imencode(".png", np.full((32, 64, 3), i, np.uint8))
            writer.add(buf.tobytes(), f"w{i}", 64, 32)
    path = str(tmp_path / "db")
    # the same folder twice in one process (as in Train and Eval), read by two worker processes
    cfg = validate_section({"datasets": [path, path], "batch_size": 8, "num_workers": 2}, "Train")
    ds = build_dataset(cfg, CHARSET, build_label_encoder({"name": "CTCLabelEncode"}, CHARSET), True, 0)
    ds.sources[0].load(0, 0, None)  # the parent has used the environment before forking
    texts, skipped = [], {}
    for b in build_loader(ds, cfg, True, 0):
        texts += b["text"]
        for k, v in b["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    assert skipped == {} and sorted(texts) == sorted([f"w{i}" for i in range(40)] * 2)


def test_holdout_recipe_never_evaluates_a_crop_it_trains_on(tmp_path, monkeypatch):
    """configs/rec/svtrv2/svtrv2_mamba_tiny_real_holdout.yml: per real folder, the Train entry's records and
    the Eval entry's are disjoint and together the whole folder (small stand-in LMDBs under ./data)."""
    import os
    import cv2
    from openrec.config import load_config
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, "configs/rec/svtrv2/svtrv2_mamba_tiny_real_holdout.yml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "fonts").mkdir(parents=True)
    for name, n in (("IIIT5k_train_2000", 40), ("SVT_train_257", 11), ("IC15_train_4468", 25)):
        with LMDBWriter(str(tmp_path / "data" / "real_train" / name)) as writer:
            for i in range(n):
                ok, buf = cv2.imencode(".png", np.full((32, 64, 3), i, np.uint8))
                writer.add(buf.tobytes(), f"{name}-{i}", 64, 32)
    train = [e for e in validate_section(config["Train"], "Train")["datasets"] if e["type"] == "lmdb"]
    held = [e for e in validate_section(config["Eval"], "Eval")["datasets"] if e["type"] == "lmdb"]
    assert [e["path"] for e in train] == [e["path"] for e in held] and len(train) == 3
    for t, h in zip(train, held):
        a, b = LMDBSource(t["path"], split=t["split"]), LMDBSource(h["path"], split=h["split"])
        labels_a = {a.load(i, 0, None)[1] for i in range(len(a))}
        labels_b = {b.load(i, 0, None)[1] for i in range(len(b))}
        assert not labels_a & labels_b and len(labels_a | labels_b) == len(a) + len(b)
        assert len(b) == round(0.2 * (len(a) + len(b))) and b.name.endswith("[holdout]")
