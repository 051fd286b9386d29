"""The real data: the embedded billet renderer, user COCO import, test sets, stamp pairs, surfaces."""
