"""Run a few train steps in several modes and print the results as JSON (used by test_step.py).

Run in a subprocess so it can use the fast-compiling XLA flags without touching the test
session's JAX. Usage: python step_probe.py DATASET_ROOT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
import tinydata  # run as a script: its folder is sys.path[0]

from ctsearcher_jax.config import from_dict
from ctsearcher_jax.data.pipeline import CTExampleSource, max_readers, train_dataset
from ctsearcher_jax.data.schema import load_dataset
from ctsearcher_jax.train import optimizer as opt
from ctsearcher_jax.train import sharding as sh
from ctsearcher_jax.train import step as st


def run(root: Path, steps: int = 3, *, model=None, **train) -> dict:
    # eps 1e-4: see SCALE_TRAIN in conftest.py (zero-gradient key biases and AdamW's eps)
    data = tinydata.tiny_config_dict(root, batch_size=4, eps=1e-4, **train)
    data["model"]["dropout"] = 0.0
    data["model"].update(model or {})
    config = from_dict(data)
    items = load_dataset(root / "data")
    source = CTExampleSource(tuple(i for i in items if i.split == "train"), config,
                             max_readers(items))
    ds = train_dataset(source, batch_size=4, seed=0, num_steps=steps)
    mesh = sh.make_mesh(config.train)
    tx = opt.make_optimizer(config.train, 2)
    _, _, abstract = st.init_train_state(config, tx)
    shardings = sh.state_shardings(mesh, abstract)
    graphdef, rng, state = st.init_train_state(config, tx, mesh=mesh, shardings=shardings)
    step = st.make_train_step(graphdef, config.train, opt.lr_schedule(config.train, 2), shardings,
                              sh.replicated(mesh))
    losses = []
    for s in range(steps):
        state, metrics = step(state, rng, sh.global_batch(mesh, ds[s]))
        losses.append({k: float(v) for k, v in metrics.items()})
    leaves = jax.tree_util.tree_leaves_with_path((state.model, state.optimizer))
    # model parameters and optimizer moments alike
    params = {jax.tree_util.keystr(p): np.asarray(v).tolist() for p, v in leaves}
    dtypes = sorted({str(np.asarray(v).dtype) for _, v in leaves})
    return {"losses": losses, "params": params, "dtypes": dtypes}


if __name__ == "__main__":
    root = Path(sys.argv[1])
    out = {
        "plain": run(root),
        # per-reader forwards and 2 exactly-weighted micro-batches: the same numbers
        "per_reader_accum": run(root, share_forward_across_readers=False, grad_accum_steps=2),
        "bf16": run(root, model={"compute_dtype": "bfloat16"}),
    }
    print(json.dumps(out))
