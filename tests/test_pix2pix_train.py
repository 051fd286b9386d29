"""pix2pix training: overfitting a few pairs, resuming bit-identically, checkpoints, figures, what
may be resumed (more steps) and what not (other stamps, a corrupt checkpoint), NaN losses."""

import csv
import logging
from dataclasses import replace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx, serialization

from billetjax.pix2pix.figures import loss_figure, gan_samples_figure
from billetjax.pix2pix.train import TrainConfig, _resume_step, create_state, generator_path, train

SIZE = 32


def make_pairs(path, n, seed):
    """Blocky 'stamps': a dark, shaded rectangle-with-hole on a noisy steel-grey background."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        y, x = rng.integers(4, 10, 2)
        masks[i, y : y + 18, x : x + 12] = 255
        masks[i, y + 5 : y + 12, x + 4 : x + 8] = 0
        base = rng.normal(150, 8, (SIZE, SIZE, 1)) + np.array([8, 0, -8])
        shade = np.linspace(-40, 10, SIZE)[None, :, None]
        images[i] = np.clip(np.where(masks[i, ..., None] > 0, base - 60 + shade, base), 0, 255)
    np.savez(path, images=images, masks=masks, labels=np.array(["0"] * n))
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stamps")
    return make_pairs(folder / "train.npz", 4, 0), make_pairs(folder / "val.npz", 3, 1)


@pytest.fixture
def gan(make_config):
    """A function: config.yaml's `gan` section with the given keys changed, as a TrainConfig."""
    return lambda **keys: TrainConfig.from_config(make_config({"gan": keys})["gan"])


def read_history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_overfits_a_handful_of_pairs(pairs, tmp_path, gan):
    cfg = gan(image_size_px=SIZE, ngf=16, ndf=16, batch_size=4, steps=120,
                      checkpoint_every=120, log_every=10, jitter_px=0, learning_rate=1e-3)
    train(pairs[0], pairs[0], tmp_path, cfg, seed=0)
    rows = read_history(tmp_path / "history.csv")
    assert [int(r["step"]) for r in rows] == list(range(10, 121, 10))
    assert list(rows[0]) == ["step", "g_gan", "g_l1", "d_loss", "val_l1", "steps_per_s"]
    first, last = float(rows[0]["g_l1"]), float(rows[-1]["g_l1"])
    assert last < 0.4 * first, (first, last)
    assert float(rows[-1]["val_l1"]) < 0.5 * float(rows[0]["val_l1"])


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_resume_after_interruption_is_bit_identical(pairs, tmp_path, gan):
    cfg = gan(image_size_px=SIZE, ngf=8, ndf=8, batch_size=2, steps=6,
                      checkpoint_every=2, log_every=2, jitter_px=2)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(*pairs, whole, cfg, seed=5)

    def kill_at_5(step):
        if step == 5:  # after checkpoint 4: step 5's progress is lost, as in a killed job
            raise Interrupted

    with pytest.raises(Interrupted):
        train(*pairs, resumed, cfg, seed=5, on_step=kill_at_5)
    assert not (resumed / "history.csv").exists()
    generator_path(resumed, 4).unlink()  # as if Snakemake had removed the failed job's outputs
    train(*pairs, resumed, cfg, seed=5)

    for step in cfg.checkpoint_steps():
        a, b = generator_path(whole, step).read_bytes(), generator_path(resumed, step).read_bytes()
        assert a == b, f"generator of step {step} differs after resuming"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]  # noqa: E731
    assert strip(read_history(whole / "history.csv")) == strip(read_history(resumed / "history.csv"))

    # The orbax state of a checkpoint restores bit-identically to what the generator file holds.
    _, abstract_state = create_state(cfg, seed=5)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    with ocp.CheckpointManager((whole / "state" / "checkpoints").resolve()) as manager:
        assert manager.all_steps() == [2, 4, 6]
        state = manager.restore(4, args=ocp.args.StandardRestore(abstract))
    saved = serialization.msgpack_restore(generator_path(whole, 4).read_bytes())
    assert int(state["step"]) == 4 and saved["step"] == 4
    restored = nnx.to_pure_dict(state["g_params"])
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved["params"])):
        np.testing.assert_array_equal(np.asarray(a), b)

    sample = gan_samples_figure(generator_path(whole, 6), pairs[1], tmp_path / "samples.png", seed=0, n=3)
    losses = loss_figure(whole / "history.csv", tmp_path / "losses.png")
    assert sample.stat().st_size > 0 and losses.stat().st_size > 0


SEED = 2  # one seed (and the tiny config's shapes) for the tests below: one compilation of the step


@pytest.fixture
def tiny(gan):
    return gan(image_size_px=SIZE, ngf=8, ndf=8, batch_size=2, steps=4, checkpoint_every=2, log_every=2,
               jitter_px=2)


def interrupt_at(step):
    """An `on_step` hook that kills the training after `step`."""

    def hook(s):
        if s == step:
            raise Interrupted

    return hook


def generators(out_dir, cfg):
    return {step: generator_path(out_dir, step).read_bytes() for step in cfg.checkpoint_steps()}


@pytest.mark.slow
def test_more_steps_extend_the_run_with_a_warning(pairs, tmp_path, caplog, tiny):
    """gan.steps is resumable: 4 then 6 steps end where an unbroken 6-step run ends."""
    longer = replace(tiny, steps=6)
    train(*pairs, tmp_path / "whole", longer, seed=SEED)
    trained = []
    train(*pairs, tmp_path / "extended", tiny, seed=SEED)
    with caplog.at_level(logging.WARNING):
        train(*pairs, tmp_path / "extended", longer, seed=SEED, on_step=trained.append)
    assert trained == [5, 6]
    assert "resuming pix2pix from step 4 of" in caplog.text
    assert generators(tmp_path / "extended", longer) == generators(tmp_path / "whole", longer)
    assert [r["step"] for r in read_history(tmp_path / "extended/history.csv")] == ["2", "4", "6"]


def test_other_stamp_pairs_retrain_from_step_0(pairs, tmp_path, caplog, tiny):
    """The user's own stamps after the simulator's: the kept state is not resumed."""
    other = make_pairs(tmp_path / "own.npz", 4, seed=7)
    train(*pairs, tmp_path / "run", tiny, seed=SEED)
    simulator = generators(tmp_path / "run", tiny)
    trained = []
    with caplog.at_level(logging.WARNING):
        train(other, pairs[1], tmp_path / "run", tiny, seed=SEED, on_step=trained.append)
    assert trained == [1, 2, 3, 4]
    assert "changed: data train pairs" in caplog.text and "content changed" in caplog.text
    assert "resuming" not in caplog.text
    own = generators(tmp_path / "run", tiny)
    assert own != simulator
    train(other, pairs[1], tmp_path / "fresh", tiny, seed=SEED)
    assert own == generators(tmp_path / "fresh", tiny)


def test_trajectory_modules_are_every_billetjax_module_the_training_loads(billetjax_modules_loaded_by):
    """The modules whose source pix2pix's fingerprint hashes, read from the imports, hold every
    billetjax module that importing its training loads (in a fresh interpreter: the reference),
    the layers' ops among them, and nothing of the detector or the simulator."""
    from billetjax.runs import trajectory_modules

    loaded = billetjax_modules_loaded_by("billetjax.pix2pix.train")
    hashed = trajectory_modules("billetjax.pix2pix.train")
    assert hashed == tuple(sorted(hashed)) and set(loaded) <= set(hashed), set(loaded) - set(hashed)
    assert {"billetjax.pix2pix.models", "billetjax.pix2pix.ops", "billetjax.pix2pix.sample",
            "billetjax.runs", "billetjax.sections"} <= set(hashed)
    assert not [m for m in hashed if m.startswith(("billetjax.detector", "billetjax.data", "billetjax.config"))]


def test_an_edit_of_a_module_the_training_runs_discards_its_state(pairs, tmp_path, caplog, tiny, monkeypatch,
                                                                    edit_module):
    """Editing a module pix2pix's training runs (its layers' ops, the models, the config typing,
    the checkpoint store) changes the fingerprint; a kept state is then deleted and the training
    starts from step 0 instead of resuming."""
    from billetjax.pix2pix.models import DEFAULT_IMPL
    from billetjax.pix2pix.train import fingerprint

    base = fingerprint(tiny, SEED, DEFAULT_IMPL, *pairs).digest
    for name in ("billetjax.pix2pix.ops", "billetjax.pix2pix.models", "billetjax.sections", "billetjax.runs"):
        with monkeypatch.context() as patch:
            edit_module(patch, name)
            assert fingerprint(tiny, SEED, DEFAULT_IMPL, *pairs).digest != base, name
    assert fingerprint(tiny, SEED, DEFAULT_IMPL, *pairs).digest == base

    train(*pairs, tmp_path / "run", tiny, seed=SEED)
    first = generators(tmp_path / "run", tiny)
    edit_module(monkeypatch, "billetjax.pix2pix.ops")
    trained = []
    with caplog.at_level(logging.WARNING):
        train(*pairs, tmp_path / "run", tiny, seed=SEED, on_step=trained.append)
    assert "holds the state of another run; changed: implementation source" in caplog.text
    assert "resuming" not in caplog.text and trained == [1, 2, 3, 4]
    assert generators(tmp_path / "run", tiny) == first  # the edit was a comment: the same run again


# orbax's restore leaves an asyncio callback behind when it fails: harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_last_checkpoint_starts_afresh(pairs, tmp_path, caplog, tiny):
    train(*pairs, tmp_path / "whole", tiny, seed=SEED)
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(*pairs, run, tiny, seed=SEED, on_step=interrupt_at(3))
    (run / "state/checkpoints/2/default/manifest.ocdbt").write_bytes(b"\0" * 7)  # a torn write
    trained = []
    with caplog.at_level(logging.WARNING):
        train(*pairs, run, tiny, seed=SEED, on_step=trained.append)
    assert "checkpoint 2 does not restore" in caplog.text and "Error decoding manifest" in caplog.text
    assert trained == [1, 2, 3, 4]
    assert len(list(tmp_path.glob("run/state.corrupt-*"))) == 1
    assert generators(run, tiny) == generators(tmp_path / "whole", tiny)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the retry after that resumes the fresh state
        train(*pairs, run, tiny, seed=SEED)
    assert "resuming pix2pix from step 4" in caplog.text and "does not restore" not in caplog.text


def test_changed_checkpoint_every_retrains_the_missing_checkpoints(pairs, tmp_path, tiny):
    """Checkpoints at 2 and 4 only; checkpoint_every 3 wants one at 3: resumed from step 2."""
    every3 = replace(tiny, steps=6, checkpoint_every=3)
    train(*pairs, tmp_path / "run", tiny, seed=SEED)
    trained = []
    train(*pairs, tmp_path / "run", every3, seed=SEED, on_step=trained.append)
    assert trained == [3, 4, 5, 6]
    train(*pairs, tmp_path / "whole", every3, seed=SEED)
    assert generators(tmp_path / "run", every3) == generators(tmp_path / "whole", every3)
    assert _resume_step([2, 4], every3) == 2 and _resume_step([3, 6], every3) == 6
    assert _resume_step([2, 4, 6], replace(tiny, steps=3, checkpoint_every=1)) is None


@pytest.mark.slow
def test_non_finite_loss_stops_training_naming_the_step(pairs, tmp_path, tiny):
    """A NaN learning rate spoils D at step 1 (D is updated before G's loss): the check at the
    first checkpoint (step 2) names step 1, and no checkpoint of the diverged state is written."""
    cfg = replace(tiny, learning_rate=float("nan"), log_every=4)
    with pytest.raises(FloatingPointError, match=r"pix2pix training diverged at step 1: .*not finite"):
        train(*pairs, tmp_path, cfg, seed=0)
    assert not (tmp_path / "state/checkpoints/2").exists()
    assert not generator_path(tmp_path, 2).exists()


@pytest.mark.slow
def test_bfloat16_mixed_precision_trains_close_to_float32(pairs, gan):
    """`gan.precision: bfloat16`: convolutions in bfloat16 from the same float32 weights; images,
    logits, losses, weights, Adam's state and the batch-norm averages stay float32, and four steps
    give finite losses within a few percent of float32's."""
    import jax.numpy as jnp

    from billetjax.pix2pix.sample import masks_to_input
    from billetjax.pix2pix.train import load_pairs, make_train_step

    masks, images = (jax.device_put(a) for a in load_pairs(pairs[0], SIZE))
    runs = {}
    for precision in ("float32", "bfloat16"):
        cfg = gan(image_size_px=SIZE, ngf=8, ndf=8, batch_size=4, jitter_px=0, precision=precision)
        models, state = create_state(cfg, seed=0)
        assert models.config.precision == precision
        # A copy: calling the generator updates its batch-norm averages in place.
        g = nnx.merge(models.g_def, *jax.tree.map(jnp.array, (state["g_params"], state["g_stats"])))
        assert g.down1.dtype == jnp.dtype(precision)
        assert g(masks_to_input(masks, 1), jax.random.key(0)).dtype == jnp.float32
        initial = jax.tree.map(np.array, state)  # host copies of the initial values
        step = make_train_step(models, cfg, seed=0)
        losses = []
        for _ in range(4):
            state, metrics = step(state, masks, images)
            losses.append({k: float(v) for k, v in metrics.items()})
        floats = {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert floats == {jnp.dtype(jnp.float32)}, floats
        runs[precision] = initial, losses
    (init32, loss32), (init16, loss16) = runs["float32"], runs["bfloat16"]
    jax.tree.map(np.testing.assert_array_equal, init32, init16)
    for step32, step16 in zip(loss32, loss16):
        for k in step32:
            assert np.isfinite(step16[k]) and step16[k] == pytest.approx(step32[k], rel=0.05), (k, step32, step16)
    assert loss16 != loss32
