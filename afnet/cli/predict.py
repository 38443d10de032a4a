"""``afnet predict``: top-k classes of clips and the frames the navigation selected.

Each clip gets its own files, ``<name>.json`` and ``<name>.png`` in ``--out``: ``<name>`` is the
clip's file name without extension (a folder's name), with ``-2``, ``-3``, ... for later clips of
the same name (``a/clip.mp4 b/clip.mp4``, ``x.mkv x.mp4``). ``manifest.json`` maps every clip to
its files or to why it could not be read. Files of an earlier run are never replaced silently: a
run that would replace any is refused, unless ``--overwrite`` moves them into ``replaced-N/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from afnet.cli.args import add_progress, check_device, check_output, int_at_least, refuse_replacing, require
from afnet.cli.checkpoint_args import add_model_args, class_names, input_settings, load_model

MANIFEST = "manifest.json"


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``predict``."""
    p = sub.add_parser("predict", help="top-k classes of clips and the frames the navigation selected",
                       description="Predict video files or frame folders: print the top-k classes and write "
                       "<clip name>.json and <clip name>.png (the sampled frames, unselected ones marked) to --out, "
                       "with manifest.json mapping each clip to its files. Clips of the same name get -2, -3, ... "
                       "Files of an earlier run are not replaced without --overwrite.")
    p.add_argument("clips", nargs="+", metavar="CLIP", help="video files or frame folders")
    add_model_args(p)
    p.add_argument("--labels", default=None, help="class names file (default: the checkpoint's)")
    p.add_argument("--topk", type=int_at_least(1), default=5, help="classes to print (default 5)")
    p.add_argument("--out", type=Path, default=Path("predict_out"), help="output folder (default predict_out)")
    p.add_argument("--overwrite", action="store_true",
                   help="when --out holds files this run would replace, move them (and the earlier manifest with "
                   "the files it lists) into OUT/replaced-N/ first; without it such a run is refused")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNGs")
    add_progress(p)
    p.set_defaults(run=run_predict)


def output_names(clips: Sequence[str]) -> List[str]:
    """One output name per clip, unique even where the file system ignores case: the clip's name
    without extension (a folder's own name), then ``-2``, ``-3``, ... for later clips of that name."""
    used, names = set(), []
    for clip in clips:
        base = os.path.basename(os.path.abspath(clip))  # abspath drops a trailing slash and resolves "."
        base = base if os.path.isdir(clip) else os.path.splitext(base)[0]
        name, n = base, 1
        while name.casefold() in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name.casefold())
        names.append(name)
    return names


def _earlier_files(out: Path, planned: Sequence[str]) -> List[str]:
    """Files in ``out`` that this run would replace, plus the files the earlier manifest lists
    (they move with it, so that an earlier run stays in one piece)."""
    earlier = [name for name in planned if (out / name).exists()]
    if MANIFEST in earlier:
        try:
            listed = [f for clip in json.loads((out / MANIFEST).read_text())["clips"] for f in clip.get("outputs", [])]
        except (OSError, ValueError, KeyError, TypeError):  # a damaged manifest moves alone
            listed = []
        earlier += [f for f in listed if f not in earlier and (out / f).is_file()]
    return earlier


def run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "av", "tqdm", "matplotlib")
    from afnet.data.datasets import Failure
    from afnet.tools.predict import predict_many
    from afnet.tools.progress import progress_bar
    from afnet.training.distributed import resolve_device
    from afnet.training.plots import plot_prediction
    from afnet.training.runfiles import atomic_write_bytes, move_aside, to_json

    device = resolve_device(check_device(parser, args.device))
    out = check_output(parser, "--out", args.out)
    names = output_names(args.clips)
    kinds = (".json", ".png") if args.plot else (".json",)
    earlier = _earlier_files(out, [MANIFEST] + [name + kind for name in names for kind in kinds])
    refuse_replacing(parser, out, earlier, args.overwrite)
    model, data = load_model(args, parser, device)
    labels = class_names(args.labels, data, "--labels", parser)
    size, resize, template = input_settings(args, data)
    if earlier:
        moved = move_aside(out, earlier)
        print(f"afnet predict: --overwrite: moved {len(earlier)} earlier file(s) into {moved}/", file=sys.stderr)
    manifest: Dict[str, Any] = {"checkpoint": str(args.checkpoint), "clips": []}
    written = 0
    bar = progress_bar(len(args.clips), "predict", args.progress)
    try:
        results = predict_many(model, args.clips, size=size, resize=resize, class_names=labels, topk=args.topk,
                               batch_size=args.batch_size, workers=args.workers, template=template,
                               multi_label=bool(data.get("multi_label")))
        for clip, name, result in zip(args.clips, names, results):
            bar.update(1)
            if isinstance(result, Failure):
                manifest["clips"].append({"input": clip, "error": result.reason})
                bar.write(f"afnet predict: could not read {clip} ({result.reason})", file=sys.stderr)
                continue
            files: List[str] = []  # listed as each is written: after Ctrl-C the manifest still tells the truth
            manifest["clips"].append({"input": clip, "outputs": files})
            atomic_write_bytes(out / f"{name}.json", (to_json(result.as_dict(), indent=1) + "\n").encode())
            files.append(f"{name}.json")
            if args.plot:
                plot_prediction(result, out / f"{name}.png")
                files.append(f"{name}.png")
            written += 1
            kept = ", ".join(f"{r:.2f}" for r in result.masks.float().mean(dim=1).tolist())
            bar.write(f"{clip}: " + ", ".join(f"{label} {p:.3f}" for _, label, p in result.topk)
                      + f"  (selected per module: {kept})", file=sys.stdout)
    except FileNotFoundError as exc:
        parser.error(f"argument CLIP: {exc}")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted after {written} of {len(args.clips)} clip(s); "
                                f"{out / MANIFEST} lists the files written") from None
    finally:
        bar.close()
        if manifest["clips"]:  # also after Ctrl-C: what was written is listed
            atomic_write_bytes(out / MANIFEST, (to_json(manifest, indent=1) + "\n").encode())
    failed = len(args.clips) - written
    print(f"wrote {written} prediction(s) to {out} ({MANIFEST} maps each clip to its files)"
          + (f"; {failed} clip(s) could not be read" if failed else ""))
    return 1 if failed else 0
