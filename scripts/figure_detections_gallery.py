"""results/figures/detections_gallery.png: worst and best billets with detections by outcome."""

from billetjax.evaluation.figures import detections_gallery
from billetjax.runtime import log_to

log_to(snakemake.log[0])
evaluation = snakemake.params.config["evaluation"]
detections_gallery(
    gt_path=snakemake.input.gt,
    detections_path=snakemake.input.detections,
    out_path=snakemake.output[0],
    iou_threshold=evaluation["iou_threshold"],
    score_threshold=evaluation["score_threshold"],
    n_billets=evaluation["gallery"]["billets"],
    title="experiment {experiment}, seed {seed}, test set {test_set}".format(**snakemake.params.run),
)
