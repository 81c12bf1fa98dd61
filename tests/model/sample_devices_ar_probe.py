"""Run by tests/model/test_ct_searcher_ar.py in a subprocess with 8 fake CPU devices.

Prints one JSON line: CT-Searcher AR records for 5 CTs (2 samples each) sampled on 1 device and
sharded over 8 devices (one chunk of 8, padded).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ctsearcher_jax.config import from_dict
from ctsearcher_jax.model import build
from ctsearcher_jax.model.generate import sample_records

feature_dir = Path(sys.argv[1])
config = from_dict({"model": {"arch": "ct_searcher_ar", "d_model": 8, "num_heads": 2,
                              "num_encoder_layers": 1, "num_decoder_layers": 2,
                              "dim_feedforward": 8, "feature_dim": 4, "grid": [2, 2, 2],
                              "max_length": 6, "dropout": 0.0},
                    "eval": {"min_length": 2, "temperature": 0.9}})
model = build(config.model, nnx.Rngs(0))
rng = np.random.default_rng(0)
names = [f"ct{i}" for i in range(5)]
for i, n in enumerate(names):
    np.save(feature_dir / f"{n}.npy", rng.normal(size=(4, 2 + i % 3, 3, 2)).astype(np.float32))
assert len(jax.local_devices()) == 8
one = sample_records(model, config, names, feature_dir, samples=2, seed=3,
                     devices=jax.local_devices()[:1])
eight = sample_records(model, config, names, feature_dir, samples=2, seed=3,
                       devices=jax.local_devices())
print(json.dumps({"one": one, "eight": eight}))
