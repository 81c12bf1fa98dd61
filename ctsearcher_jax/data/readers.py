"""Reader ids of a reader-conditioned model: subject -> embedding row, stored in the config.

A conditioned model (`model.reader_conditioning: embedding`) keeps its reader ids in
`model.readers` (the data's `subject` values as text, row i of the embedding = readers[i]), so
the mapping travels with every place the config does: the workdir's `config.yaml`, each
checkpoint's metadata and the exported model folder. Training fills it from the dataset when it
is empty (`with_readers`); everything else looks ids up with `reader_indices`, which refuses ids
the model was not trained on.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from ctsearcher_jax.config import Config, ModelConfig
from ctsearcher_jax.errors import DataError


def reader_id(subject: Any) -> str:
    """The text id of a subject (`1` and `"1"` are the same reader)."""
    return str(subject)


def subject_of(reader: str) -> Any:
    """The record `subject` of a text id: an int when the id is one (as datasets store them)."""
    try:
        value = int(reader)
    except ValueError:
        return reader
    return value if str(value) == reader else reader


def _order(rid: str) -> tuple:
    value = subject_of(rid)
    return (0, value, "") if isinstance(value, int) else (1, 0, rid)


def dataset_readers(items: Iterable) -> tuple[str, ...]:
    """Sorted unique reader ids of CT items (numbers numerically, then text)."""
    ids = {reader_id(scanpath.subject) for item in items for scanpath in item.readers}
    return tuple(sorted(ids, key=_order))


def with_readers(config: Config, items: Sequence) -> Config:
    """`config` with `model.readers` filled from `items` when the model is conditioned and the
    list is empty; unchanged otherwise. Ids of `items` the list lacks raise DataError."""
    model = config.model
    if not model.reader_conditioned:
        return config
    if not model.readers:
        model = dataclasses.replace(model, readers=dataset_readers(items))
        config = dataclasses.replace(config, model=model)
    reader_indices(model, [s.subject for it in items for s in it.readers], where="the dataset")
    return config


def reader_indices(model: ModelConfig, subjects: Sequence[Any], *, where: str) -> list[int]:
    """Embedding rows of `subjects`; DataError naming the first unknown id and the known ones."""
    table = {rid: i for i, rid in enumerate(model.readers)}
    out = []
    for subject in subjects:
        rid = reader_id(subject)
        if rid not in table:
            raise DataError(f"{where}: reader {rid!r} is unknown to the model, which was trained "
                            f"on readers {list(model.readers)}; use one of those (predict "
                            f"--reader ID) or train with this reader's data")
        out.append(table[rid])
    return out
