"""reading_lines formats repeated columns by their distinct values: the text must stay exactly
what one f-string per reading writes, on every path (runs, few distinct values, all distinct)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from config.readings import ReadingBatch
from ingest.lineprotocol import reading_lines
from tests.test_lineprotocol import registry_of

REGISTRY = registry_of([("dayan", f"T0-{k}", "ch4", "longwall_face") for k in range(3)])
PREFIX = [f"reading,kind=ch4,location=longwall_face,mine=dayan,sensor=T0-{k} " for k in range(3)]


def one_by_one(batch: ReadingBatch) -> str:
    return "\n".join(f"{PREFIX[i]}value={v!r},status={s}i {t}" for i, v, s, t in zip(
        batch.sensor.tolist(), batch.value.tolist(), batch.status.tolist(), batch.ts.tolist(),
        strict=True))


# Few distinct numbers, 0.0 and -0.0 among them (equal, but written differently).
values = st.sampled_from([0.0, -0.0, 0.3, 0.1 + 0.2, 1e-300, -2.5, 1e22])
columns = st.integers(1, 3000).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 2), min_size=n, max_size=n),
    st.one_of(st.lists(values, min_size=n, max_size=n),
              st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=n,
                       max_size=n)),
    st.one_of(st.just([0] * n), st.lists(st.sampled_from([0, 1, 3, 4, 128, 65535]),
                                         min_size=n, max_size=n)),
    st.one_of(st.integers(-2**62, 2**62).map(lambda t: [t] * n),
              st.lists(st.integers(-2**62, 2**62), min_size=n, max_size=n))))


@given(columns)
def test_bulk_text_is_the_one_by_one_text(cols) -> None:
    sensor, value, status, ts = cols
    batch = ReadingBatch(np.array(sensor, np.int32), np.array(ts, np.int64),
                         np.array(value, np.float64), np.array(status, np.uint16))
    assert reading_lines(batch, REGISTRY) == one_by_one(batch)


def test_runs_and_quantized_values_of_a_large_batch() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    batch = ReadingBatch(rng.integers(0, 3, n).astype(np.int32),
                         np.repeat(1_795_614_332_500 + np.arange(n // 100) * 1000, 100),
                         np.round(rng.normal(0.0, 0.05, n), 2) * np.where(rng.random(n) < 0.5,
                                                                           1.0, -1.0),
                         np.where(rng.random(n) < 0.001, 5, 0).astype(np.uint16))
    assert reading_lines(batch, REGISTRY) == one_by_one(batch)
