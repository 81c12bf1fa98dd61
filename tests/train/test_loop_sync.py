"""The training loop syncs with the devices only at steps that log, evaluate or checkpoint."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from ctsearcher_jax.train import loop


def test_stop_flag_agrees_across_processes_only_at_sync_points(monkeypatch):
    flag = loop._StopFlag()
    flag.requested = True
    assert flag.agreed(sync=False) is True  # one process: the flag itself, no collective
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    calls = []

    def allgather(x):
        calls.append(x)
        return np.array([[0], [1]], np.int32)

    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    assert flag.agreed(sync=False) is False and calls == []  # not a sync step: no collective
    flag.requested = False
    assert flag.agreed(sync=True) is True and len(calls) == 1  # the other process was told
