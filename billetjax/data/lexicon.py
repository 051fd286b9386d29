"""The lexicon CSV: the billet IDs a plant expects, per batch (docs/id-reading.md).

Columns `billet_id` and optionally `batch` (a heat, a shift, a day's plan: whatever groups the
images a reading may be one of). The simulator writes one for its test pool, a user gives one as
`data.coco.lexicon`, each test set gets the batches of its images, and the lexicon decoder reads
them. This module is the one owner of the format.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

COLUMNS = ("batch", "billet_id")


def normalise_id(text: str) -> str:
    """An ID string without whitespace (row breaks and spacing are layout, not characters)."""
    return "".join(str(text).split())


def load_lexicon(path: str | os.PathLike) -> dict[str, list[str]]:
    """Expected IDs per batch from a lexicon CSV; without a `batch` column, every ID is a
    candidate for every image (batch ""). An empty file with its header is no lexicon ({})."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: lexicon file not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "billet_id" not in table.columns:
        raise ValueError(f"{path}: a lexicon needs a 'billet_id' column (and optionally 'batch'); "
                         f"found columns {list(table.columns)}")
    batches = table["batch"] if "batch" in table.columns else pd.Series([""] * len(table), dtype=str)
    out: dict[str, list[str]] = {}
    for row, (batch, billet_id) in enumerate(zip(batches, table["billet_id"]), start=2):
        text = normalise_id(billet_id)
        if not text:
            raise ValueError(f"{path}, line {row}: empty billet_id; give the expected ID or drop the line")
        out.setdefault(str(batch), []).append(text)
    return out


def write_lexicon(path: str | os.PathLike, rows: list[tuple[str, str]]) -> None:
    """A lexicon CSV of (batch, billet_id) rows; no rows: the header alone (no lexicon)."""
    import pandas as pd

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(COLUMNS), dtype=str).to_csv(path, index=False)
    log.info("%s: %d expected IDs in %d batches", path, len(rows), len({b for b, _ in rows}))
