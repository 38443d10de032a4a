"""Data: list files and trees, TSN sampling, PyAV decoding with seeking, frame folders,
transforms, the built-in task, datasets with bad files, seeded and sharded samplers."""

from __future__ import annotations

import torch
import pytest

from afnet.data.datasets import Batch, ClipDataset, Failure, MotionSource, RecordSource, Sample, collate
from afnet.data.decode import DecodeError, VideoReader, read_frame_folder
from afnet.data.demo_files import write_demo_data
from afnet.data.lists import (
    DataError,
    VideoRecord,
    check_exist,
    load_entries,
    read_class_names,
    read_list,
    scan_tree,
)
from afnet.data.loader import SeededSampler, ShardSampler, make_loader, sample_seed
from afnet.data.sampling import dense_indices, sample_indices, tsn_test_indices, tsn_train_indices
from afnet.data.synthetic import CLASSES, MotionTask, demo_split
from afnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MultiScaleCrop, EvalTransform, TrainTransform, normalize
from data_utils import frame_number, write_frame_folder, write_lines, write_numbered_video

pytestmark = pytest.mark.usefixtures("one_thread")


# -- list files ----------------------------------------------------------------------------------
def test_video_list_single_and_multi_label(tmp_path):
    lst = write_lines(tmp_path / "train.txt", ["# comment", "a/x.mp4 3", "", "b/my video.mp4 1,4,7", "/abs/y.avi 0"])
    records = read_list(lst, tmp_path / "root")
    assert records == [
        VideoRecord(str(tmp_path / "root/a/x.mp4"), (3,)),
        VideoRecord(str(tmp_path / "root/b/my video.mp4"), (1, 4, 7)),
        VideoRecord("/abs/y.avi", (0,)),
    ]
    assert not any(r.is_frame_folder for r in records)


def test_frame_folder_list(tmp_path):
    records = read_list(write_lines(tmp_path / "l.txt", ["v/001 120 5", "v/002 7 0"]), tmp_path)
    assert [(r.path, r.num_frames, r.labels) for r in records] == [
        (str(tmp_path / "v/001"), 120, (5,)), (str(tmp_path / "v/002"), 7, (0,))]
    assert all(r.is_frame_folder for r in records)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["a.mp4 x"], "l.txt:1: label must be an int"),
        (["a.mp4 -1"], "l.txt:1: labels must be >= 0"),
        (["a.mp4"], "l.txt:1: expected 'path label'"),
        (["d 10 2", "e.mp4 3"], "l.txt:2: expected 'path num_frames label'"),
        (["# only a comment", ""], "holds no entries"),
    ],
)
def test_list_errors_name_the_file_and_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        read_list(write_lines(tmp_path / "l.txt", lines))


def test_missing_list_file_and_missing_entries(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_list(tmp_path / "nope.txt")
    (tmp_path / "ok.mp4").write_bytes(b"")
    lines = ["ok.mp4 0"] + [f"gone{i}.mp4 0" for i in range(7)]
    records = read_list(write_lines(tmp_path / "l.txt", lines), tmp_path)
    with pytest.raises(DataError) as err:
        check_exist(records, "l.txt")
    text = str(err.value)
    assert "7 file(s) listed in l.txt do not exist" in text and "gone0.mp4" in text and "gone4.mp4" in text
    assert "gone5.mp4" not in text and "(2 more)" in text and "ok.mp4" not in text


def test_directory_tree_and_class_names(tmp_path):
    for cls, names in (("walk", ["b.mp4", "a.MP4", "notes.txt"]), ("jump", ["c.avi"])):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for n in names:
            (tmp_path / "train" / cls / n).write_bytes(b"")
    records, classes = scan_tree(tmp_path / "train")
    assert classes == ["jump", "walk"]
    assert [(r.path.split("/")[-1], r.labels) for r in records] == [("c.avi", (0,)), ("a.MP4", (1,)), ("b.mp4", (1,))]
    (tmp_path / "val" / "walk").mkdir(parents=True)
    (tmp_path / "val" / "walk" / "d.mp4").write_bytes(b"")
    val, none = load_entries(tmp_path / "val", class_names=classes)
    assert none is None or none == classes
    assert val[0].labels == (1,)
    (tmp_path / "val" / "swim").mkdir()
    with pytest.raises(DataError, match="not known classes: \\['swim'\\]"):
        scan_tree(tmp_path / "val", classes)
    assert read_class_names(write_lines(tmp_path / "c.txt", ["jump", "walk", ""])) == ["jump", "walk"]
    with pytest.raises(DataError, match="one non-empty name per line"):
        read_class_names(write_lines(tmp_path / "bad.txt", ["jump", "", "walk"]))


# -- sampling ------------------------------------------------------------------------------------
def test_tsn_sampling_formulas():
    # test: int(tick/2 + tick*t), tick = n/T
    assert tsn_test_indices(100, 8) == [6, 18, 31, 43, 56, 68, 81, 93]
    assert tsn_test_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    # short videos repeat frames in order
    assert tsn_test_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]
    # train: t*avg + randint(avg), avg = n // T
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(12, (8,), generator=torch.Generator().manual_seed(0)).tolist()
    assert tsn_train_indices(100, 8, g) == [t * 12 + r for t, r in enumerate(offsets)]
    for seed in range(20):
        idx = tsn_train_indices(37, 4, torch.Generator().manual_seed(seed))
        assert [i // 9 for i in idx] == [0, 1, 2, 3]  # one frame in each segment of 9
    assert tsn_train_indices(5, 8, g) == tsn_test_indices(5, 8)
    assert tsn_train_indices(8, 8, g) == list(range(8))


def test_dense_sampling_and_dispatch():
    assert dense_indices(200, 8, train=False) == [68 + 8 * t for t in range(8)]
    assert dense_indices(10, 4, train=False) == [0, 6, 2, 8]  # stride 16 wraps around short videos
    starts = {dense_indices(100, 8, torch.Generator().manual_seed(s), train=True)[0] for s in range(50)}
    assert starts <= set(range(37)) and len(starts) > 10
    assert sample_indices(100, 8, train=False) == tsn_test_indices(100, 8)
    with pytest.raises(ValueError, match="sampling must be one of"):
        sample_indices(100, 8, train=False, sampling="uniform")
    with pytest.raises(ValueError, match="num_frames must be an int >= 1"):
        tsn_test_indices(0, 8)


# -- decoding ------------------------------------------------------------------------------------
def test_video_reader_seeks_to_the_sampled_frames(tmp_path):
    path = write_numbered_video(tmp_path / "long.mp4", 200, gop=10)
    with VideoReader(str(path)) as reader:
        assert reader.num_frames == 200
        wanted = [150, 3, 77, 77, 199]
        frames = reader.read(wanted)
        assert frames.shape == (5, 3, 32, 32) and frames.dtype == torch.uint8
        assert [frame_number(f) for f in frames] == wanted
        # Seeking decodes a few GOPs, not the whole video.
        assert reader.decoded < 80, reader.decoded


def test_video_reader_clamps_past_the_end_and_reads_short_videos(tmp_path):
    path = write_numbered_video(tmp_path / "short.mp4", 5)
    with VideoReader(str(path)) as reader:
        assert reader.num_frames == 5
        got = reader.read(tsn_test_indices(5, 8))
        assert [frame_number(f) for f in got] == [0, 0, 1, 2, 2, 3, 4, 4]  # int(5/16 + 5t/8)
        assert [frame_number(f) for f in reader.read([2, 9])] == [2, 4]  # 9 is past the end: last frame


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 100])
def test_corrupt_or_empty_video_raises_decode_error_naming_it(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(DecodeError, match="bad.mp4"):
        with VideoReader(str(bad)) as reader:
            reader.read([0])


def test_frame_folder_reading(tmp_path):
    folder = write_frame_folder(tmp_path / "clip", 6)
    frames = read_frame_folder(str(folder), [5, 0, 2])
    assert frames.shape == (3, 3, 32, 32)
    assert [frame_number(f) for f in frames] == [5, 0, 2]
    with pytest.raises(DecodeError, match="cannot read frame img_00007.jpg"):
        read_frame_folder(str(folder), [6])


# -- transforms ----------------------------------------------------------------------------------
def _gradient_video(t: int = 3, h: int = 48, w: int = 64) -> torch.Tensor:
    x = torch.arange(w).view(1, 1, 1, w).expand(t, 3, h, w)
    y = torch.arange(h).view(1, 1, h, 1).expand(t, 3, h, w)
    return ((x * 3 + y) % 256).to(torch.uint8).contiguous()


def test_multiscale_crop_boxes_follow_tsn():
    crop = MultiScaleCrop(32, (1.0, 0.875, 0.75, 0.66))
    boxes = {crop.crop_box(48, 64, torch.Generator().manual_seed(s)) for s in range(300)}
    sides = [48, 42, 36, 31]  # int(48·s); 31 is within 3 px of 32: snapped to 32
    sides[3] = 32
    for top, left, h, w in boxes:
        assert h in sides and w in sides
        assert abs(sides.index(h) - sides.index(w)) <= 1  # max_distort 1
        assert top in [i * ((48 - h) // 4) for i in range(5)] and left in [j * ((64 - w) // 4) for j in range(5)]
    assert len({(h, w) for _, _, h, w in boxes}) == 10  # all 10 allowed (h, w) pairs occur


def test_train_transform_is_seeded_and_flip_can_be_off():
    video = _gradient_video()
    flip = TrainTransform(32, flip=True)
    out = [flip(video, torch.Generator().manual_seed(s)) for s in range(2)]
    assert out[0].shape == (3, 3, 32, 32) and out[0].dtype == torch.uint8
    assert torch.equal(flip(video, torch.Generator().manual_seed(0)), out[0])  # same seed, same clip
    assert all(torch.equal(o[0], o[1]) for o in out)  # every frame gets the same crop
    # Columns increase left to right in the source; a flipped crop decreases.
    flipped = [bool((o[0, 0, 16, -1].int() < o[0, 0, 16, 0].int())) for o in
               (flip(video, torch.Generator().manual_seed(s)) for s in range(20))]
    assert 0 < sum(flipped) < 20
    keep = TrainTransform(32, flip=False)
    assert not any(bool(keep(video, torch.Generator().manual_seed(s))[0, 0, 16, -1].int()
                        < keep(video, torch.Generator().manual_seed(s))[0, 0, 16, 0].int()) for s in range(20))


def test_test_transform_resizes_short_side_then_centre_crops():
    video = _gradient_video(h=48, w=64)
    out = EvalTransform(32, resize=48)(video)  # short side already 48: a pure centre crop
    assert torch.equal(out, video[:, :, 8:40, 16:48])
    small = EvalTransform(24, resize=32)(video)  # 48x64 -> 32x43, crop 24
    assert small.shape == (3, 3, 24, 24)
    assert EvalTransform(224).resize == 256
    with pytest.raises(ValueError, match="video must be uint8"):
        EvalTransform(32)(video.float())


def test_normalize_is_imagenet():
    video = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = normalize(video)
    expected = (torch.tensor([0, 128, 255]) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[0, :, 0, 0], expected)


# -- the built-in task -----------------------------------------------------------------------------
def test_builtin_task_is_deterministic_and_needs_the_right_frames():
    task = MotionTask(seed=3)
    a, b = task.clip(5), MotionTask(seed=3).clip(5)
    assert torch.equal(a, b) and a.shape == (16, 64, 64, 3) and a.dtype == torch.uint8
    assert not torch.equal(a, MotionTask(seed=4).clip(5))
    assert [task.label(i) for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    for index in range(8):
        clip = task.clip(index).float()
        visible = list(task.visible_frames(index))
        assert len(visible) == task.visible
        # The 12x12 square is saturated red or blue: its frames have over 100 pixels whose colour
        # channel stands 120 above the other two (grey noise: about 30 such pixels per frame).
        colour = 0 if CLASSES[task.label(index)].startswith("red") else 2
        others = [c for c in range(3) if c != colour]
        excess = clip[..., colour] - clip[..., others].mean(dim=-1)  # [16, 64, 64]
        strong = (excess > 120).sum(dim=(1, 2)) > 100
        assert strong.nonzero().flatten().tolist() == visible
        # The direction: the square's column moves right for left_to_right.
        cols = [(excess[f] > 120).sum(dim=0).argmax().item() for f in visible]
        rightward = CLASSES[task.label(index)].endswith("left_to_right")
        assert (cols[-1] > cols[0]) == rightward


def test_builtin_samples_say_which_sampled_frames_show_the_square():
    # Random segment offsets (train sampling) without a crop: the square stays whole in its frames.
    ds = ClipDataset(MotionSource(MotionTask(seed=3), 2, 8), num_segments=8, transform=EvalTransform(64, 64), train=True)
    items = [ds[(i, 10 + i)] for i in range(8)]
    for item in items:
        clip = item.video.float()  # [T, 3, 64, 64]
        colour = 0 if CLASSES[int(item.target)].startswith("red") else 2
        others = [c for c in range(3) if c != colour]
        shown = ((clip[:, colour] - clip[:, others].mean(dim=1)) > 120).sum(dim=(1, 2)) > 100  # as above
        assert item.salient.dtype == torch.bool and torch.equal(item.salient, shown), item.index
    assert all(0 < int(item.salient.sum()) < 8 for item in items)  # a mix: the check says something
    assert torch.equal(collate(items).salient, torch.stack([item.salient for item in items]))


def test_demo_files_are_the_in_memory_clips(tmp_path):
    files = write_demo_data(tmp_path, videos=5, seed=1)
    assert demo_split(5) == (4, 1)
    train, val = read_list(files.train_list, files.root), read_list(files.val_list, files.root)
    assert len(train) == 4 and len(val) == 1 and read_class_names(files.classes) == list(CLASSES)
    with VideoReader(val[0].path) as reader:
        decoded = reader.read(list(range(16))).permute(0, 2, 3, 1).float()
    original = MotionTask(seed=1).clip(4).float()
    assert val[0].labels == (MotionTask(seed=1).label(4),)
    # H.264 is lossy, but the task's grey noise cells survive it: the decoded clip is clip 4.
    assert (decoded - original).abs().mean() < 4
    assert (decoded - MotionTask(seed=1).clip(3).float()).abs().mean() > 20


# -- datasets and loaders ------------------------------------------------------------------------
def test_dataset_reports_bad_files_as_failures(tmp_path):
    good = write_numbered_video(tmp_path / "good.mp4", 24)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    folder = write_frame_folder(tmp_path / "frames", 10)
    records = [VideoRecord(str(good), (1,)), VideoRecord(str(tmp_path / "bad.mp4"), (0,)),
               VideoRecord(str(folder), (2,), 10), VideoRecord(str(folder), (2,), 0)]
    ds = ClipDataset(RecordSource(records, 3), num_segments=4, transform=EvalTransform(32, 32), train=False)
    items = [ds[i] for i in range(4)]
    assert isinstance(items[0], Sample) and items[0].frames == tsn_test_indices(24, 4)
    assert [frame_number(f) for f in items[0].video] == items[0].frames
    assert isinstance(items[1], Failure) and items[1].path.endswith("bad.mp4") and "cannot open" in items[1].reason
    assert isinstance(items[2], Sample) and [frame_number(f) for f in items[2].video] == tsn_test_indices(10, 4)
    assert isinstance(items[3], Failure) and "0 frames" in items[3].reason
    batch = collate(items)
    assert isinstance(batch, Batch) and batch.video.shape == (2, 4, 3, 32, 32)
    assert batch.index.tolist() == [0, 2] and batch.target.tolist() == [1, 2] and len(batch.failures) == 2
    assert batch.salient is None  # which frames of a file matter is not known
    multi = RecordSource([VideoRecord(str(good), (0, 2))], 3, multi_label=True)
    assert multi.target(0).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="labels must be < num_classes=3"):
        RecordSource([VideoRecord(str(good), (3,))], 3)


def test_seeded_sampler_shards_and_reproduces():
    one = SeededSampler(10, seed=5)
    one.set_epoch(2)
    pairs = list(one)
    assert sorted(i for i, _ in pairs) == list(range(10))
    assert all(s == sample_seed(5, 2, i) for i, s in pairs)
    again = SeededSampler(10, seed=5)
    again.set_epoch(2)
    assert list(again) == pairs
    again.set_epoch(3)
    assert [i for i, _ in again] != [i for i, _ in pairs]
    ranks = [SeededSampler(10, seed=5, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    shard = [list(r) for r in ranks]
    # Interleaved shards: rank r holds positions r, r + 2, ... of the same epoch order.
    assert [p for pair in zip(*shard) for p in pair] == pairs
    evals = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(sum(evals, [])) == list(range(7)) and evals[0] == [0, 3, 6]


def test_loader_batches_of_the_builtin_task():
    ds = ClipDataset(MotionSource(MotionTask(), 0, 6), num_segments=4, transform=TrainTransform(32, flip=False), train=True)
    sampler = SeededSampler(6, seed=0)
    batches = list(make_loader(ds, sampler, batch_size=4))
    assert [len(b) for b in batches] == [4, 2]
    assert batches[0].video.shape == (4, 4, 3, 32, 32) and batches[0].video.dtype == torch.uint8
    again = list(make_loader(ds, sampler, batch_size=4, workers=2))
    assert all(torch.equal(a.video, b.video) for a, b in zip(batches, again))  # workers change nothing
