"""A content fingerprint of the files a config points at, for Snakemake to rerun what reads them.

Snakemake reruns a job when an *input* is newer than its outputs, and when a *param* changes. A
user's image folders are not inputs (thousands of files, listed in a JSON the workflow only reads
at run time), so the data rules carry `content_fingerprint(...)` of the user's files as a param:
a changed image, annotation file, glyph file or surface plans the import (or the surfaces) again.

What it costs, and why this design: a file's content digest (BLAKE2b of all its bytes) is kept in
a cache keyed by the file's size, modification time, status-change time and inode. A parse then
only stats each file (about 10k files in 50 ms); a file's bytes are read again only when one of
those changed: once after an edit, a copy or a `touch`. Stat data alone would rerun an hour of
import after a `touch` or a fresh checkout of the same files, and would miss a file replaced with
its old time stamp (`cp -p`, `rsync -a`); the status-change time catches that, since no tool can
set it, and the digest decides. A full hash on every parse would read a large folder's gigabytes
each time Snakemake starts.

Only the standard library: the Snakemake process imports this on every parse.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

CACHE = Path(".snakemake") / "billetjax" / "content-digests.json"
CHUNK = 1 << 20


def _files(path: Path) -> list[Path]:
    """The file itself, or every file under a folder (sorted; hidden entries skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    out = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return out


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_fingerprint(paths: Iterable[str | os.PathLike | None], cache: str | os.PathLike = CACHE) -> str:
    """One digest of the content of every file at or under `paths` (None entries skipped) and of
    their names relative to the path given; missing paths count as such (the job that reads them
    names the problem)."""
    cache = Path(cache)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    fresh: dict[str, list] = {}
    total = hashlib.blake2b(digest_size=16)
    for given in paths:
        if given is None:
            continue
        root = Path(given)
        total.update(f"\0{given}\0".encode())
        files = _files(root)
        if not files:
            total.update(b"<missing>")
        for file in files:
            try:
                st = file.stat()
                key = str(file.resolve())
                stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
                entry = known.get(key)
                digest = entry[1] if entry and entry[0] == stamp else _digest(file)
            except OSError:
                continue  # a file vanishing while listed: the job sees the folder as it is then
            fresh[key] = [stamp, digest]
            rel = file.relative_to(root) if file != root else Path(file.name)
            total.update(f"{rel.as_posix()}\0{digest}\0".encode())
    if fresh != {k: known.get(k) for k in fresh}:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**known, **fresh}))
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only working directory: the digests are computed again next time
    return total.hexdigest()


def user_files_fingerprint(config: Mapping[str, Any], *keys: str) -> str | None:
    """The content fingerprint of the user's files behind `data.coco.<keys>` and of the glyph file
    (`synth.glyphs`, which the import checks the names against); None unless data.source is coco."""
    if config["data"]["source"] != "coco":
        return None
    user = config["data"]["coco"]
    return content_fingerprint([user[k] for k in keys] + [config["synth"]["glyphs"]])
