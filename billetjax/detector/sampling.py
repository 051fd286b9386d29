"""Fixed-size balanced sampling of positives and negatives (torchvision's
``BalancedPositiveNegativeSampler``) as a random ``top_k`` over boolean masks, as scenic and the
TF Object Detection API do: it agrees with torchvision in counts and distribution, not draw by
draw. Shared by both stages (anchors for the RPN, proposals for the box head).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

def _top_k_of_mask(mask, random_keys, k):
    """Indices ``[k]`` of up to ``k`` random true entries of ``mask``, valid ones first, and
    their validity ``bool[k]``."""
    scores = jnp.where(mask, random_keys, -1.0)  # random_keys are in [0, 1)
    values, indices = lax.top_k(scores, k)
    return indices.astype(jnp.int32), values >= 0


def sample_balanced_indices(
    key: jax.Array,
    labels: jax.Array,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fixed-size balanced sample of ``labels[A]`` (1 positive, 0 negative, -1 ignored).

    Returns ``(indices int32[num_samples], is_positive bool[num_samples], valid
    bool[num_samples])``: first up to ``int(num_samples * positive_fraction)`` random positives,
    then random negatives filling up to ``num_samples`` (torchvision
    BalancedPositiveNegativeSampler's counts); slots beyond the available boxes are not valid.
    """
    num_samples = int(num_samples)
    labels = jnp.asarray(labels)
    num_boxes = labels.shape[0]
    if num_boxes == 0:
        empty = jnp.zeros((num_samples,), bool)
        return jnp.zeros((num_samples,), jnp.int32), empty, empty
    max_positive = int(num_samples * positive_fraction)
    random_keys = jax.random.uniform(key, (num_boxes,))
    k_pos = min(max_positive, num_boxes)
    k_neg = min(num_samples, num_boxes)
    pos_idx, pos_ok = _top_k_of_mask(labels == 1, random_keys, k_pos)
    neg_idx, neg_ok = _top_k_of_mask(labels == 0, random_keys, k_neg)
    pos_idx = jnp.pad(pos_idx, (0, num_samples - k_pos))
    pos_ok = jnp.pad(pos_ok, (0, num_samples - k_pos))
    neg_idx = jnp.pad(neg_idx, (0, num_samples - k_neg))
    neg_ok = jnp.pad(neg_ok, (0, num_samples - k_neg))
    num_pos = pos_ok.sum()
    slot = jnp.arange(num_samples)
    from_neg = jnp.clip(slot - num_pos, 0, num_samples - 1)
    is_positive = slot < num_pos
    indices = jnp.where(is_positive, pos_idx, neg_idx[from_neg])
    valid = is_positive | ((slot >= num_pos) & neg_ok[from_neg])
    return indices, is_positive, valid


def sample_balanced(
    key: jax.Array,
    labels: jax.Array,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jax.Array, jax.Array]:
    """Masks ``(positive bool[A], negative bool[A])`` of a balanced sample of ``labels[A]``
    (1 positive, 0 negative, -1 ignored): at most ``num_samples * positive_fraction`` positives,
    negatives filling up to ``num_samples``, chosen at random
    (see :func:`sample_balanced_indices`)."""
    num_boxes = jnp.shape(labels)[0]
    indices, is_positive, valid = sample_balanced_indices(
        key, labels, num_samples, positive_fraction
    )
    # Invalid slots scatter to an extra bin that is cut off.
    target = jnp.where(valid, indices, num_boxes)
    pos = jnp.zeros((num_boxes + 1,), bool).at[target].max(is_positive & valid)[:num_boxes]
    neg = jnp.zeros((num_boxes + 1,), bool).at[target].max(~is_positive & valid)[:num_boxes]
    return pos, neg
