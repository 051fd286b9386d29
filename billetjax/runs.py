"""The resumable state folder both trainers keep: fingerprint, orbax checkpoints, running history.

A training job (pix2pix, each detector) keeps its resumable state in a folder that Snakemake does
not delete, so a killed or failed job resumes on retry. State may only be resumed by the run that
made it: `RunFolder.claim` compares the folder's fingerprint with the current run's and starts
afresh when anything the trajectory depends on changed. One policy for every trainer:

* **same fingerprint**: resume from the chosen checkpoint, logged at WARNING with the step, the
  folder and the fingerprint (a resumption is never silent);
* **other fingerprint** (a config key outside the trainer's resumable keys, the seed, the
  implementation or any data file changed), or a folder without a readable fingerprint: a
  WARNING names what changed, the old state is deleted and training starts at step 0. It is
  deleted, not kept: it belongs to a configuration that is no longer the current one, is not an
  output, and a copy per change would silently fill `results/` (the GAN's state holds every
  checkpoint with its optimiser moments);
* **a checkpoint that does not restore** (corrupt files, a shape or structure mismatch): a
  WARNING with the error, the whole folder is moved aside to `<folder>.corrupt-<time>` (kept for
  inspection; this should be rare) and training starts at step 0, so the next retry does not
  fail on the same checkpoint again.

Resumable keys are the config keys that change neither the weights nor the random stream of the
steps already taken (e.g. how often to log or to checkpoint). Each trainer lists its own, with why.

The fingerprint file and the history CSV are written atomically (a temporary file, then
`os.replace`), so a job killed while writing leaves the previous version, never a torn file.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib
import importlib.metadata
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from billetjax.files import atomic_write_text

log = logging.getLogger(__name__)

# The package whose modules can shape a training (`trajectory_modules` never leaves it).
PACKAGE = "billetjax"

FINGERPRINT_FILE = "fingerprint.json"
# Libraries whose numerics shape a trajectory: a resumed run continues with the versions it began with.
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy")


# ----------------------------------------------------------------------------- hashing


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_sha256(paths: Iterable[str | os.PathLike]) -> str:
    """One SHA-256 over many files: each file's name and SHA-256, in the order given."""
    h = hashlib.sha256()
    for path in paths:
        h.update(f"{Path(path).name}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def implementation(modules: Sequence[str], libraries: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """What implements a trajectory: a SHA-256 of the named modules' source files and the
    versions of the numeric libraries.

    Any edit of those modules restarts a training whose state was made before it: a state made by
    other code cannot be continued into a trajectory that either version would produce. That
    costs a retraining after an edit that changed nothing numeric (a log line), never a silent
    mix of two implementations.
    """
    h = hashlib.sha256()
    for name in modules:
        module = importlib.import_module(name)
        h.update(name.encode() + b"\0" + Path(module.__file__).read_bytes())
    out = {"source": h.hexdigest()}
    for lib in libraries:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def trajectory_modules(root: str) -> tuple[str, ...]:
    """Every module of `billetjax` whose code a training runs: `root` (the trainer's module) and,
    transitively, every module it imports, read from their source (imports inside functions
    included), with the packages above them (their `__init__` runs on import); sorted.

    A trainer hashes their source into its fingerprint (`implementation`), so an edit of any of
    them restarts a training instead of resuming a state that other code made. Reading the
    imports, not a list, keeps a module added later covered. What a training reads as data (the
    experiment sets, the stamp pairs) is hashed as data, so the code that wrote it needs no place
    here."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        path = None if name in seen else _module_source(name)
        if path is None:  # seen, or a name inside a module (`from m import f`)
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package `level - 1` steps above this one's
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            todo.extend(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))
    return tuple(sorted(seen))


def _module_source(name: str) -> Path | None:
    """The source file of module `name` of this package (`a/b.py` or `a/b/__init__.py`), found
    without importing it; None when `name` is no module."""
    path = Path(__file__).resolve().parents[1].joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


# ----------------------------------------------------------------------------- fingerprint


@dataclass(frozen=True)
class Fingerprint:
    """Everything a run's state depends on.

    config: the config section the trainer reads (JSON-able; top-level keys);
    resumable: the top-level config keys that may change without a restart (left out of `digest`);
    seed: the run's seed; implementation: see `implementation()`;
    data: role -> {"path": ..., "sha256": ...} for every data file (or group of files) it reads.
    """

    config: dict
    resumable: frozenset[str]
    seed: int
    implementation: dict[str, str]
    data: dict[str, dict[str, str]] = field(default_factory=dict)

    def _binding(self) -> dict:
        """The parts that must be equal for a state to be resumed."""
        return {
            "config": {k: v for k, v in self.config.items() if k not in self.resumable},
            "seed": self.seed,
            "implementation": self.implementation,
            "data": {role: entry["sha256"] for role, entry in self.data.items()},
        }

    @property
    def digest(self) -> str:
        """SHA-256 of the binding parts (config without resumable keys, seed, implementation,
        data hashes; not the data paths: the same content elsewhere is the same data)."""
        return hashlib.sha256(_canonical(self._binding()).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"digest": self.digest, "config": self.config, "resumable": sorted(self.resumable),
                "seed": self.seed, "implementation": self.implementation, "data": self.data}

    @classmethod
    def from_json(cls, record: dict) -> "Fingerprint":
        return cls(config=dict(record["config"]), resumable=frozenset(record["resumable"]),
                   seed=record["seed"], implementation=dict(record["implementation"]),
                   data={k: dict(v) for k, v in record["data"].items()})

    def differences(self, old: "Fingerprint") -> list[str]:
        """What differs from `old` in the binding parts, as readable phrases (empty: resumable)."""
        out = []
        keys = set(self.config) | set(old.config)
        for k in sorted(keys - self.resumable):
            a, b = old.config.get(k, "<unset>"), self.config.get(k, "<unset>")
            if _canonical(a) != _canonical(b):
                out.append(f"config {k}: {_short(a)} -> {_short(b)}")
        if old.seed != self.seed:
            out.append(f"seed: {old.seed} -> {self.seed}")
        for k in sorted(set(self.implementation) | set(old.implementation)):
            a, b = old.implementation.get(k), self.implementation.get(k)
            if a != b:
                out.append(f"implementation {k}: {_short(a)} -> {_short(b)}")
        for role in sorted(set(self.data) | set(old.data)):
            a, b = old.data.get(role), self.data.get(role)
            if a is None or b is None or a["sha256"] != b["sha256"]:
                path = (b or a)["path"]
                out.append(f"data {role} ({path}): " + ("added" if a is None else "removed" if b is None
                                                        else "content changed"))
        return out

    def resumable_changes(self, old: "Fingerprint") -> list[str]:
        """Resumable keys whose values differ from `old` (e.g. more steps)."""
        return [f"{k}: {_short(old.config.get(k, '<unset>'))} -> {_short(self.config.get(k, '<unset>'))}"
                for k in sorted(self.resumable)
                if _canonical(old.config.get(k)) != _canonical(self.config.get(k))]


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else _canonical(value)
    if isinstance(value, str) and len(text) == 64:  # a hash
        return text[:12]
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- history


class History:
    """A training's history CSV: fixed columns, one row per logged step, written atomically.

    Rows are dicts; a column a row lacks is written as "nan". Rows read back from a file are
    strings and are written back unchanged.
    """

    def __init__(self, columns: Sequence[str], rows: list[dict] | None = None):
        self.columns = list(columns)
        self.rows: list[dict] = list(rows or [])

    @classmethod
    def read(cls, path: str | os.PathLike, columns: Sequence[str], up_to_step: int) -> "History":
        """The rows of `path` with step <= `up_to_step` (a resumed run's past); empty if absent."""
        path = Path(path)
        if not path.is_file():
            return cls(columns)
        with path.open(newline="") as f:
            return cls(columns, [r for r in csv.DictReader(f) if int(r["step"]) <= up_to_step])

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def write(self, path: str | os.PathLike) -> Path:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: row.get(k, "nan") for k in self.columns})
        atomic_write_text(path, buffer.getvalue())
        return Path(path)


# ----------------------------------------------------------------------------- run folder


class RunFolder:
    """A trainer's resumable state: `fingerprint.json`, `history.csv` and orbax `checkpoints/`.

    Use: `claim(fingerprint)` (discard another run's state, open the checkpoints), `resume(...)`
    (restore a checkpoint or start afresh), `save(step, state)` during training, `close()`, and
    `remove()` when the state is not kept after success.
    """

    def __init__(self, path: str | os.PathLike, what: str, *, max_to_keep: int | None = None,
                 async_checkpointing: bool = False):
        self.path = Path(path).resolve()
        self.what = what
        self.max_to_keep = max_to_keep
        self.async_checkpointing = async_checkpointing
        self.fingerprint: Fingerprint | None = None
        self.manager = None

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def fingerprint_path(self) -> Path:
        return self.path / FINGERPRINT_FILE

    # -- claiming

    def claim(self, fingerprint: Fingerprint) -> None:
        """Make the folder this run's: keep its state only if the fingerprints agree (else delete
        it with a WARNING saying what changed), write the current fingerprint, open the manager."""
        self.fingerprint = fingerprint
        if self.path.exists():
            old = self._read_fingerprint()
            if old is None:
                self._discard(f"holds no readable {FINGERPRINT_FILE} (state of an older version or "
                              "of an interrupted start)")
            elif old.digest != fingerprint.digest:
                changes = fingerprint.differences(old) or ["fingerprint digest"]
                self._discard("holds the state of another run; changed: " + "; ".join(changes))
            else:
                extended = fingerprint.resumable_changes(old)
                if extended:
                    log.info("%s: resumable settings changed (%s); the run continues", self.path,
                             "; ".join(extended))
        self._open()

    def _read_fingerprint(self) -> Fingerprint | None:
        try:
            return Fingerprint.from_json(json.loads(self.fingerprint_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _discard(self, reason: str) -> None:
        log.warning("%s %s: deleting it and training %s from step 0", self.path, reason, self.what)
        shutil.rmtree(self.path)

    def _open(self) -> None:
        import orbax.checkpoint as ocp

        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.fingerprint_path, json.dumps(self.fingerprint.to_json(), indent=1,
                                                            sort_keys=True) + "\n")
        try:
            self.manager = ocp.CheckpointManager(self.path / "checkpoints", options=self._options())
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint folder is set aside
            self._set_aside(f"checkpoints cannot be opened ({type(error).__name__}: {error})")
            self.manager = ocp.CheckpointManager(self.path / "checkpoints", options=self._options())

    def _options(self):
        import orbax.checkpoint as ocp

        return ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True,
                                            enable_async_checkpointing=self.async_checkpointing)

    def _set_aside(self, reason: str) -> Path:
        """Move the whole folder to `<folder>.corrupt-<time>` and recreate it with this run's
        fingerprint (the caller reopens the manager)."""
        if self.manager is not None:
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001 - a broken manager must not stop the fresh start
                pass
            self.manager = None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.replace(self.path, target)
        log.warning("%s: %s; moved it to %s and training %s from step 0", self.path, reason,
                    target, self.what)
        self.path.mkdir(parents=True)
        atomic_write_text(self.fingerprint_path, json.dumps(self.fingerprint.to_json(), indent=1,
                                                            sort_keys=True) + "\n")
        return target

    # -- checkpoints

    def saved_steps(self) -> list[int]:
        """The steps of the checkpoints in the folder, ascending."""
        return sorted(self.manager.all_steps())

    def resume(self, initial_state: Any, step: int | None, also: Iterable[int] = (),
               on_restore: Callable[[int, Any], None] | None = None) -> tuple[Any, int]:
        """Restore checkpoint `step` (None or 0: start afresh); returns (state, step).

        `also` are further steps restored first (e.g. the GAN's earlier checkpoints, whose
        generator files it rebuilds); `on_restore(step, state)` is called for each restored step.
        A resumption is logged at WARNING. If any of them fails to restore (corrupt files, a
        shape mismatch), the folder is set aside and `(initial_state, 0)` is returned.
        """
        import jax
        import orbax.checkpoint as ocp

        if not step:
            return initial_state, 0
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial_state)
        restored = None
        for s in [*sorted(set(also) - {step}), step]:
            try:
                restored = self.manager.restore(s, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # noqa: BLE001 - whatever fails to restore is set aside
                self._set_aside(f"checkpoint {s} does not restore ({type(error).__name__}: "
                                f"{_first_line(error)})")
                self.manager = ocp.CheckpointManager(self.path / "checkpoints", options=self._options())
                return initial_state, 0
            if on_restore is not None:
                on_restore(s, restored)
        log.warning("resuming %s from step %d of %s (fingerprint %s)", self.what, step, self.path,
                    self.fingerprint.digest[:12])
        return restored, step

    def save(self, step: int, state: Any) -> None:
        """Write checkpoint `step` and wait until it is complete."""
        import orbax.checkpoint as ocp

        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def close(self) -> None:
        if self.manager is not None:
            self.manager.wait_until_finished()
            self.manager.close()
            self.manager = None

    def remove(self) -> None:
        """Delete the folder (a trainer that keeps no state after success)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _first_line(error: BaseException, limit: int = 1000) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
