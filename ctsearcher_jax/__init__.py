"""ctsearcher-jax: CT-ScanGaze / CT-Searcher in JAX.

The public Python API (imported on first use, so `import ctsearcher_jax` stays light):

    load_config(path_or_name, overrides)   a `Config` from YAML or a bundled name ("paper", "tiny")
    load_dataset(path, split=None)         CTs with their readers' scanpaths (`CTItem`, `Scanpath`)
    load_records(path)                     a predictions / records file as `Scanpath`s
    synthesize(out_dir, num_cts=..., ...)  write a synthetic dataset in the real format
    build_model(config, seed=0)            an untrained model of a config
    save_model(dir, model, config)         write a model folder (weights, config.json, model card)
    load_model(dir)                        (model, Config) of a model folder or `<workdir>/model`
    sample_scanpaths(model, config, name, feature_dir, samples=1, readers=None)
    scanmatch(a, b), multimatch(a, b), sed(a, b)
                                           single-pair metrics with named fields, as `evaluate`
    evaluate(predictions, ground_truth, split="test", ...)
                                           what `ctsearcher evaluate` runs: an `EvalReport`
    train_and_evaluate(config, workdir)    the training loop of `ctsearcher train`
    predict_volumes(volumes, checkpoint, out_dir)    what `ctsearcher predict` runs

Feature extraction lives in `feature_extraction` (`extract_volume`, `extract_directory`, ...).
"""

import importlib as _importlib

from ctsearcher_jax._version import __version__

# public name -> "module:attribute"
_EXPORTS: dict[str, str] = {
    "Config": "ctsearcher_jax.config:Config",
    "load_config": "ctsearcher_jax.config:load",
    "CTItem": "ctsearcher_jax.data.schema:CTItem",
    "Scanpath": "ctsearcher_jax.data.schema:Scanpath",
    "load_dataset": "ctsearcher_jax.data.schema:load_dataset",
    "load_records": "ctsearcher_jax.data.schema:load_records",
    "synthesize": "ctsearcher_jax.data.synthetic:synthesize",
    "build_model": "ctsearcher_jax.api:build_model",
    "save_model": "ctsearcher_jax.model.serialization:save_model",
    "load_model": "ctsearcher_jax.model.serialization:load_model",
    "sample_scanpaths": "ctsearcher_jax.api:sample_scanpaths",
    "scanmatch": "ctsearcher_jax.api:scanmatch",
    "multimatch": "ctsearcher_jax.api:multimatch",
    "sed": "ctsearcher_jax.api:sed",
    "ScanMatchScore": "ctsearcher_jax.api:ScanMatchScore",
    "MultiMatchScore": "ctsearcher_jax.api:MultiMatchScore",
    "evaluate": "ctsearcher_jax.evaluation:evaluate",
    "EvalReport": "ctsearcher_jax.evaluation:EvalReport",
    "train_and_evaluate": "ctsearcher_jax.train.loop:train_and_evaluate",
    "predict_volumes": "ctsearcher_jax.predict:predict_volumes",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'ctsearcher_jax' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(_importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The public names only (`__all__`): no imports, helpers or submodules."""
    return sorted(__all__)
