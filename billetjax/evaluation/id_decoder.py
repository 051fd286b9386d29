"""Whole-ID decoding as a plant reads billets: grammar, lexicon and a reject option on the posterior.

The detections of one image become characters (class-agnostic duplicate merging, rows in reading
order: `billetjax.evaluation.billet_id`), each with joint probabilities p[i, c] (box i is
character c) and its background probability p[i, bg] = 1 - sum_c p[i, c]. A reading is an
assignment of every box to "dropped as a false positive" (weight p[i, bg]) or to the next
character of the ID (weight p[i, c]); its probability is the product of the weights. Three
decoders share this model (docs/id-reading.md):

- **plain**: every box kept at its best class, read in order (the paper's concatenation);
  confidence: the probability of that reading.
- **pattern** (the ID's grammar, `evaluation.id_pattern`): the most probable reading that fits the
  grammar: its length, its rows (each grammar row read from one detected row, in order; a
  detected row with no grammar row left is dropped whole) and the characters allowed at each
  position. A dynamic programme over (detected row, grammar row, position) finds it (Viterbi); a
  second pass sums over every valid reading (forward algorithm). Confidence: the posterior of the
  chosen string among all valid readings, P(string) / P(any valid string), where P(string) sums
  over every way the boxes can spell it. Without a valid reading (too few boxes) the billet is
  rejected.
- **lexicon** (expected IDs of the image's batch): every candidate is scored by aligning it to the
  boxes in reading order, where a box may be dropped (p[i, bg]) or spell the next character
  (p[i, c]), and a character may be missed by the detector (`miss_probability` per character:
  hidden, worn or cut off); confidence: the posterior of the best candidate among the candidates
  (uniform prior: the lexicon is taken to hold the billet). An image whose batch has no
  candidates falls back to the pattern decoder.

A reading below `min_confidence` is rejected (goes to a human). Everything is numpy; the lexicon
is scored for all candidates at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from billetjax.evaluation.billet_id import IdPattern

NEG = -np.inf
# No box is certainly a character: dropping one costs at least this factor, so that a grammar can
# still drop a duplicate whose class scores leave nothing to the background.
MIN_BACKGROUND = 1e-6


@dataclass(frozen=True)
class Reading:
    """One decoder's reading of one billet: the string (None: no valid reading) and its confidence."""

    text: str | None
    confidence: float


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(x, 0.0))


def background(probs: np.ndarray) -> np.ndarray:
    """p[i, bg]: what the joint class probabilities leave to "no character" (at least MIN_BACKGROUND)."""
    return np.clip(1.0 - probs.sum(axis=1), MIN_BACKGROUND, 1.0)


def plain_reading(probs: np.ndarray, names: list[str]) -> Reading:
    """Every box at its best class, in order; confidence: the probability of that reading. No box:
    no reading."""
    if len(probs) == 0:
        return Reading(None, 0.0)
    best = probs.argmax(axis=1)
    return Reading("".join(names[k] for k in best), float(np.prod(probs[np.arange(len(probs)), best])))


class GrammarDecoder:
    """The pattern decoder (module docstring) for one `IdPattern` and category order."""

    def __init__(self, pattern: IdPattern, names: list[str]):
        self.pattern = pattern
        self.names = list(names)
        column = {n: k for k, n in enumerate(self.names)}
        self.n_pos = pattern.lengths[-1]
        allowed = np.zeros((self.n_pos, len(self.names)), dtype=bool)
        for j, chars in enumerate(pattern.allowed):
            allowed[j, [column[c] for c in chars]] = True
        self.allowed = allowed  # [positions, K]
        self.row_lengths = pattern.row_lengths()  # per grammar row: allowed lengths
        self.final = np.zeros(self.n_pos + 1, dtype=bool)
        self.final[list(pattern.lengths)] = True
        self.column = column
        # Position of the t-th character spelt from each start; beyond the ID it cannot be spelt.
        pos = np.arange(self.n_pos + 1)[:, None] + np.arange(self.n_pos)[None, :]  # [start, t]
        self.valid = pos < self.n_pos
        self.pos = np.minimum(pos, self.n_pos - 1)

    def decode(self, probs: np.ndarray, rows: np.ndarray) -> Reading:
        """The best valid reading of boxes in reading order (`rows[i]`: detected row of box i)."""
        probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(self.names))
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if self.pattern.rows is None:
            rows = np.zeros_like(rows)  # a grammar without rows reads all boxes as one row
        n = len(probs)
        allowed = np.where(self.allowed[None], probs[:, None, :], 0.0)  # [n, positions, K]
        keep_max = allowed.max(axis=2)  # [n, positions]
        keep_char = allowed.argmax(axis=2)
        drop = background(probs)
        segments = self._segments(rows)
        best, path = self._viterbi(segments, keep_max, drop)
        if path is None:
            return Reading(None, 0.0)
        text = "".join(self.names[keep_char[i, j]] for j, i in enumerate(path))
        # Second pass, two programmes at once: the total over every valid reading, and P(text)
        # (only text's characters allowed, only its length final).
        forced = np.zeros((n, self.n_pos))
        forced[:, : len(text)] = probs[:, [self.column[c] for c in text]]
        keep = np.stack([allowed.sum(axis=2), forced])  # [2, n, positions]
        final = np.stack([self.final, np.arange(self.n_pos + 1) == len(text)])
        total, mine = self._forward(segments, keep, drop, final)
        return Reading(text, float(min(mine / total, 1.0)) if total > 0 else 0.0)

    @staticmethod
    def _segments(rows: np.ndarray) -> list[np.ndarray]:
        """Box indices of each detected row, in reading order (rows are contiguous there)."""
        if len(rows) == 0:
            return []
        breaks = np.flatnonzero(np.diff(rows) != 0) + 1
        return np.split(np.arange(len(rows)), breaks)

    def _row_table(self, boxes: np.ndarray, keep: np.ndarray, drop: np.ndarray, viterbi: bool):
        """Weight [..., start, L] of spelling positions start..start+L-1 with exactly L of `boxes`
        (in order; the others dropped), for every start and L (probability space: at most a few
        dozen factors, far from underflow); with Viterbi the best instead of the sum, and the
        kept-box decisions for backtracking ([boxes, start, L] bool).

        keep: [..., n, positions] weight of box i spelling position j."""
        gains = np.where(self.valid, keep[..., boxes, :][..., self.pos], 0.0)  # [..., m, start, t]
        table = np.zeros(keep.shape[:-2] + (self.n_pos + 1, self.n_pos + 1))
        table[..., 0] = 1.0
        kept = np.zeros((len(boxes), self.n_pos + 1, self.n_pos + 1), dtype=bool) if viterbi else None
        for b_i, b in enumerate(boxes):
            take = np.zeros_like(table)
            take[..., 1:] = table[..., :-1] * gains[..., b_i, :, :]
            skip = table * drop[b]
            if viterbi:
                kept[b_i] = take > skip
                table = np.maximum(take, skip)
            else:
                table = take + skip
        return table, kept

    def _forward(self, segments, keep, drop, final) -> np.ndarray:
        """Total weight of the valid readings, one per leading entry of `keep` [V, n, positions]
        and `final` [V, positions + 1] (the outer programme over detected rows, summed)."""
        n_rows, n_pos = len(self.row_lengths), self.n_pos
        state = np.zeros((len(keep), n_rows + 1, n_pos + 1))  # [V, grammar rows done, positions]
        state[:, 0, 0] = 1.0
        for boxes in segments:
            table, _ = self._row_table(boxes, keep, drop, viterbi=False)
            new = state * np.prod(drop[boxes])
            for r in range(n_rows):
                for length in self.row_lengths[r]:
                    new[:, r + 1, length:] += state[:, r, : n_pos + 1 - length] * table[:, : n_pos + 1 - length, length]
            state = new
        return (state[:, n_rows] * final).sum(axis=1)

    def _viterbi(self, segments, keep, drop) -> tuple[float, list[int] | None]:
        """The best valid reading: (its weight, the box spelling each position) or (0, None)."""
        n_rows, n_pos = len(self.row_lengths), self.n_pos
        state = np.zeros((n_rows + 1, n_pos + 1))
        state[0, 0] = 1.0
        history = []
        for boxes in segments:
            table, kept = self._row_table(boxes, keep, drop, viterbi=True)
            new = state * np.prod(drop[boxes])
            choice = {}  # (r + 1, j + L) -> (r, j, L): the grammar row this detected row spelt
            for r in range(n_rows):
                for length in self.row_lengths[r]:
                    cand = state[r, : n_pos + 1 - length] * table[: n_pos + 1 - length, length]
                    for j in np.flatnonzero(cand > new[r + 1, length:]):
                        new[r + 1, j + length] = cand[j]
                        choice[(r + 1, int(j) + length)] = (r, int(j), length)
            history.append((boxes, kept, choice))
            state = new
        scores = np.where(self.final, state[n_rows], 0.0)
        j = int(np.argmax(scores))
        if scores[j] <= 0:
            return 0.0, None
        path = [-1] * j
        r = n_rows
        for boxes, kept, choice in reversed(history):
            if (r, j) not in choice:
                continue  # this detected row was dropped whole
            prev_r, prev_j, length = choice[(r, j)]
            t = length  # backtrack inside the row: the boxes that spelt prev_j .. prev_j + length - 1
            for b_i in range(len(boxes) - 1, -1, -1):
                if t > 0 and kept[b_i, prev_j, t]:
                    path[prev_j + t - 1] = int(boxes[b_i])
                    t -= 1
            r, j = prev_r, prev_j
        return float(scores[np.argmax(scores)]), path


class LexiconDecoder:
    """The lexicon decoder (module docstring): candidates scored all at once."""

    def __init__(self, candidates: list[str], names: list[str], miss_probability: float):
        column = {n: k for k, n in enumerate(names)}
        unknown = sorted({c for s in candidates for c in s} - set(column))
        if unknown:
            raise ValueError(f"lexicon IDs carry characters {unknown} that are no category ({sorted(column)})")
        self.candidates = list(dict.fromkeys(candidates))  # unique, first order kept
        self.lengths = np.array([len(s) for s in self.candidates], dtype=np.int64)
        width = int(self.lengths.max(initial=0))
        self.chars = np.zeros((len(self.candidates), max(width, 1)), dtype=np.int64)
        for c, s in enumerate(self.candidates):
            self.chars[c, : len(s)] = [column[ch] for ch in s]
        self.q = float(miss_probability)
        # A run of k misses from t - k to t: weight q^k (probability space, upper triangle).
        t = np.arange(width + 1)
        self.miss = np.where(t[None, :] >= t[:, None], self.q ** np.maximum(t[None, :] - t[:, None], 0), 0.0)

    def log_likelihoods(self, probs: np.ndarray) -> np.ndarray:
        """log P(boxes | candidate) for every candidate (sum over alignments)."""
        probs = np.asarray(probs, dtype=np.float64)
        n_c, width = len(self.candidates), self.miss.shape[0] - 1
        forward = np.zeros((n_c, width + 1))
        forward[:, 0] = 1.0
        log_scale = 0.0
        drop = background(probs)
        # Misses are placed just before a kept box or at the end, so that every alignment is
        # counted once (a miss next to a dropped box has one place, not two).
        for i in range(len(probs)):
            spell = probs[i][self.chars[:, :width]]  # [C, width]: box i as character t
            nxt = forward * drop[i]
            nxt[:, 1:] += (forward @ self.miss)[:, :-1] * spell
            top = nxt.max()
            if top <= 0:
                return np.full(n_c, NEG)
            forward = nxt / top
            log_scale += np.log(top)
        forward = forward @ self.miss
        final = forward[np.arange(n_c), self.lengths]
        return _log(final) + log_scale

    def decode(self, probs: np.ndarray) -> Reading:
        """The most probable candidate and its posterior among the candidates."""
        if not self.candidates:
            return Reading(None, 0.0)
        ll = self.log_likelihoods(probs)
        best = int(np.argmax(ll))
        if not np.isfinite(ll[best]):
            return Reading(None, 0.0)
        posterior = np.exp(ll - ll[best])
        return Reading(self.candidates[best], float(1.0 / posterior.sum()))
