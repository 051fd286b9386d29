"""mAP@0.5 on billet resamples (`resampled_map50`) against pycocotools' COCOeval on the images a
resample draws, duplicated as new images."""

import numpy as np
import pytest

from billetjax.coco_map import ap_matches, map50, resampled_map50


def random_study(rng: np.random.Generator, n_images: int = 12, n_categories: int = 4):
    """Ground truth and detections with hits, misclassifications, shifted boxes and false
    positives, every score distinct; one crowd box, and one category without ground truth."""
    images = [{"id": 100 + i, "width": 200, "height": 100} for i in range(n_images)]
    categories = [{"id": c, "name": str(c)} for c in range(1, n_categories + 2)]  # the last has no GT
    annotations, detections = [], []
    scores = iter(rng.permutation(np.linspace(0.05, 0.99, 40 * n_images)))
    for img in images:
        for j in range(int(rng.integers(0, 6))):
            box = [10.0 + 30 * j, 20.0, 12.0, 18.0]
            c = int(rng.integers(1, n_categories + 1))
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": c, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": int(img["id"] == 103 and j == 0)})
            kind = rng.random()
            if kind < 0.6:  # a hit, sometimes twice (the second is a false positive)
                for _ in range(1 + int(rng.random() < 0.2)):
                    detections.append({"image_id": img["id"], "category_id": c, "bbox": box, "score": next(scores)})
            elif kind < 0.8:  # the wrong class
                detections.append({"image_id": img["id"], "category_id": c % n_categories + 1, "bbox": box,
                                   "score": next(scores)})
            elif kind < 0.9:  # too far off
                detections.append({"image_id": img["id"], "category_id": c,
                                   "bbox": [box[0] + 9, box[1], box[2], box[3]], "score": next(scores)})
        for _ in range(int(rng.integers(0, 3))):  # false positives away from every box
            detections.append({"image_id": img["id"], "category_id": int(rng.integers(1, n_categories + 2)),
                               "bbox": [float(rng.uniform(0, 150)), 70.0, 10.0, 10.0], "score": next(scores)})
    return {"images": images, "categories": categories, "annotations": annotations}, detections


def duplicated(coco_gt: dict, detections: list[dict], counts: np.ndarray):
    """The data set a resample draws: image i `counts[i]` times, each copy a new image."""
    images, annotations, dets = [], [], []
    for i, img in enumerate(coco_gt["images"]):
        for copy in range(int(counts[i])):
            new_id = 10_000 * (copy + 1) + img["id"]
            images.append({**img, "id": new_id})
            for a in coco_gt["annotations"]:
                if a["image_id"] == img["id"]:
                    annotations.append({**a, "id": len(annotations) + 1, "image_id": new_id})
            dets += [{**d, "image_id": new_id} for d in detections if d["image_id"] == img["id"]]
    return {**coco_gt, "images": images, "annotations": annotations}, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_of_one_give_cocoeval(seed):
    coco_gt, dets = random_study(np.random.default_rng(seed))
    matches = ap_matches(coco_gt, dets)
    ours = resampled_map50(matches, np.ones((1, len(coco_gt["images"]))))
    assert ours[0] == pytest.approx(map50(coco_gt, dets), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_resamples_give_cocoeval_on_the_duplicated_images(seed):
    rng = np.random.default_rng(seed)
    coco_gt, dets = random_study(rng)
    # The matches' image order need not be the file's.
    order = [img["id"] for img in coco_gt["images"]][::-1]
    matches = ap_matches(coco_gt, dets, order)
    n = len(coco_gt["images"])
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=6)
    draws[0] = 0
    draws[0, :2] = [5, 7]  # two images only: most categories lose their ground truth
    ours = resampled_map50(matches, draws, chunk=4)  # chunks smaller than the resamples
    by_file_order = {image_id: i for i, image_id in enumerate(order)}
    for row, counts in zip(ours, draws):
        file_counts = np.array([counts[by_file_order[img["id"]]] for img in coco_gt["images"]])
        reference = map50(*duplicated(coco_gt, dets, file_counts))
        assert row == pytest.approx(reference, abs=1e-12), counts


def test_no_detections_no_ground_truth_and_bad_orders():
    coco_gt, dets = random_study(np.random.default_rng(5))
    n = len(coco_gt["images"])
    assert resampled_map50(ap_matches(coco_gt, []), np.ones((2, n))).tolist() == [0.0, 0.0]
    no_gt = {**coco_gt, "annotations": []}
    assert np.isnan(resampled_map50(ap_matches(no_gt, dets), np.ones((1, n)))).all()
    with pytest.raises(ValueError, match="ground truth's images"):
        ap_matches(coco_gt, dets, [img["id"] for img in coco_gt["images"]][1:])
    with pytest.raises(ValueError, match="weights for 3 images"):
        resampled_map50(ap_matches(coco_gt, dets), np.ones((1, 3)))


def test_round_trip_through_json():
    coco_gt, dets = random_study(np.random.default_rng(7))
    matches = ap_matches(coco_gt, dets)
    again = type(matches).from_json(matches.to_json())
    weights = np.random.default_rng(0).multinomial(len(coco_gt["images"]), np.full(12, 1 / 12), size=5)
    assert np.array_equal(resampled_map50(matches, weights), resampled_map50(again, weights))
