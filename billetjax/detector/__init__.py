"""Two-stage Faster R-CNN (Ren et al. 2015) in Flax NNX with static-shape ops (DESIGN §9)."""
