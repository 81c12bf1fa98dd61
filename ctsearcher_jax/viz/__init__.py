"""Figures of scanpaths over CT volumes (matplotlib Agg and Pillow; no display needed).

Modules, one job each:
  volume      loading, HU windows, projections, gaze -> voxel coordinates
  scanpaths   fixations over axial/coronal/sagittal projections; slice-against-time (drilling)
  density     duration-weighted Gaussian fixation density, overlaid on axial slices
  animation   GIF stepping through the slices with nearby fixations
  render      `render_ct_figures`: every figure of one CT in one call
"""

from ctsearcher_jax.viz.render import FIGURES, render_ct_figures

__all__ = ["FIGURES", "render_ct_figures"]
