"""Statistics for evals: intervals, pass@k, percentiles, paired comparisons.

Pure Python on purpose (no numpy/scipy at import): the CLI loads this for every
report, and the suites are small (tens to a few hundred tasks). Formulas are in
docs/evals.md; tests check them against hand computations and scipy.

Vocabulary: a *cluster* is one task; its *scores* are one value in [0, 1] per
epoch. Infra errors are scored 0 and stay in the denominator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Z_975 = 1.959963984540054  # two-sided 95%
Z_80 = 0.8416212335729143  # 80% power
N_BOOT = 10_000
DEFAULT_SEED = 20240601
NO_DIFFERENCE = "no detectable difference"


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


# -- one proportion ---------------------------------------------------------

def wilson(successes: float, n: int, z: float = Z_975) -> tuple[float, float]:
    """Wilson score interval for successes / n. (0, 1) when n == 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def clustered_se(clusters: Sequence[Sequence[float]]) -> float:
    """Task-clustered standard error of the mean of all scores.

    SE = (1/n) * sqrt(sum_c (sum_{i in c} (s_i - mean))^2) * sqrt(C / (C - 1)),
    n = number of scores, C = number of clusters. 0 when C < 2.
    """
    scores = [s for c in clusters for s in c]
    n, n_clusters = len(scores), sum(1 for c in clusters if len(c))
    if n == 0 or n_clusters < 2:
        return 0.0
    mean = sum(scores) / n
    total = sum(sum(s - mean for s in c) ** 2 for c in clusters)
    return math.sqrt(total) / n * math.sqrt(n_clusters / (n_clusters - 1))


def pass_rate_ci(clusters: Sequence[Sequence[float]], z: float = Z_975) -> tuple[float, float]:
    """95% interval for the pass rate: Wilson with one epoch, mean +/- z * clustered SE with several."""
    scores = [s for c in clusters for s in c]
    if not scores:
        return (0.0, 1.0)
    if max(len(c) for c in clusters) <= 1:
        return wilson(sum(scores), len(scores), z)
    mean = sum(scores) / len(scores)
    se = clustered_se(clusters)
    return (max(0.0, mean - z * se), min(1.0, mean + z * se))


# -- pass@k -----------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task with n samples, c correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= n (k={k}, n={n})")
    if n - c < k:
        return 1.0
    # stable product form: C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: probability that k samples drawn without replacement all pass, C(c, k) / C(n, k)."""
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= n (k={k}, n={n})")
    return math.comb(c, k) / math.comb(n, k)


def suite_pass_at_k(counts: Sequence[tuple[int, int]], hat: bool = False) -> dict[str, float]:
    """Mean pass@k (or pass^k) over tasks for every k up to the smallest n. counts = [(n, c), ...]."""
    if not counts:
        return {}
    fn = pass_hat_k if hat else pass_at_k
    k_max = min(n for n, _ in counts)
    return {str(k): sum(fn(n, c, k) for n, c in counts) / len(counts) for k in range(1, k_max + 1)}


# -- percentiles and bootstrap ------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _percentile_interval(stats: list[float], level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = percentile(stats, tail), percentile(stats, 100 - tail)
    assert lo is not None and hi is not None
    return (lo, hi)


def cluster_bootstrap(
    n_clusters: int,
    statistic: Callable[[list[int]], float | None],
    n_boot: int = N_BOOT,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float] | None:
    """Percentile interval of `statistic(indices)` over resamples of cluster indices with replacement.

    Resamples where the statistic is undefined (None) are dropped; None if all are.
    """
    if n_clusters == 0:
        return None
    rng = random.Random(seed)
    population = range(n_clusters)
    out: list[float] = []
    for _ in range(n_boot):
        idx = rng.choices(population, k=n_clusters)
        value = statistic(idx)
        if value is not None:
            out.append(value)
    return _percentile_interval(out) if out else None


def ratio_bootstrap(
    numerators: Sequence[float], denominators: Sequence[float], n_boot: int = N_BOOT, seed: int = DEFAULT_SEED
) -> tuple[float, float] | None:
    """Interval for sum(num) / sum(den), resampling clusters (tasks) together."""
    num, dens = list(numerators), list(denominators)

    def stat(idx: list[int]) -> float | None:
        den = sum(map(dens.__getitem__, idx))
        return sum(map(num.__getitem__, idx)) / den if den else None

    return cluster_bootstrap(len(numerators), stat, n_boot, seed)


def mean_bootstrap(values: Sequence[float], n_boot: int = N_BOOT, seed: int = DEFAULT_SEED) -> tuple[float, float] | None:
    return ratio_bootstrap(values, [1.0] * len(values), n_boot, seed)


# -- comparing two configurations ---------------------------------------------

def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar p: b = A pass & B fail, c = A fail & B pass; 2 * BinomCDF(min(b, c); b + c, 1/2), capped at 1."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    cdf = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * cdf)


def sign_flip_p(diffs: Sequence[float], n_perm: int = N_BOOT, seed: int = DEFAULT_SEED) -> float:
    """Two-sided paired permutation p for mean(diffs) != 0 (exact when 2^n <= n_perm)."""
    n = len(diffs)
    if n == 0:
        return 1.0
    observed = abs(sum(diffs)) - 1e-12
    if 2**n <= n_perm:
        hits = 0
        for mask in range(2**n):
            total = sum(-d if mask >> i & 1 else d for i, d in enumerate(diffs))
            hits += abs(total) >= observed
        return hits / 2**n
    rng = random.Random(seed)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed for _ in range(n_perm))
    return (hits + 1) / (n_perm + 1)


def mde(se_d: float) -> float:
    """Minimum detectable effect at 5% two-sided and 80% power: (z_0.975 + z_0.8) * SE_d."""
    return (Z_975 + Z_80) * se_d


def verdict(a: str, b: str, diff: float, ci: tuple[float, float] | None) -> str:
    if ci is None or ci[0] <= 0 <= ci[1]:
        return NO_DIFFERENCE
    return f"{b} better" if diff > 0 else f"{a} better"


@dataclass
class Comparison:
    a: str
    b: str
    paired: bool
    n_tasks: int
    diff: float  # pass rate of b minus pass rate of a
    ci: tuple[float, float] | None
    p_value: float | None
    p_method: str
    se: float
    mde: float
    verdict: str

    def as_dict(self) -> dict[str, object]:
        return {"a": self.a, "b": self.b, "paired": self.paired, "n_tasks": self.n_tasks,
                "diff": self.diff, "ci": list(self.ci) if self.ci else None, "p_value": self.p_value,
                "p_method": self.p_method, "se": self.se, "mde": self.mde, "verdict": self.verdict}


def _task_means(scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {t: sum(s) / len(s) for t, s in scores.items() if len(s)}


def paired_difference(
    a_name: str,
    b_name: str,
    a: Mapping[str, Sequence[float]],
    b: Mapping[str, Sequence[float]],
    n_boot: int = N_BOOT,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """B minus A on the tasks both have: d_i = mean_B,i - mean_A,i (epochs averaged inside a task).

    The interval comes from a cluster bootstrap that resamples tasks, carrying both
    arms and all their epochs together. p: exact McNemar with one epoch per arm,
    else a paired sign-flip permutation test on d_i.
    """
    tasks = sorted(set(a) & set(b))
    ma, mb = _task_means({t: a[t] for t in tasks}), _task_means({t: b[t] for t in tasks})
    tasks = [t for t in tasks if t in ma and t in mb]
    d = [mb[t] - ma[t] for t in tasks]
    n = len(d)
    diff = sum(d) / n if n else 0.0
    ci = cluster_bootstrap(n, lambda idx: sum(map(d.__getitem__, idx)) / n, n_boot, seed) if n else None
    se = math.sqrt(sum((x - diff) ** 2 for x in d) / (n - 1) / n) if n > 1 else 0.0
    one_epoch = all(len(a[t]) == 1 and len(b[t]) == 1 for t in tasks)
    if one_epoch:
        pa = [a[t][0] >= 1 for t in tasks]
        pb = [b[t][0] >= 1 for t in tasks]
        b_only_a = sum(x and not y for x, y in zip(pa, pb, strict=True))
        c_only_b = sum(y and not x for x, y in zip(pa, pb, strict=True))
        p, method = mcnemar_exact(b_only_a, c_only_b), "mcnemar-exact"
    else:
        p, method = sign_flip_p(d, n_boot, seed), "paired-sign-flip"
    return Comparison(a_name, b_name, True, n, diff, ci, p, method, se, mde(se), verdict(a_name, b_name, diff, ci))


def unpaired_difference(
    a_name: str,
    b_name: str,
    a: Mapping[str, Sequence[float]],
    b: Mapping[str, Sequence[float]],
    n_boot: int = N_BOOT,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """B minus A when the task sets differ: each arm resampled over its own tasks, independently."""
    ca = [list(v) for v in a.values() if len(v)]
    cb = [list(v) for v in b.values() if len(v)]
    def rate(clusters: list[list[float]]) -> float:
        flat = [s for c in clusters for s in c]
        return sum(flat) / len(flat) if flat else 0.0

    diff = rate(cb) - rate(ca)
    se = math.sqrt(clustered_se(ca) ** 2 + clustered_se(cb) ** 2) if ca and cb else 0.0
    ci: tuple[float, float] | None = None
    if ca and cb:
        rng = random.Random(seed)
        stats = []
        for _ in range(n_boot):
            ra = [ca[rng.randrange(len(ca))] for _ in ca]
            rb = [cb[rng.randrange(len(cb))] for _ in cb]
            stats.append(rate(rb) - rate(ra))
        ci = _percentile_interval(stats)
    p = 2 * (1 - normal_cdf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return Comparison(a_name, b_name, False, len(set(a) | set(b)), diff, ci, p, "two-sample-z-clustered",
                      se, mde(se), verdict(a_name, b_name, diff, ci))


# -- two independent samples (product KPIs: PRs per agent) ----------------------

def proportion_difference(s_a: int, n_a: int, s_b: int, n_b: int,
                          z: float = Z_975) -> tuple[float, tuple[float, float] | None, float]:
    """B minus A for two independent proportions: (p_b - p_a, Newcombe's hybrid score interval, SE).

    Interval (Newcombe 1998, method 10), from each arm's Wilson interval (l, u):
    low = d - sqrt((p_b - l_b)^2 + (u_a - p_a)^2), high = d + sqrt((u_b - p_b)^2 + (p_a - l_a)^2).
    SE is the pooled one a test of no difference uses: sqrt(p (1 - p) (1/n_a + 1/n_b)).
    None (no interval) when an arm is empty.
    """
    if n_a <= 0 or n_b <= 0:
        return 0.0, None, 0.0
    pa, pb = s_a / n_a, s_b / n_b
    la, ua = wilson(s_a, n_a, z)
    lb, ub = wilson(s_b, n_b, z)
    d = pb - pa
    low = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    pooled = (s_a + s_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return d, (low, high), se


def median_difference(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT,
                      seed: int = DEFAULT_SEED) -> tuple[float | None, tuple[float, float] | None, float]:
    """B minus A in medians: (difference, percentile bootstrap interval, bootstrap SE), each arm
    resampled on its own. (None, None, 0) when an arm is empty."""
    xa, xb = list(a), list(b)
    if not xa or not xb:
        return None, None, 0.0
    ma, mb = percentile(xa, 50), percentile(xb, 50)
    assert ma is not None and mb is not None
    rng = random.Random(seed)
    stats: list[float] = []
    for _ in range(n_boot):
        ra = percentile(rng.choices(xa, k=len(xa)), 50)
        rb = percentile(rng.choices(xb, k=len(xb)), 50)
        assert ra is not None and rb is not None
        stats.append(rb - ra)
    mean = sum(stats) / len(stats)
    se = math.sqrt(sum((s - mean) ** 2 for s in stats) / max(1, len(stats) - 1))
    return mb - ma, _percentile_interval(stats), se
