"""The run folder both trainers share: fingerprint, resume policy, set-aside state, history CSV."""

import csv
import json
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from billetjax import runs


def make_fingerprint(tmp_path, config=None, data_bytes=b"pairs v1", seed=0, resumable=("steps", "log_every")):
    data = tmp_path / "train.npz"
    data.write_bytes(data_bytes)
    return runs.Fingerprint(
        config=config or {"steps": 10, "log_every": 5, "ngf": 8, "learning_rate": 2e-4},
        resumable=frozenset(resumable), seed=seed,
        implementation={"source": "a" * 64, "jax": "0.0"},
        data={"train": {"path": str(data), "sha256": runs.file_sha256(data)}},
    )


def test_fingerprint_follows_data_and_non_resumable_keys(tmp_path):
    base = make_fingerprint(tmp_path)
    assert make_fingerprint(tmp_path).digest == base.digest

    more_steps = make_fingerprint(tmp_path, {**base.config, "steps": 50, "log_every": 1})
    assert more_steps.digest == base.digest
    assert more_steps.differences(base) == []
    assert more_steps.resumable_changes(base) == ["log_every: 5 -> 1", "steps: 10 -> 50"]

    wider = make_fingerprint(tmp_path, {**base.config, "ngf": 16})
    assert wider.digest != base.digest
    assert wider.differences(base) == ["config ngf: 8 -> 16"]

    new_data = make_fingerprint(tmp_path, data_bytes=b"pairs v2")
    assert new_data.digest != base.digest
    (change,) = new_data.differences(base)
    assert change.startswith("data train (") and change.endswith("content changed")

    # A key becomes non-resumable when the trainer says so (e.g. the detector's steps).
    strict = make_fingerprint(tmp_path, {**base.config, "steps": 50}, resumable=("log_every",))
    assert strict.digest != make_fingerprint(tmp_path, resumable=("log_every",)).digest

    assert make_fingerprint(tmp_path, seed=1).differences(base) == ["seed: 0 -> 1"]
    other_code = runs.Fingerprint(**{**vars(base), "implementation": {"source": "b" * 64, "jax": "0.0"}})
    assert other_code.digest != base.digest
    assert other_code.differences(base) == ["implementation source: aaaaaaaaaaaa -> bbbbbbbbbbbb"]

    # The same content elsewhere is the same data.
    (tmp_path / "moved").mkdir()
    moved = make_fingerprint(tmp_path / "moved")
    assert moved.digest == base.digest
    assert runs.Fingerprint.from_json(base.to_json()) == base


def test_file_hashes_see_content_and_names(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"x" * 3_000_000)  # more than one read chunk
    b.write_bytes(b"y")
    h = runs.files_sha256([a, b])
    assert runs.files_sha256([b, a]) != h
    a.write_bytes(b"x" * 2_999_999 + b"z")
    assert runs.files_sha256([a, b]) != h
    this = runs.implementation(["billetjax.runs"])
    assert this == runs.implementation(["billetjax.runs"]) and set(this) >= {"source", "jax", "flax"}
    assert this != runs.implementation(["billetjax.seeds"])


def state_of(n, value=0.0):
    return {"w": jnp.full((n,), value, jnp.float32), "step": jnp.zeros((), jnp.int32)}


def saved_run(tmp_path, fingerprint, step=3, n=3):
    run = runs.RunFolder(tmp_path / "state", "toy")
    run.claim(fingerprint)
    run.save(step, {**state_of(n, 1.5), "step": jnp.asarray(step, jnp.int32)})
    rows = [{"step": s, "loss": 0.1 * s} for s in range(1, step + 1)]
    runs.History(["step", "loss"], rows).write(run.history_path)
    run.close()
    return run.path


def test_same_fingerprint_resumes_with_a_warning(tmp_path, caplog):
    fp = make_fingerprint(tmp_path)
    path = saved_run(tmp_path, fp)
    run = runs.RunFolder(path, "toy")
    more_steps = make_fingerprint(tmp_path, {**fp.config, "steps": 20})
    with caplog.at_level(logging.INFO, logger="billetjax.runs"):
        run.claim(more_steps)
        state, step = run.resume(state_of(3), max(run.saved_steps()))
    assert step == 3 and int(state["step"]) == 3
    np.testing.assert_array_equal(state["w"], np.full(3, 1.5, np.float32))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"resuming toy from step 3 of {path} (fingerprint {fp.digest[:12]})" in warnings[0].getMessage()
    assert "steps: 10 -> 20" in caplog.text
    run.close()


def test_other_fingerprint_deletes_the_state(tmp_path, caplog):
    path = saved_run(tmp_path, make_fingerprint(tmp_path))
    run = runs.RunFolder(path, "toy")
    with caplog.at_level(logging.WARNING, logger="billetjax.runs"):
        run.claim(make_fingerprint(tmp_path, data_bytes=b"the user's own stamps"))
    assert "holds the state of another run; changed: data train" in caplog.text
    assert "training toy from step 0" in caplog.text
    assert run.saved_steps() == [] and not run.history_path.exists()
    assert run.resume(state_of(3), None)[1] == 0
    run.close()
    written = runs.Fingerprint.from_json(json.loads(run.fingerprint_path.read_text()))
    assert written == make_fingerprint(tmp_path, data_bytes=b"the user's own stamps")


def test_state_without_fingerprint_is_not_resumed(tmp_path, caplog):
    """A folder of an older version (no fingerprint.json) is another run's state."""
    path = saved_run(tmp_path, make_fingerprint(tmp_path))
    (path / runs.FINGERPRINT_FILE).unlink()
    (path / "config.json").write_text("{}")
    run = runs.RunFolder(path, "toy")
    with caplog.at_level(logging.WARNING, logger="billetjax.runs"):
        run.claim(make_fingerprint(tmp_path))
    assert "no readable fingerprint.json" in caplog.text
    assert run.saved_steps() == [] and not (path / "config.json").exists()
    run.close()


# orbax leaves a coroutine unawaited when a shape mismatch aborts a restore: harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["manifest", "shape"])
def test_unrestorable_checkpoint_is_set_aside_once(tmp_path, caplog, damage):
    fp = make_fingerprint(tmp_path)
    path = saved_run(tmp_path, fp, step=3, n=3)
    n = 3
    if damage == "manifest":
        (path / "checkpoints/3/default/manifest.ocdbt").write_bytes(b"not a manifest")
    else:
        n = 4  # the same fingerprint but a state of another shape (e.g. a bug fixed in place)
    run = runs.RunFolder(path, "toy")
    with caplog.at_level(logging.WARNING, logger="billetjax.runs"):
        run.claim(fp)
        state, step = run.resume(state_of(n), max(run.saved_steps()))
    assert step == 0 and int(state["step"]) == 0 and state["w"].shape == (n,)
    assert "checkpoint 3 does not restore (ValueError" in caplog.text
    aside = list(tmp_path.glob("state.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoints/3").is_dir()
    assert str(aside[0]) in caplog.text
    assert run.saved_steps() == [] and run.fingerprint_path.is_file() and not run.history_path.exists()

    # The fresh run checkpoints and the next retry resumes it: no failure comes back.
    run.save(2, {**state_of(n, 7.0), "step": jnp.asarray(2, jnp.int32)})
    run.close()
    caplog.clear()
    again = runs.RunFolder(path, "toy")
    again.claim(fp)
    state, step = again.resume(state_of(n), max(again.saved_steps()))
    assert step == 2 and float(state["w"][0]) == 7.0
    assert "does not restore" not in caplog.text
    again.remove()
    assert not path.exists()


def test_resume_restores_the_extra_steps_first(tmp_path):
    fp = make_fingerprint(tmp_path)
    run = runs.RunFolder(tmp_path / "state", "toy")
    run.claim(fp)
    for s in (2, 4, 6):
        run.save(s, {**state_of(2, float(s)), "step": jnp.asarray(s, jnp.int32)})
    seen = []
    state, step = run.resume(state_of(2), 6, also=[4, 2, 6], on_restore=lambda s, st: seen.append(
        (s, float(st["w"][0]))))
    assert seen == [(2, 2.0), (4, 4.0), (6, 6.0)] and step == 6
    run.close()


def test_history_is_written_atomically_and_read_up_to_a_step(tmp_path):
    path = tmp_path / "history.csv"
    history = runs.History(["step", "loss", "val"])
    history.append({"step": 1, "loss": 0.5})
    history.append({"step": 2, "loss": 0.25, "val": 0.75})
    history.write(path)
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]  # no temporary file left
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"step": "1", "loss": "0.5", "val": "nan"}, {"step": "2", "loss": "0.25", "val": "0.75"}]

    resumed = runs.History.read(path, ["step", "loss", "val"], up_to_step=1)
    assert resumed.rows == rows[:1]
    resumed.append({"step": 2, "loss": 0.125})
    resumed.write(path)
    assert path.read_text().splitlines()[1:] == ["1,0.5,nan", "2,0.125,nan"]
    assert runs.History.read(tmp_path / "absent.csv", ["step"], 5).rows == []
