"""Laws of detectors/segments.py against one-reading-at-a-time references (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from detectors.segments import running_max, segment, within

sensors = st.lists(st.integers(0, 5), min_size=1, max_size=60)


@given(sensors, st.data())
def test_running_max_is_the_per_sensor_maximum_so_far(sensor_list, data) -> None:
    seg = segment(np.array(sensor_list, dtype=np.int32))
    n, k = len(sensor_list), len(seg.starts)
    rising = data.draw(st.booleans())
    values = np.array(data.draw(st.lists(st.integers(0, 10**13), min_size=n, max_size=n)))
    if rising:  # the shortcut: values rise within every sensor
        for start, length in zip(seg.starts.tolist(), seg.length.tolist(), strict=True):
            values[start:start + length].sort()
    carried = np.array(data.draw(st.lists(st.integers(0, 10**13), min_size=k, max_size=k)))
    expected = []
    for s in range(k):
        best = int(carried[s])
        for p in range(int(seg.starts[s]), int(seg.starts[s] + seg.length[s])):
            best = max(best, int(values[p]))
            expected.append(best)
    assert running_max(values, carried, seg).tolist() == expected


@given(sensors, st.data())
def test_within_is_the_segmentation_of_those_sensors_rows(sensor_list, data) -> None:
    batch_sensor = np.array(sensor_list, dtype=np.int32)
    seg = segment(batch_sensor)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(seg.starts),
                                       max_size=len(seg.starts))), dtype=bool)
    sub, positions = within(seg, np.flatnonzero(keep))
    reference = segment(batch_sensor, np.sort(seg.order[positions]))
    for name in ("order", "sensor", "starts", "length", "segment_sensor", "segment_start"):
        assert getattr(sub, name).tolist() == getattr(reference, name).tolist(), name
    assert seg.order[positions].tolist() == sub.order.tolist()
