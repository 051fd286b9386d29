"""Two-stage Faster R-CNN (Ren et al. 2015) in Flax NNX with static-shape ops.

By component (docs/detector.md): `rpn` and `roi_heads` each own their head, targets, loss and
inference step over the shared `ops`, `matcher` and `sampling`; `geometry` owns the strides,
stem, bottleneck expansion and training window (standard library only); `backbone` and `models`
hold the network, `spec` its settings, `data`, `predict` and `train` the rest.
"""
