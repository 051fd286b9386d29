"""The exchange rate (billetjax.evaluation.exchange): real-image equivalents read off a
dose-response curve known by hand, a flat curve that prices nothing, the refusal without a curve,
and the figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from billetjax.evaluation.comparisons import RunsOnTestSet
from billetjax.evaluation.exchange import COLUMNS, EXTRA_COLUMNS, exchange_rows, exchange_table

# Rows 1-3: 400, 100, 200 real images; row 4: 100 real + 300 synthetic (the config's layout).
EXPERIMENTS = {"images": 400, "sets": [{"synthetic_pct": 0}, {"synthetic_pct": 0, "images_fraction": 0.25},
                                       {"synthetic_pct": 0, "images_fraction": 0.5},
                                       {"real_images": 100, "synthetic_images": 300}]}


def runs(tp: dict[int, list[float]], jitter: float = 0.0, n_resamples: int = 400) -> RunsOnTestSet:
    """Metric values per experiment and seed; the billet resamples scatter each value by
    `jitter` points (independently), so that the intervals have a width."""
    numbers = tuple(sorted(tp))
    values = np.array([tp[n] for n in numbers], dtype=np.float64)  # [E, S]
    rng = np.random.default_rng(0)
    resampled = values[None] + rng.normal(0.0, jitter, (n_resamples, *values.shape))
    return RunsOnTestSet(1, numbers, tuple(range(values.shape[1])), 100, {"TP": values}, {"TP": resampled})


def test_real_equivalent_read_off_a_curve_known_by_hand(table1_of):
    """TP = 40 + 10 log2(real / 100): 40, 50, 60 at 100, 200, 400 real images. A mix that reads 55
    is worth 100 x 2^1.5 = 282.8 real images: 182.8 saved with 300 synthetic, 1.64 synthetic per
    real image saved. With no noise at all the interval is that point."""
    experiments = table1_of(EXPERIMENTS)
    rows = exchange_rows(runs({1: [60.0] * 3, 2: [40.0] * 3, 3: [50.0] * 3, 4: [55.0] * 3}), "TP",
                         [experiments[1], experiments[2], experiments[0]], [experiments[3]])
    (row,) = rows
    assert row["real_equivalent"] == pytest.approx(100 * 2 ** 1.5)
    assert (row["lo"], row["hi"]) == pytest.approx((100 * 2 ** 1.5,) * 2)
    assert row["real_images_saved"] == pytest.approx(100 * 2 ** 1.5 - 100)
    assert row["synthetic_per_real_saved"] == pytest.approx(300 / (100 * 2 ** 1.5 - 100))
    assert row["slope_per_doubling"] == pytest.approx(10.0) and not row["extrapolated"]
    assert row["curve_experiments"] == "2 3 1" and row["note"] == ""


def test_the_interval_widens_with_billet_noise_and_seed_spread(table1_of):
    """Noisy billets and seeds that disagree: the interval contains the point and is wider when
    the seeds spread more; it covers billets and seeds."""
    experiments = table1_of(EXPERIMENTS)
    curve, priced = [experiments[1], experiments[2], experiments[0]], [experiments[3]]
    calm = {1: [60.0, 60.5, 59.5], 2: [40.0, 40.5, 39.5], 3: [50.0, 50.5, 49.5], 4: [55.0, 55.5, 54.5]}
    spread = {1: [60.0, 62.0, 58.0], 2: [40.0, 42.0, 38.0], 3: [50.0, 52.0, 48.0], 4: [55.0, 51.0, 59.0]}
    narrow = exchange_rows(runs(calm, jitter=0.5), "TP", curve, priced)[0]
    wide = exchange_rows(runs(spread, jitter=0.5), "TP", curve, priced)[0]
    for row in (narrow, wide):
        assert row["lo"] < row["real_equivalent"] < row["hi"] and row["covers"] == "billets and seeds"
    assert math.log(wide["hi"] / wide["lo"]) > 2 * math.log(narrow["hi"] / narrow["lo"])


def test_a_flat_curve_prices_nothing(table1_of):
    """Real images that buy nothing (50 % TP at 100, 200 and 400): no exchange rate, and why."""
    experiments = table1_of(EXPERIMENTS)
    row = exchange_rows(runs({1: [50.0, 50.2, 49.8], 2: [50.1, 49.9, 50.0], 3: [50.0, 50.1, 49.9],
                              4: [55.0] * 3}, jitter=0.5), "TP",
                        [experiments[1], experiments[2], experiments[0]], [experiments[3]])[0]
    assert np.isnan(row["real_equivalent"]) and "does not rise" in row["note"]


def test_the_table_needs_a_curve(table1_of):
    """Without real-only rows at two numbers of real images there is no curve: refused with the
    rows to add."""
    one_real_row = table1_of({"images": 40, "sets": [{"synthetic_pct": 0}, {"synthetic_pct": 50}]})
    with pytest.raises(ValueError, match=r"two or more numbers of real images.*images_fraction: 0.5"):
        exchange_table([], one_real_row, {"bootstrap_samples": 10}, 0)
    assert COLUMNS == ["experiment", "test_set", "metric", "real_images", "synthetic_images",
                       "real_equivalent", "lo", "hi"]
    assert "synthetic_per_real_saved" in EXTRA_COLUMNS


def test_dose_response_figure(table1_of, tmp_path):
    from billetjax.evaluation.dose_response import dose_response_figure
    from billetjax.evaluation.exchange import curve_rows, priced_rows

    experiments = table1_of(EXPERIMENTS)
    study = {1: runs({1: [60.0, 61.0], 2: [40.0, 41.0], 3: [50.0, 49.0], 4: [55.0, 54.0]}, jitter=0.5)}
    table = pd.DataFrame(exchange_rows(study[1], "TP", curve_rows(experiments), priced_rows(experiments)))
    dose_response_figure(study, table, experiments, "TP", tmp_path / "dose.png", ["all"])
    png = (tmp_path / "dose.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_sentences_state_the_answer_and_what_it_covers(table1_of):
    """The summary's words come from the table: the mix, its real equivalent and interval, and
    what the interval covers; a flat curve gets one sentence for its test set."""
    from billetjax.evaluation.exchange import exchange_sentences

    experiments = table1_of(EXPERIMENTS)
    curve, priced = [experiments[1], experiments[2], experiments[0]], [experiments[3]]
    known = pd.DataFrame(exchange_rows(runs({1: [60.0] * 3, 2: [40.0] * 3, 3: [50.0] * 3, 4: [55.0] * 3}),
                                       "TP", curve, priced))
    assert exchange_sentences(known, "TP", {1: "all"}) == [
        "On test set 1 (all), 100 real + 300 synthetic images did the work of 283 [283, 283] real ones "
        "(TP, 95 % over billets and seeds)."]
    # An interval that has left every plausible count on the log scale (as a reading far above a
    # flat top of the curve gets) is said as "more than 100,000"; the CSV keeps the number.
    wide = known.assign(lo=20.0, hi=3.1e12, extrapolated=True)
    assert exchange_sentences(wide, "TP", {1: "all"}) == [
        "On test set 1 (all), 100 real + 300 synthetic images did the work of 283 [20, more than 100,000] real "
        "ones (TP, 95 % over billets and seeds) (an extrapolation beyond the curve)."]
    flat = pd.DataFrame(exchange_rows(runs({1: [50.0] * 3, 2: [50.0] * 3, 3: [50.0] * 3, 4: [55.0] * 3}),
                                      "TP", curve, priced))
    (sentence,) = exchange_sentences(flat, "TP")
    assert sentence.startswith("On test set 1: no exchange rate, the real-only curve does not rise")
