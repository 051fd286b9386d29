"""Two-stage Faster R-CNN (Ren et al. 2015) in Flax NNX with static-shape ops.

One concern per module, imports pointing one way (docs/detector.md): `ops`, `anchors`,
`targets` -> `spec` (typed config, spec, weights file) -> `models` (NNX modules), `data` ->
`postprocess` -> `losses`, `predict` -> `train`.
"""
