"""A link serves requests first-come first-served at its bandwidth: exact finish times."""
from __future__ import annotations

import numpy as np
import pytest

from iosim.engine.links import FINE_BINS, FIRST_BIN_S, Link


def test_two_requests_queue_and_the_log_holds_every_finish_time():
    """1024 B/s: 512 B at t = 0 end at 0.5 s; 1024 B asked at 0.25 s wait for them and end at 1.5 s;
    a request on an idle link (t = 2) starts at once. Powers of two keep every time exact."""
    link = Link("hbm", 1024.0, log=True)
    assert link.reserve(0.0, 512) == 0.5
    assert link.reserve(0.25, 1024) == 1.5
    assert link.reserve(2.0, 256) == 2.25
    assert link.log == [(0.5, 512), (1.5, 1024), (2.25, 256)]
    assert (link.busy_until, link.busy_time, link.moved) == (2.25, 1.75, 1792)


def test_the_histogram_bins_bytes_by_finish_time_and_keeps_them_all():
    """The timeline's bins: bytes by the bin their request finished in; one finishing after the last
    edge counts in the last bin, so the bins hold every byte the link moved."""
    link = Link("hbm", 1024.0)
    for now, nbytes in [(0.0, 512), (0.25, 1024), (2.0, 256), (3.0, 2048)]:  # finish 0.5, 1.5, 2.25, 5.0
        link.reserve(now, nbytes)
    assert link.histogram(np.array([0.0, 1.0, 2.0, 3.0])).tolist() == [512, 1024, 256 + 2048]
    assert link.histogram(np.array([0.0, 1.0])).sum() == link.moved
    assert Link("l2", 1.0).histogram(np.array([0.0, 1.0, 2.0])).tolist() == [0.0, 0.0]


def test_an_empty_request_takes_no_time_and_is_not_logged():
    link = Link("l2", 1024.0, log=True)
    link.reserve(0.0, 1024)
    assert link.reserve(0.5, 0) == 0.5
    assert (link.log, link.busy_until) == ([(1.0, 1024)], 1.0)


def test_the_pre_binned_timeline_is_the_logs_histogram_where_edges_fall_on_its_bins():
    """Requests finishing over nine orders of magnitude of time widen the timeline's bins many times: on
    edges at multiples of its (power-of-two) bins it equals numpy's histogram of the exact log, and on any
    edges it keeps every byte, a bin's bytes shared out over its width. It holds FINE_BINS numbers however
    many requests came, and a link without a log says so by name."""
    rng = np.random.default_rng(0)
    link = Link("hbm", 1e12, log=True)
    for now, nbytes in zip(np.sort(rng.uniform(0.0, 2e-3, 5000)) ** 1.5, rng.integers(1, 1 << 20, 5000)):
        link.reserve(float(now), int(nbytes))
    finish, sizes = np.array([f for f, _ in link.log]), np.array([b for _, b in link.log])
    assert len(link._bins) == FINE_BINS and link._width > FIRST_BIN_S * 1e6
    edges = np.arange(0, 11) * (link._width * 64)
    exact, _ = np.histogram(np.minimum(finish, edges[-1]), bins=edges, weights=sizes)
    assert np.array_equal(link.histogram(edges), exact)
    uneven = np.linspace(0.0, finish.max() * 0.7, 101)
    hist = link.histogram(uneven)
    assert hist.sum() == pytest.approx(link.moved, rel=1e-12) and (hist >= 0).all()
    exact, _ = np.histogram(np.minimum(finish, uneven[-1]), bins=uneven, weights=sizes)
    assert np.abs(hist - exact).max() <= 2 * sizes.max()  # a request near an edge may be shared out to the next bin
    with pytest.raises(ValueError, match="l2: the link keeps no log"):
        _ = Link("l2", 1.0).log


@pytest.mark.parametrize("write_bandwidth", [None, 3e12])
def test_a_batch_of_requests_is_served_as_that_many_requests(write_bandwidth):
    """``reserve_each`` (a step's write-backs in one call) leaves the link exactly as one ``reserve`` per
    request does: clocks, busy time, bytes, timeline bins and log, bit for bit, also when the timeline widens."""
    sizes = [4096, 0, 128, 1 << 30, 77, 1 << 20]
    one, batch = (Link("hbm", 4e12, write_bandwidth, 5e12, log=True) for _ in range(2))
    for link in (one, batch):
        link.reserve(0.0, 1000)
    for nbytes in sizes:
        one.reserve(1e-9, nbytes, write=True)
    batch.reserve_each(1e-9, sizes, write=True)
    assert (batch.busy_until, batch.write_busy_until, batch.busy_time, batch.moved) == (
        one.busy_until, one.write_busy_until, one.busy_time, one.moved)
    assert (batch._bins, batch._width, batch.log) == (one._bins, one._width, one.log)


@pytest.mark.parametrize("bandwidth", [0, -1.0])
def test_a_link_without_bandwidth_is_refused_by_name(bandwidth):
    with pytest.raises(ValueError, match=rf"host: bandwidth\(={bandwidth}\) must be > 0"):
        Link("host", bandwidth)


def test_writes_alone_go_no_faster_than_the_write_bandwidth_and_reads_still_share_the_link():
    """1024 B/s in all, 512 B/s for writes: 512 B written end at 1 s (not 0.5 s); a read asked at 0
    after them is served at the full rate behind the 512 B already queued (0.5 s + 0.25 s)."""
    link = Link("hbm", 1024.0, write_bandwidth=512.0)
    assert link.reserve(0.0, 512, write=True) == 1.0
    assert link.reserve(0.0, 256) == 0.75
    assert link.drained_at == 1.0
    # a write bandwidth at or above the link's own is no constraint
    fast = Link("hbm", 1024.0, write_bandwidth=4096.0)
    assert fast.reserve(0.0, 512, write=True) == 0.5 and fast.write_bandwidth is None


def test_reads_alone_go_at_their_rate_and_a_copy_at_the_copy_rate():
    """A measured read-only rate above the copy rate: reads stream at it, equal reads and writes at the copy rate."""
    link = Link("hbm", 4e12, write_bandwidth=3e12, read_bandwidth=5e12)
    assert link.reserve(0.0, 5_000_000) == pytest.approx(1e-6)
    copy = Link("hbm", 4e12, write_bandwidth=3e12, read_bandwidth=5e12)
    copy.reserve(0.0, 4_000_000)
    assert copy.reserve(0.0, 4_000_000, write=True) == pytest.approx(8_000_000 / 4e12)
    fill = Link("hbm", 4e12, write_bandwidth=3e12, read_bandwidth=5e12)
    assert fill.reserve(0.0, 3_000_000, write=True) == pytest.approx(1e-6)  # writes alone: their own rate
    slower = Link("hbm", 4e12, read_bandwidth=3e12)  # a read rate below the copy rate is not believed
    assert slower.reserve(0.0, 4_000_000) == pytest.approx(1e-6)


@pytest.mark.parametrize("algo", ["flash2", "standard"])
def test_a_runs_timeline_holds_every_byte_its_kernels_moved(algo):
    """Conservation: the pre-binned timeline of a forward + backward run sums, level by level, to the bytes its
    kernels' counters moved over HBM and the L2 (to within a byte a bin: the bins are rounded to whole bytes)."""
    from iosim.schedule.problem import Problem, RunConfig
    from iosim.simulate import simulate

    r = simulate(RunConfig(algo=algo, problem=Problem(batch=2, heads=8, seq_q=2048, head_dim=64, backward=True)), "h100-sxm")
    for level in ("hbm", "l2"):
        moved = sum(k.levels[level].total for k in r.kernels)
        assert moved > 0 and abs(sum(r.timeline[level]) - moved) <= len(r.timeline[level])
