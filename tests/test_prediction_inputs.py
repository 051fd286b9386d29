"""A trained detector refuses a test set whose images are not the size it was trained on, before
compiling anything, naming both sizes (billetjax/detector/predict.py; mixed sizes within one set:
billetjax/detector/data.py). The weights are untrained zeros: only the refusal is under test."""

from __future__ import annotations

import numpy as np
import pytest

from billetjax import coco as cc

TRAINED_PX = 64
TINY_MODEL = {"stem_width": 8, "widths": [8, 16, 32], "blocks": [1, 1, 1], "fpn_width": 16, "head_width": 32}


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory, make_config):
    """A params file of a 64 px detector over the digits (ids 1..10), written without training."""
    import jax
    from flax import nnx

    from billetjax.detector.models import FasterRCNN
    from billetjax.detector.spec import DetectorConfig, make_spec, save_params

    config = make_config({"image_size_px": TRAINED_PX, "detector": {"model": TINY_MODEL}})
    boxes = np.array([[4, 4, 10, 16], [30, 20, 12, 18]], float)
    spec, _ = make_spec(DetectorConfig.from_config(config["detector"]), TRAINED_PX, tuple(range(1, 11)), boxes)
    # The model's structure only (no initialisation to compile); zero weights in its shapes.
    model = nnx.eval_shape(lambda: FasterRCNN(spec.model, nnx.Rngs(0)))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    path = tmp_path_factory.mktemp("detector") / "params.msgpack"
    save_params(path, spec, params)
    return path


def write_set(folder, sizes: list[tuple[int, int]]) -> str:
    """A COCO test set with one image per (width, height) and one digit on each."""
    coco = cc.empty_dataset()
    for i, (width, height) in enumerate(sizes, start=1):
        cc.write_image(folder / f"img{i}.png", np.full((height, width, 3), 120, np.uint8))
        coco["images"].append({"id": i, "file_name": f"img{i}.png", "width": width, "height": height,
                               "billet_id": "7", "source": "real"})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 8, "bbox": [2.0, 2.0, 10.0, 16.0],
                                    "area": 160.0, "iscrowd": 0})
    path = folder / "testset.json"
    cc.save(path, coco)
    return str(path)


@pytest.mark.parametrize("size", [(48, 48), (128, 128), (64, 48)], ids=["smaller", "larger", "not square"])
def test_images_of_another_size_are_refused(tmp_path, detector_file, size):
    from billetjax.detector.predict import predict

    test_json = write_set(tmp_path, [size, size])
    width, height = size
    with pytest.raises(ValueError, match=rf"images are {width}x{height} px, .* trained on {TRAINED_PX} px"):
        predict(detector_file, test_json, tmp_path / "detections.json")
    assert not (tmp_path / "detections.json").exists()


def test_a_set_of_mixed_sizes_is_refused(tmp_path, detector_file):
    from billetjax.detector.predict import predict

    test_json = write_set(tmp_path, [(TRAINED_PX, TRAINED_PX), (48, 48)])
    with pytest.raises(ValueError, match=r"image 2 \(img2.png\) is 48x48, the others 64x64"):
        predict(detector_file, test_json, tmp_path / "detections.json")
    assert not (tmp_path / "detections.json").exists()
