"""Read PyTorch checkpoint files without running pickled code, with one-line errors.

`torch.load(weights_only=True)` refuses any pickle that would build an object other than
tensors and plain containers; its error is many lines long and advises allow-listing the global,
which is exactly what must not be done with an untrusted file. `load_weights_only` turns it (and
the errors of truncated or damaged files) into one `WeightsError` line.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

from ctsearcher_jax.errors import WeightsError
from ctsearcher_jax.installation import install_hint


def load_weights_only(path: str | Path, safe_globals: Sequence[Any] = ()) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` with one-line WeightsErrors.

    safe_globals: extra (class, "module.Name") pairs to accept (e.g. stand-ins for Lightning's
    AttributeDict); nothing else is ever allow-listed.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        import torch  # noqa: PLC0415 (optional dependency: the [torch] extra)
    except ImportError:
        raise WeightsError(f"{path}: reading PyTorch checkpoints needs torch; install it: "
                           f"{install_hint('torch')}") from None
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        if "weights only" not in text.lower():
            raise WeightsError(f"{path}: unreadable PyTorch checkpoint ({first[:200]}); the file may "
                               "be truncated: download it again") from None
        detail = next((ln.strip() for ln in text.splitlines() if "Unpickler error" in ln), first)
        detail = detail.split(". Please")[0].split(" Please")[0]  # not torch's allow-list advice
        raise WeightsError(f"{path}: refused to load: the pickle holds objects or code that a plain "
                           f"tensor checkpoint does not ({detail[:200]}); nothing was executed. "
                           "Re-save it as a state dict (torch.save(model.state_dict(), ...))") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        msg = " ".join(str(exc).split())[:200]
        raise WeightsError(f"{path}: unreadable PyTorch checkpoint ({type(exc).__name__}: {msg}); "
                           "the file may be truncated: download it again") from None
