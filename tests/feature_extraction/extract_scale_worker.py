"""Subprocess body of test_extract_scale.py (needs its own XLA_FLAGS / jax.distributed set-up).

usage: extract_scale_worker.py devices OUT.npz
       extract_scale_worker.py processes CTS OUT COORDINATOR PROCESS_ID
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    mode = sys.argv[1]
    if mode in ("processes", "badweights"):
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=sys.argv[4], num_processes=2,
                                   process_id=int(sys.argv[5]))
    import jax
    import numpy as np
    from extract_helpers import fake_encoder, fake_extractor

    if mode == "devices":
        from feature_extraction.sliding_window import pad_volume, plan_windows

        enc = fake_encoder(batch_per_device=1)
        vol = np.random.default_rng(0).random((150, 110, 200), dtype=np.float32)
        plan = plan_windows(vol.shape, 96, 0.25)
        dec4, hidden = enc.encode_volume(pad_volume(vol, plan), plan.starts)
        # Where one batch of windows lives: one window per device.
        starts = jax.device_put(plan.starts[: enc.batch].astype(np.int32), enc._data)
        windows = enc._cut(jax.device_put(pad_volume(vol, plan), enc._replicated), starts)
        shards = sorted(s.data.shape[0] for s in windows.addressable_shards)
        np.savez(sys.argv[2], dec4=dec4, hidden=hidden, batch=enc.batch,
                 devices=len(windows.sharding.device_set), shards=np.array(shards),
                 compiles=enc.encode_compilations())
    elif mode == "badweights":  # process 1 cannot read its weights; both must stop, same error
        from ctsearcher_jax.errors import CTSearcherError
        from feature_extraction.directory import extract_directory

        bad = int(sys.argv[5]) == 1
        try:
            extract_directory(sys.argv[2], sys.argv[3], weights="/nonexistent/w.safetensors",
                              extractor=None if bad else fake_extractor(), progress=False)
        except CTSearcherError as exc:
            print(f"ERROR {type(exc).__name__}: {exc}")
            sys.exit(2)
    else:
        from feature_extraction.directory import extract_directory

        s = extract_directory(sys.argv[2], sys.argv[3], extractor=fake_extractor(), progress=False)
        print(json.dumps({"process": jax.process_index(), "processed": s.processed,
                          "devices": jax.local_device_count()}))


if __name__ == "__main__":
    main()
