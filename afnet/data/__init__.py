"""Video data: list files, TSN sampling, PyAV decoding, uint8 video transforms, datasets, the built-in task."""

from afnet.data.datasets import Batch, ClipDataset, Failure, MotionSource, RecordSource, Sample, collate
from afnet.data.decode import DecodeError, VideoReader, read_frame_folder
from afnet.data.demo_files import write_demo_data, write_video
from afnet.data.lists import DataError, VideoRecord, load_entries, read_class_names, read_list, scan_tree
from afnet.data.loader import SeededSampler, ShardSampler, make_loader
from afnet.data.sampling import sample_indices
from afnet.data.synthetic import CLASSES, MotionTask
from afnet.data.transforms import MultiScaleCrop, EvalTransform, TrainTransform, normalize

__all__ = [
    "Batch", "CLASSES", "ClipDataset", "DataError", "DecodeError", "Failure", "MotionSource", "MotionTask",
    "MultiScaleCrop", "RecordSource", "Sample", "SeededSampler", "ShardSampler", "EvalTransform", "TrainTransform",
    "VideoReader", "VideoRecord", "collate", "load_entries", "make_loader", "normalize", "read_class_names",
    "read_frame_folder", "read_list", "sample_indices", "scan_tree", "write_demo_data", "write_video",
]
