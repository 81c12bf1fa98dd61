"""`ctsearcher view --data DIR --name CT [--pred P.json] --out F.html`: an interactive HTML viewer."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("write one self-contained HTML page per CT that replays its scanpaths over the slices "
        "(every reader and, with --pred, the predictions): time line, drilling plot, projections; "
        "--score adds each scanpath's metrics")


COMPILES = True  # --score runs the metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import ListAction, alias

    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset folder (data_simplified_split_matched_pt.json + cts/)")
    parser.add_argument("--name", required=True, action=ListAction, metavar="CT",
                        help="CT names (record 'name' = volume file stem)")
    parser.add_argument("--pred", metavar="FILE",
                        help="predictions JSON (dataset record format, no split; default: none, "
                             "readers only)")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output: an .html file (one CT) or a folder (writes CT_viewer.html)")
    parser.add_argument("--window", default="soft", metavar="WINDOW",
                        help="initial window (switchable in the page): soft, lung, bone, auto, or "
                             "WIDTH,LEVEL in HU")
    parser.add_argument("--reader", action=ListAction, metavar="ID",
                        help="only these readers (subject ids), and the predictions paired with "
                             "them (default: every reader)")
    score = parser.add_argument("--score", action="store_true",
                                help="score every scanpath against the --reference reader with "
                                     "ScanMatch, MultiMatch and SED (the project's metrics) and "
                                     "show them")
    alias(parser, "--metrics", score)
    parser.add_argument("--reference", metavar="ID",
                        help="reader the scores compare against (default: the first reader)")
    parser.add_argument("--max-side", type=int, default=256, metavar="PX",
                        help="in-plane pixels per slice axis at most")
    parser.add_argument("--hu-step", type=float, default=1.0, metavar="HU",
                        help="quantisation step of the embedded intensities in HU (0.0625 to "
                             "4095: 65536 levels at most over -1024..3071 HU)")
    parser.add_argument("--max-voxels", type=int, default=None, metavar="N",
                        help="refuse volumes whose header claims more voxels (default 2^30)")


def volume_shape(path: Path, max_voxels: int) -> tuple[int, int, int]:
    """(I, J, K) from the NIfTI header alone (`data.nifti.open_nifti`: the voxel policy's
    header checks; the voxels are read later, one CT at a time)."""
    from ctsearcher_jax.data.nifti import open_nifti

    return open_nifti(path, max_voxels=max_voxels).shape


def run(args: argparse.Namespace) -> int:
    import math

    from ctsearcher_jax.data.gaze_sources import GazeSources
    from ctsearcher_jax.data.nifti import max_voxels_flag
    from ctsearcher_jax.errors import ConfigError, DataError
    from ctsearcher_jax.paths import check_output_dir, check_output_file, child_path, os_error
    from ctsearcher_jax.viz.viewer import (
        HU_STEP_RANGE,
        check_paths,
        default_paths,
        metrics_against,
        write_viewer,
    )
    from ctsearcher_jax.viz.volume import load_volume, parse_window

    try:
        parse_window(args.window)
    except ValueError as exc:
        raise ConfigError(f"--window: {exc}") from None
    if not 16 <= args.max_side <= 1024:
        raise ConfigError(f"--max-side {args.max_side}: use 16..1024")
    lo, hi = HU_STEP_RANGE
    if not (math.isfinite(args.hu_step) and lo <= args.hu_step <= hi):
        raise ConfigError(f"--hu-step {args.hu_step:g}: must be in [{lo:g}, {hi:g}] HU (the page "
                          f"holds 65536 levels at most over -1024..3071 HU)")
    max_voxels = max_voxels_flag(args.max_voxels)
    out = Path(args.out)
    single_file = out.suffix.lower() in (".html", ".htm")
    if single_file and len(args.name) > 1:
        raise ConfigError(f"--out {out}: one .html file holds one CT; give a folder for "
                          f"{len(args.name)} CTs")
    if args.reference is not None and not args.score:
        raise ConfigError("--reference only applies with --score")

    sources = GazeSources.load(args.data, args.pred, args.reader)
    json_path, volumes = sources.json_path, sources.volumes

    # Check every name before writing anything.
    jobs = []
    for name in args.name:
        gt, pred = sources.select(name)
        paths = default_paths(gt, pred, gt_source=str(json_path),
                              pred_source=str(args.pred) if args.pred else "")
        reference = None
        if args.score:
            subjects = [str(sp.subject) for sp in gt]
            ref = args.reference if args.reference is not None else subjects[0]
            if ref not in subjects:
                raise DataError(f"--reference {ref}: CT {name!r} has no reader {ref}; its readers "
                                f"are {subjects}")
            reference = subjects.index(ref)
        check_paths(paths, volume_shape(volumes[name], max_voxels))
        jobs.append((name, paths, reference))

    # Where the pages go, checked before the slow part: never over an input, always writable.
    if single_file:
        check_output_file(out, inputs=[json_path, args.pred, *(volumes[n] for n, _, _ in jobs)])
        targets = [out]
    else:
        check_output_dir(out)
        targets = [child_path(out, name, "_viewer.html") for name, _, _ in jobs]

    files = {"dataset": str(json_path)}
    if args.pred:
        files["predictions"] = str(args.pred)
    for (name, paths, reference), target in zip(jobs, targets):
        volume = load_volume(volumes[name], max_voxels=max_voxels)
        metrics = metrics_against(paths, reference) if reference is not None else None
        try:
            path, size = write_viewer(target, volume, paths, name=name, sources=files,
                                      window=args.window, reference=reference, metrics=metrics,
                                      max_side=args.max_side, hu_step=args.hu_step)
        except OSError as exc:
            raise os_error(target, exc) from None
        print(f"{name} viewer: {path} ({size / 1e6:.1f} MB; {len(paths)} scanpaths, "
              f"{volume.shape[2]} slices)")
    return 0
