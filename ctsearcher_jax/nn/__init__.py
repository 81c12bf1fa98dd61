"""Neural-network building blocks shared by every model: `attention` (one choice of attention
kernel) and `layers` (PyTorch-semantics transformer layers). CT-Searcher (`model/`) and the Swin
UNETR encoder (`feature_extraction/swin_unetr.py`) both import from here; this package imports
nothing else of the project."""
