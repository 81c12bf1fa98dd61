"""`ctsearcher visualize --data DIR [--pred P.json] --name CT --out DIR`: figures of scanpaths on a CT."""

from __future__ import annotations

import argparse

HELP = ("draw scanpaths over a CT: projections, slice-against-time, fixation density, slice GIF "
        "(ground truth and, with --pred, predictions side by side)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import CommaListAction, ListAction

    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset folder (data_simplified_split_matched_pt.json + cts/)")
    parser.add_argument("--pred", metavar="FILE",
                        help="predictions JSON (dataset record format, no split; default: none, "
                             "ground truth only)")
    parser.add_argument("--name", required=True, action=ListAction, metavar="CT",
                        help="CT names to draw (record 'name' = volume file stem)")
    parser.add_argument("--out", required=True, metavar="PATH", help="output folder for the figures")
    parser.add_argument("--window", default="soft", metavar="WINDOW",
                        help="CT window: soft (W400/L40), lung (W1500/L-600), bone (W1800/L400), "
                             "auto (percentiles), or WIDTH,LEVEL in HU")
    parser.add_argument("--projection", choices=("mean", "max"), default="mean",
                        help="projection of the windowed volume: mean (reads like a radiograph) "
                             "or max (MIP)")
    parser.add_argument("--reader", action=ListAction, metavar="ID",
                        help="only these readers (subject ids) of the ground truth and of the "
                             "predictions paired with them (default: every reader)")
    parser.add_argument("--max-pred", type=int, default=2, metavar="N",
                        help="predicted scanpaths drawn in the projection figure")
    parser.add_argument("--figures", action=CommaListAction,
                        default=["projections", "drilling", "density", "slices"], metavar="KIND",
                        help="any of projections drilling density slices viewer (viewer: the "
                             "interactive HTML page of `ctsearcher view`)")
    parser.add_argument("--dpi", type=int, default=100, metavar="DPI",
                        help="PNG resolution, 20-600")
    parser.add_argument("--max-voxels", type=int, default=None, metavar="N",
                        help="refuse volumes whose header claims more voxels (default 2^30)")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.data.gaze_sources import GazeSources
    from ctsearcher_jax.data.nifti import max_voxels_flag, open_nifti
    from ctsearcher_jax.data.schema import find_dataset_json
    from ctsearcher_jax.errors import ConfigError
    from ctsearcher_jax.paths import check_output_dir, check_output_file, child_path
    from ctsearcher_jax.viz import FIGURES, render_ct_figures
    from ctsearcher_jax.viz.render import FILE_NAMES, MAX_DPI, MIN_DPI
    from ctsearcher_jax.viz.volume import parse_window

    try:
        parse_window(args.window)
    except ValueError as exc:
        raise ConfigError(f"--window: {exc}") from None
    figures = [f.strip() for f in args.figures if f.strip()]
    bad = [f for f in figures if f not in FIGURES]
    if bad or not figures:
        raise ConfigError(f"--figures {' '.join(args.figures)}: choose from {' '.join(FIGURES)}")
    if args.max_pred < 0:
        raise ConfigError(f"--max-pred {args.max_pred}: must be >= 0")
    if not MIN_DPI <= args.dpi <= MAX_DPI:
        # a figure is about 10 x 4 inches: 100,000 dpi would be a 10^12-pixel canvas
        raise ConfigError(f"--dpi {args.dpi}: must be in [{MIN_DPI}, {MAX_DPI}]")

    max_voxels = max_voxels_flag(args.max_voxels)
    json_path = find_dataset_json(args.data)
    out = check_output_dir(args.out)
    inputs = [json_path, args.pred]
    for name in args.name:  # before drawing anything; never over an input
        for kind in figures:
            check_output_file(child_path(out, name, FILE_NAMES[kind].format(name="")),
                              inputs=inputs)
    sources = GazeSources.load(json_path, args.pred, args.reader)
    volumes = sources.volumes
    # every CT's scanpaths and volume header (the voxel policy of data.nifti) before drawing
    selected = {name: sources.select(name, need_ground_truth=False) for name in args.name}
    slices = {name: open_nifti(volumes[name], max_voxels=max_voxels).shape[2] for name in args.name}

    for name in args.name:
        gt, pred = selected[name]
        warn_outside_volume(name, gt, pred, slices[name], str(json_path), args.pred)
        written = render_ct_figures(volumes[name], gt, pred or None, out, name=name,
                                    window=args.window, projection=args.projection,
                                    max_pred=args.max_pred, figures=figures, dpi=args.dpi,
                                    sources={"dataset": str(json_path)} | (
                                        {"predictions": str(args.pred)} if args.pred else {}),
                                    max_voxels=max_voxels)
        for kind, path in written.items():
            print(f"{name} {kind}: {path}")
    return 0


def warn_outside_volume(name: str, gt: list, pred: list, slices: int | None, gt_source: str,
                        pred_source: str | None) -> int:
    """Warn on stderr about fixations outside the CT (Z beyond its slices, X/Y beyond 512).

    They are drawn clipped to the volume's edge, which would silently misplace them. Returns the
    number of such fixations.
    """
    import sys

    import numpy as np

    from ctsearcher_jax.config import GAZE_FRAME

    total = 0
    for label, scanpaths in ((gt_source, gt), (pred_source, pred)):
        if not scanpaths:
            continue
        z = np.concatenate([sp.z for sp in scanpaths])
        xy = np.concatenate([np.concatenate([sp.x, sp.y]) for sp in scanpaths])
        # the drawing maps k = Z - 1 and j = (X - 0.5) J / 512 - 0.5 and clips to the voxels'
        # extent [-0.5, size - 0.5]: these are the fixations it moves
        bad_z = int(((z < 0.5) | (z > slices + 0.5)).sum()) if slices else 0
        bad_xy = int(((xy < 0.5) | (xy > GAZE_FRAME + 0.5)).sum())
        if bad_z:
            print(f"warning: CT {name!r}: {bad_z} fixation(s) of {label} have Z outside the CT's "
                  f"{slices} slices (Z from {z.min():g} to {z.max():g}); they are drawn hollow at the "
                  f"volume's edge", file=sys.stderr)
        if bad_xy:
            print(f"warning: CT {name!r}: {bad_xy} X/Y coordinate(s) of {label} lie outside the "
                  f"{GAZE_FRAME} x {GAZE_FRAME} frame; they are drawn hollow at the volume's edge",
                  file=sys.stderr)
        total += bad_z + bad_xy
    return total
