"""Swin UNETR feature extraction in Flax, equal to MONAI.

The public API (imported on first use, so `import feature_extraction` stays light):

    extract_volume(path, out_dir, weights="random", config=None)   one CT -> <name>.npy + manifest
    extract_directory(cts_dir, out_dir, weights, config)           every CT of a folder
    convert_file(monai_checkpoint, out)        a MONAI SwinUNETR .pt -> safetensors weights
    load_weights(path)                         (SwinUNETRConfig, parts, params, metadata)
    load_volume(path, hu_min=..., hu_max=...)  a NIfTI CT as scaled float32 in stored voxel order
    SwinUNETR, SwinUNETRConfig                 the Flax NNX model and its config
"""

import importlib as _importlib

# public name -> "module:attribute"
_EXPORTS: dict[str, str] = {
    "extract_volume": "feature_extraction.extract:extract_volume",
    "extract_directory": "feature_extraction.directory:extract_directory",
    "convert_file": "feature_extraction.convert_monai:convert_file",
    "load_weights": "feature_extraction.weights:load_weights",
    "load_volume": "feature_extraction.preprocess:load_volume",
    "SwinUNETR": "feature_extraction.swin_unetr:SwinUNETR",
    "SwinUNETRConfig": "feature_extraction.swin_unetr:SwinUNETRConfig",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'feature_extraction' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(_importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names only (`__all__`): no imports, helpers or submodules."""
    return sorted(__all__)
