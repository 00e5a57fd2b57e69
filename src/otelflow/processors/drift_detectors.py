"""Numpy drift detectors for the `drift` processor: a warm-up baseline, then tumbling windows.

Each watched (feature, group) is a `FeatureStream`: the first `warmup` samples become the
baseline (sorted values, mean, variance, PSI bins); every following `window` samples are
compared with it by

- a Welch z-score of the window mean against the baseline mean (the window's own variance
  is used, so a variance-only change does not move it),
- a two-sample Kolmogorov-Smirnov test (asymptotic p-value with Stephens' correction),
- the population stability index over equal-frequency baseline bins,
- a performance band: the window mean against baseline mean * (1 +/- tolerance).

Samples arrive in numpy chunks; each window costs O(window * log(warmup)), so a sample costs
O(log warmup) amortised.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Direction = Literal["higher_is_worse", "lower_is_worse"]
Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class PerformanceSettings:
    direction: Direction
    tolerance: float
    consecutive: int
    severity: Severity


@dataclass(frozen=True)
class DetectorSettings:
    """Resolved detector settings of one feature (None disables a detector)."""

    window: int
    warmup: int
    zscore_threshold: float | None
    ks_pvalue: float | None
    psi_threshold: float | None
    psi_bins: int
    performance: PerformanceSettings | None = None


@dataclass(frozen=True)
class Baseline:
    sorted: np.ndarray
    mean: float
    var: float
    psi_edges: np.ndarray  # inner edges of equal-frequency bins
    psi_props: np.ndarray  # smoothed baseline proportion per bin

    @property
    def n(self) -> int:
        return len(self.sorted)

    @classmethod
    def of(cls, values: np.ndarray, bins: int) -> Baseline:
        ordered = np.sort(values)
        edges = np.unique(np.quantile(ordered, np.linspace(0, 1, bins + 1)[1:-1]))
        mean, var = mean_var(ordered)
        return cls(ordered, mean, var, edges, _proportions(ordered, edges))


@dataclass(frozen=True)
class WindowResult:
    """One evaluated window: statistics and which detectors breached."""

    index: int
    n: int
    mean: float
    std: float
    zscore: float
    ks_stat: float
    ks_p: float
    psi: float
    change: float  # relative change of the mean vs the baseline mean
    breaches: dict[str, bool]


def _proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin proportions with add-one-half smoothing (empty bins stay finite for PSI)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return (counts + 0.5) / (len(values) + 0.5 * len(counts))


def welch_z(base: Baseline, mean: float, var: float, n: int) -> float:
    se2 = var / n + base.var / base.n
    diff = mean - base.mean
    if se2 <= 0.0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(se2)


def ks_statistic(base_sorted: np.ndarray, window_sorted: np.ndarray) -> float:
    """Two-sample KS distance sup|F0 - F1| evaluated at every jump of either ECDF (ties ok).

    Works in integer counts scaled by n0 * n1: F0 = count0 / n0, F1 = count1 / n1.
    """
    n0, n1 = len(base_sorted), len(window_sorted)
    ends = np.searchsorted(base_sorted, window_sorted, side="right") * n1
    starts = np.searchsorted(base_sorted, window_sorted, side="left") * n1
    if (window_sorted[1:] == window_sorted[:-1]).any():
        ends -= np.searchsorted(window_sorted, window_sorted, side="right") * n0
        starts -= np.searchsorted(window_sorted, window_sorted, side="left") * n0
    else:  # no ties: the window ECDF steps by one at each sorted value
        ends -= _steps(n1, n0, 1)
        starts -= _steps(n1, n0, 0)
    return max(int(ends.max()), -int(ends.min()), int(starts.max()), -int(starts.min())) / (n0 * n1)


@functools.lru_cache(maxsize=64)
def _steps(n1: int, n0: int, first: int) -> np.ndarray:
    steps = np.arange(first, n1 + first, dtype=np.int64) * n0
    steps.flags.writeable = False
    return steps


_KS_TERMS = np.arange(1, 101)
_KS_SIGNS = np.where(_KS_TERMS % 2 == 1, 2.0, -2.0)


def ks_pvalue(d: float, n0: int, n1: int) -> float:
    """Asymptotic two-sample KS p-value, Q_KS((sqrt(en) + 0.12 + 0.11/sqrt(en)) * d)."""
    en = math.sqrt(n0 * n1 / (n0 + n1))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 0.2:
        return 1.0
    total = float(np.dot(_KS_SIGNS, np.exp(-2.0 * _KS_TERMS**2 * lam * lam)))
    return min(1.0, max(0.0, total))


def psi(base: Baseline, window: np.ndarray) -> float:
    current = _proportions(window, base.psi_edges)
    return float(np.sum((current - base.psi_props) * np.log(current / base.psi_props)))


def mean_var(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (faster than ndarray.mean/var on small arrays)."""
    n = len(values)
    mean = float(np.add.reduce(values)) / n
    dev = values - mean
    return mean, (float(np.dot(dev, dev)) / (n - 1) if n > 1 else 0.0)


def relative_change(base_mean: float, mean: float) -> float:
    if base_mean == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return (mean - base_mean) / abs(base_mean)


class FeatureStream:
    """Warm-up baseline then tumbling windows for one (feature, group); call `add` per chunk."""

    __slots__ = ("_buf", "_fill", "baseline", "samples", "settings", "windows")

    def __init__(self, settings: DetectorSettings):
        self.settings = settings
        self.baseline: Baseline | None = None
        self._buf = np.empty(settings.warmup, dtype=np.float64)
        self._fill = 0
        self.samples = 0
        self.windows = 0

    def add(self, values: np.ndarray) -> list[WindowResult]:
        """Take a chunk of samples; return the windows it completed (usually none or one)."""
        results: list[WindowResult] = []
        pos, total = 0, len(values)
        self.samples += total
        while pos < total:
            take = min(len(self._buf) - self._fill, total - pos)
            self._buf[self._fill:self._fill + take] = values[pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == len(self._buf):
                self._complete(results)
        return results

    def _complete(self, results: list[WindowResult]) -> None:
        self._fill = 0
        if self.baseline is None:
            self.baseline = Baseline.of(self._buf, self.settings.psi_bins)
            self._buf = np.empty(self.settings.window, dtype=np.float64)
            return
        results.append(self.evaluate(self._buf))
        self.windows += 1

    def evaluate(self, window: np.ndarray) -> WindowResult:
        base, s = self.baseline, self.settings
        assert base is not None
        n = len(window)
        mean, var = mean_var(window)
        breaches: dict[str, bool] = {}
        z = welch_z(base, mean, var, n)
        if s.zscore_threshold is not None:
            breaches["zscore"] = abs(z) > s.zscore_threshold
        d = p = 0.0
        if s.ks_pvalue is not None:
            d = ks_statistic(base.sorted, np.sort(window))
            p = ks_pvalue(d, base.n, n)
            breaches["ks"] = p < s.ks_pvalue
        score = psi(base, window) if s.psi_threshold is not None else 0.0
        if s.psi_threshold is not None:
            breaches["psi"] = score > s.psi_threshold
        change = relative_change(base.mean, mean)
        if s.performance is not None:
            perf = s.performance
            worse = change if perf.direction == "higher_is_worse" else -change
            breaches["performance"] = worse > perf.tolerance
        return WindowResult(self.windows, n, mean, math.sqrt(var), z, d, p, score, change, breaches)


def psi_null_exceedance(threshold: float, window: int, warmup: int, bins: int) -> float:
    """Approximate chance an unchanged window has PSI > threshold.

    PSI is close to chi-square(bins - 1) * (1/window + 1/warmup); the chi-square tail uses the
    Wilson-Hilferty normal approximation.
    """
    k = bins - 1
    x = threshold / (1.0 / window + 1.0 / warmup)
    z = ((x / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))
