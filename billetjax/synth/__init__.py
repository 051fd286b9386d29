"""Synthesis of training images (paper §2.2.4, Figure 5): masks -> rendered stamps -> billets.

`masks` makes heuristic glyph masks, `classic` renders them without learning (the baseline),
`embed` composes one billet, `pool` makes the stamp banks and the COCO pool, `figures` draws them.
"""
