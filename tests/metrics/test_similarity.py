"""CKA and RSA against textbook formulas, invariances and scipy."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from scipy.spatial.distance import pdist, squareform

from neuronmap.errors import InvalidParameterError, NeuronMapError
from neuronmap.metrics import _cka
from neuronmap.metrics.similarity import (
    CKAAccumulator,
    cka_matrix,
    kernel_cka,
    linear_cka,
    rdm,
    rsa,
)

# --- independent reference implementations, written from the papers -------------------


def ref_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. 2: tr(K H L H) / (n - 1)^2 with an explicit H."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2


def ref_hsic_unbiased(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. 2012, eq. 5, term by term with explicit ones-vectors."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    return float(
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))


def ref_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Kornblith et al. 2019, eq. 3 on uncentred linear Gram matrices (eq. 1)."""
    hsic = ref_hsic_unbiased if debiased else ref_hsic
    k, l_ = x @ x.T, y @ y.T
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


SHAPES = [(40, 5, 7), (12, 30, 25), (9, 9, 3)]  # n > d, n < d, mixed


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --- linear and kernel CKA --------------------------------------------------------------


@pytest.mark.parametrize(("n", "d1", "d2"), SHAPES)
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("form", ["features", "gram", "auto"])
def test_linear_cka_matches_reference_formula(n, d1, d2, debiased, form, rng):
    x = rng.normal(size=(n, d1)) + 3.0
    y = x[:, :1] * rng.normal(size=(1, d2)) + rng.normal(size=(n, d2))
    assert linear_cka(x, y, debiased=debiased, form=form) == pytest.approx(
        ref_cka(x, y, debiased=debiased), abs=1e-10
    )


@pytest.mark.parametrize(("n", "d1", "d2"), SHAPES)
@pytest.mark.parametrize("debiased", [False, True])
def test_feature_and_gram_forms_agree(n, d1, d2, debiased, rng):
    x, y = rng.normal(size=(n, d1)), rng.normal(size=(n, d2)) * 100.0
    features = linear_cka(x, y, debiased=debiased, form="features")
    gram = linear_cka(x, y, debiased=debiased, form="gram")
    assert abs(features - gram) < 1e-10


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_invariances(debiased, rng):
    x = rng.normal(size=(50, 8)) @ rng.normal(size=(8, 8))
    transformed = 7.5 * x @ orthogonal(8, rng) + 4.0  # isotropic scale, rotation, shift
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, transformed, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    # CKA is *not* invariant to anisotropic scaling (Kornblith et al. 2019, Sec. 2.1)
    assert linear_cka(x, x * np.linspace(0.1, 10.0, 8), debiased=debiased) < 0.99


def test_debiased_cka_of_independent_gaussians_is_near_zero():
    rng = np.random.default_rng(7)
    draws = [(rng.normal(size=(32, 8)), rng.normal(size=(32, 8))) for _ in range(30)]
    biased = np.mean([linear_cka(x, y) for x, y in draws])
    debiased = np.mean([linear_cka(x, y, debiased=True) for x, y in draws])
    assert 0.12 < biased < 0.3  # the familiar upward drift at n = 32
    assert abs(debiased) < 0.03
    wide = [(rng.normal(size=(32, 256)), rng.normal(size=(32, 256))) for _ in range(5)]
    assert np.mean([linear_cka(x, y) for x, y in wide]) > 0.8
    assert abs(np.mean([linear_cka(x, y, debiased=True) for x, y in wide])) < 0.06


@pytest.mark.parametrize("debiased", [False, True])
def test_kernel_cka_linear_kernel_equals_linear_cka(debiased, rng):
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 6))
    y[:, 0] += 2 * x[:, 0]
    expected = linear_cka(x, y, debiased=debiased)
    assert kernel_cka(x, y, kernel="linear", debiased=debiased) == pytest.approx(
        expected, abs=1e-10
    )


def test_rbf_cka_matches_reference_and_invariances(rng):
    x, y = rng.normal(size=(25, 3)), rng.normal(size=(25, 5))
    y[:, 0] = np.sin(3 * x[:, 0])
    sq = squareform(pdist(x, "sqeuclidean"))
    sq_y = squareform(pdist(y, "sqeuclidean"))
    sigma = 1.3
    k, l_ = np.exp(-sq / (2 * sigma**2)), np.exp(-sq_y / (2 * sigma**2))
    expected = ref_hsic(k, l_) / np.sqrt(ref_hsic(k, k) * ref_hsic(l_, l_))
    assert kernel_cka(x, y, sigma=sigma) == pytest.approx(expected, abs=1e-12)
    expected_u = ref_hsic_unbiased(k, l_) / np.sqrt(
        ref_hsic_unbiased(k, k) * ref_hsic_unbiased(l_, l_)
    )
    assert kernel_cka(x, y, sigma=sigma, debiased=True) == pytest.approx(expected_u, abs=1e-12)
    # median heuristic: sigma scales with the data, so the kernel matrix is unchanged
    assert kernel_cka(x, 3.0 * x @ orthogonal(3, rng) - 1.0) == pytest.approx(1.0, abs=1e-12)


def test_rbf_cka_tends_to_linear_cka_for_wide_bandwidth(rng):
    # Alvarez (2022): Gaussian CKA converges to linear CKA as the bandwidth grows
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(30, 4))
    y[:, 0] += x[:, 0]
    assert kernel_cka(x, y, sigma=1e4) == pytest.approx(linear_cka(x, y), abs=1e-6)


def test_torch_inputs_match_numpy(rng):
    x = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.normal(size=(20, 3)).astype(np.float32)
    expected = linear_cka(x, y)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == expected
    assert linear_cka(torch.from_numpy(x).to(torch.bfloat16), y) == pytest.approx(
        expected, abs=0.05
    )
    if torch.cuda.is_available():
        assert linear_cka(torch.from_numpy(x).cuda(), y) == expected


def test_three_dimensional_inputs_are_flattened(rng):
    x = rng.normal(size=(15, 4, 3))
    assert linear_cka(x, x.reshape(15, 12) * 2) == pytest.approx(1.0)


def test_zero_variance_gives_nan_with_warning(rng):
    with pytest.warns(RuntimeWarning, match=r"zero variance: \['X'\]"):
        assert np.isnan(linear_cka(np.ones((10, 3)), rng.normal(size=(10, 2))))
    with pytest.warns(RuntimeWarning, match="zero variance"):
        assert np.isnan(kernel_cka(np.ones((10, 3)), rng.normal(size=(10, 2)), debiased=True))


def test_cka_errors(rng):
    x = rng.normal(size=(10, 3))
    with pytest.raises(InvalidParameterError, match=r"X: 10, Y: 9"):
        linear_cka(x, x[:9])
    with pytest.raises(InvalidParameterError, match=r"at least 4 examples; got n=3"):
        linear_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(InvalidParameterError, match=r"at least 2 examples; got n=1"):
        linear_cka(x[:1], x[:1])
    with pytest.raises(InvalidParameterError, match=r"finite values; got 1 NaN"):
        linear_cka(np.where(np.arange(30).reshape(10, 3) == 4, np.nan, x), x)
    with pytest.raises(InvalidParameterError, match=r"form must be one of .*'gram'.*got 'svd'"):
        linear_cka(x, x, form="svd")
    with pytest.raises(InvalidParameterError, match=r"kernel must be one of .*got 'poly'"):
        kernel_cka(x, x, kernel="poly")
    with pytest.raises(InvalidParameterError, match=r"sigma must be a positive number.*got -1"):
        kernel_cka(x, x, sigma=-1.0)


# --- cka_matrix ---------------------------------------------------------------------------


def _layers(rng: np.random.Generator, n: int, widths: list[int]) -> dict[str, np.ndarray]:
    base = rng.normal(size=(n, 4))
    return {
        f"layer{k}": base @ rng.normal(size=(4, w)) + rng.normal(size=(n, w))
        for k, w in enumerate(widths)
    }


_DEVICES = [None, "cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", _DEVICES)
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("form", ["features", "gram"])
def test_cka_matrix_matches_pairwise_linear_cka(debiased, form, device, rng, monkeypatch):
    # tiny blocks so the Gram form runs over several blocks, including ragged edge blocks
    monkeypatch.setattr(_cka, "_BLOCK_BYTES", 3 * 8 * 7 * 7)
    monkeypatch.setattr(_cka, "_MIN_BLOCK", 1)
    acts = _layers(rng, 23, [5, 9, 3])
    result = cka_matrix(acts, debiased=debiased, form=form, device=device)
    assert isinstance(result, pd.DataFrame)
    assert list(result.index) == list(result.columns) == list(acts)
    for a, b in itertools.product(acts, acts):
        expected = ref_cka(acts[a], acts[b], debiased=debiased)
        assert result.loc[a, b] == pytest.approx(expected, abs=1e-10)


def test_cka_matrix_cross_model_and_sequences(rng):
    acts_a, acts_b = _layers(rng, 40, [6, 2]), _layers(rng, 40, [3, 8, 5])
    frame = cka_matrix(acts_a, acts_b)
    assert frame.shape == (2, 3) and list(frame.columns) == list(acts_b)
    array = cka_matrix(list(acts_a.values()), list(acts_b.values()), form="gram")
    assert isinstance(array, np.ndarray)
    np.testing.assert_allclose(array, frame.to_numpy(), atol=1e-12)
    for (i, a), (j, b) in itertools.product(enumerate(acts_a), enumerate(acts_b)):
        assert array[i, j] == pytest.approx(ref_cka(acts_a[a], acts_b[b]), abs=1e-10)


@pytest.mark.parametrize("device", _DEVICES[1:])
def test_cka_matrix_on_a_torch_device_takes_tensors_and_equals_numpy(device, rng):
    acts_a = {k: torch.from_numpy(v).float() for k, v in _layers(rng, 50, [4, 7]).items()}
    acts_b = [rng.normal(size=(50, 3, 2)), rng.normal(size=50)]  # flattened; 1-D is one feature
    on_device = cka_matrix(acts_a, acts_b, debiased=True, device=device)
    on_cpu = cka_matrix(acts_a, acts_b, debiased=True)
    np.testing.assert_allclose(on_device.to_numpy(), on_cpu.to_numpy(), atol=1e-12)
    before = [a.copy() for a in acts_b]
    cka_matrix(acts_b, device=device)  # float64 numpy in: centring must not touch the caller's arrays
    for a, b in zip(acts_b, before, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(RuntimeWarning, match=r"zero variance: \['b'\]"):
        result = cka_matrix({"a": rng.normal(size=(9, 2)), "b": np.ones((9, 3))}, device=device)
    assert np.isnan(result.loc["a", "b"]) and result.loc["a", "a"] == 1.0


def test_cka_matrix_device_errors(rng):
    bad = rng.normal(size=(10, 2))
    bad[3, 1] = np.nan
    with pytest.raises(InvalidParameterError, match=r"layer 'b' must contain only finite values; got 1 NaN"):
        cka_matrix({"a": rng.normal(size=(10, 2)), "b": bad}, device="cpu")
    with pytest.raises(InvalidParameterError, match=r"must be a torch device.*got 'gpu'"):
        cka_matrix({"a": bad}, device="gpu")
    with pytest.raises(InvalidParameterError, match=r"MPS has no float64"):
        cka_matrix({"a": bad}, device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match=r"torch sees no CUDA device; pass device=None"):
            cka_matrix({"a": bad}, device="cuda")
    with pytest.raises(InvalidParameterError, match=r"got layer 'b': 10, layer 'c': 9"):
        cka_matrix({"b": rng.normal(size=(10, 2)), "c": rng.normal(size=(9, 2))}, device="cpu")


def test_cka_matrix_errors(rng):
    with pytest.raises(InvalidParameterError, match=r"got layer 'b': 10, layer 'c': 9"):
        cka_matrix({"b": rng.normal(size=(10, 2)), "c": rng.normal(size=(9, 2))})
    with pytest.raises(
        InvalidParameterError, match=r"mapping of layer name.*got ndarray.*linear_cka"
    ):
        cka_matrix(rng.normal(size=(10, 2)))
    with pytest.raises(InvalidParameterError, match="at least one representation"):
        cka_matrix({})


# --- CKAAccumulator -----------------------------------------------------------------------


def _batches(n: int, sizes: list[int]) -> list[slice]:
    edges = np.cumsum([0, *sizes])
    assert edges[-1] == n
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def test_accumulator_exact_equals_one_shot_pair(rng):
    x = rng.normal(size=(100, 6)) + 1e4  # large offset: the merge must not cancel digits
    y = x[:, :2] @ rng.normal(size=(2, 9)) + rng.normal(size=(100, 9)) - 5e3
    acc = CKAAccumulator()
    for part in _batches(100, [1, 30, 7, 62]):
        acc.update(x[part], y[part])
    assert acc.n_examples == 100 and acc.n_batches == 4
    assert acc.compute() == pytest.approx(ref_cka(x - x.mean(0), y - y.mean(0)), abs=1e-10)


def test_accumulator_exact_equals_cka_matrix(rng):
    acts, other = _layers(rng, 60, [4, 7, 3]), _layers(rng, 60, [5, 2])
    within, cross = CKAAccumulator(), CKAAccumulator()
    for part in _batches(60, [25, 25, 10]):
        within.update({k: torch.from_numpy(v[part]) for k, v in acts.items()})
        cross.update({k: v[part] for k, v in acts.items()}, {k: v[part] for k, v in other.items()})
    pd.testing.assert_frame_equal(within.compute(), cka_matrix(acts), atol=1e-10, rtol=0)
    pd.testing.assert_frame_equal(cross.compute(), cka_matrix(acts, other), atol=1e-10, rtol=0)


def test_accumulator_minibatch_matches_nguyen_estimator(rng):
    x, y = rng.normal(size=(90, 5)), rng.normal(size=(90, 40))
    y[:, 0] += x[:, 0]
    parts = _batches(90, [30, 30, 30])
    acc = CKAAccumulator(estimator="minibatch")
    for part in parts:
        acc.update(x[part], y[part])
    # Nguyen et al. 2021: mean unbiased HSIC over minibatches, then normalise
    grams = [(x[p] @ x[p].T, y[p] @ y[p].T) for p in parts]
    xy = np.mean([ref_hsic_unbiased(k, l_) for k, l_ in grams])
    xx = np.mean([ref_hsic_unbiased(k, k) for k, _ in grams])
    yy = np.mean([ref_hsic_unbiased(l_, l_) for _, l_ in grams])
    assert acc.compute() == pytest.approx(xy / np.sqrt(xx * yy), abs=1e-10)
    single = CKAAccumulator(estimator="minibatch")
    single.update(x, y)
    assert single.compute() == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)


def test_accumulator_errors(rng):
    with pytest.raises(
        InvalidParameterError, match=r"estimator must be one of \('exact', 'minibatch'\)"
    ):
        CKAAccumulator(estimator="full")
    acc = CKAAccumulator()
    with pytest.raises(NeuronMapError, match=r"needs at least one update"):
        acc.compute()
    acc.update({"a": rng.normal(size=(5, 3))})
    with pytest.raises(InvalidParameterError, match=r"first: \{'a': 3\}, this batch: \{'a': 4\}"):
        acc.update({"a": rng.normal(size=(5, 4))})
    with pytest.raises(InvalidParameterError, match=r"at least 4 examples; got n=3"):
        CKAAccumulator(estimator="minibatch").update(
            rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
        )


# --- RDM and RSA --------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine"])
def test_rdm_is_scipy_pdist(metric, rng):
    x = rng.normal(size=(12, 5))
    np.testing.assert_array_equal(rdm(x, metric), pdist(x, metric))
    square = rdm(torch.from_numpy(x), metric, square=True)
    np.testing.assert_allclose(square, squareform(pdist(x, metric)))
    assert square.shape == (12, 12)


def test_rdm_errors(rng):
    x = rng.normal(size=(6, 4))
    x[2] = 1.0
    with pytest.raises(InvalidParameterError, match=r"undefined for constant rows.*first: \[2\]"):
        rdm(x)
    with pytest.raises(InvalidParameterError, match=r"metric must be one of .*got 'cityblock'"):
        rdm(x, "cityblock")


@pytest.mark.parametrize(
    ("method", "reference"),
    [
        ("spearman", scipy.stats.spearmanr),
        ("pearson", scipy.stats.pearsonr),
        ("kendall", scipy.stats.kendalltau),
    ],
)
def test_rsa_statistic_equals_scipy_on_condensed_rdms(method, reference, rng):
    x = rng.normal(size=(15, 6))
    a, b = rdm(x), rdm(x + rng.normal(size=x.shape), "euclidean")
    result = rsa(a, b, method=method, n_permutations=50, random_state=0)
    assert result.statistic == pytest.approx(reference(a, b).statistic, abs=1e-12)
    assert rsa(squareform(a), b, method=method, n_permutations=0).statistic == pytest.approx(
        result.statistic
    )


def test_rsa_pvalue_matches_exact_mantel_enumeration(rng):
    n = 5
    x = rng.normal(size=(n, 3))
    a, b = rdm(x, "euclidean"), rdm(x + 0.8 * rng.normal(size=x.shape), "euclidean")
    sq_a = squareform(a)
    observed = scipy.stats.spearmanr(a, b).statistic
    null = [
        scipy.stats.spearmanr(squareform(sq_a[np.ix_(p, p)], checks=False), b).statistic
        for p in map(list, itertools.permutations(range(n)))
    ]
    exact = np.mean(np.asarray(null) >= observed - 1e-12)
    result = rsa(a, b, n_permutations=4000, random_state=1)
    assert result.pvalue == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 4000) + 1e-3)
    assert 0.0 < result.pvalue <= 1.0


def test_rsa_related_and_unrelated(rng):
    x = rng.normal(size=(30, 8))
    related = rsa(rdm(x), rdm(x + 0.3 * rng.normal(size=x.shape)), random_state=0)
    assert related.pvalue == pytest.approx(1 / 1001)
    pvalues = [
        rsa(
            rdm(rng.normal(size=(12, 3))),
            rdm(rng.normal(size=(12, 3))),
            n_permutations=200,
            random_state=k,
        ).pvalue
        for k in range(20)
    ]
    assert 0.25 < np.mean(pvalues) < 0.75  # uniform under the null
    assert np.isnan(rsa(rdm(x), rdm(x), n_permutations=0).pvalue)


def test_rsa_errors(rng):
    a = rdm(rng.normal(size=(6, 2)))
    with pytest.raises(InvalidParameterError, match=r"different numbers of examples: 6 and 5"):
        rsa(a, rdm(rng.normal(size=(5, 2))))
    with pytest.raises(InvalidParameterError, match=r"14 entries, which is not n \(n - 1\) / 2"):
        rsa(a[:14], a[:14])
    with pytest.raises(InvalidParameterError, match="symmetric with a zero diagonal"):
        rsa(np.arange(36.0).reshape(6, 6), a)
    with pytest.raises(InvalidParameterError, match="rdm_b is constant"):
        rsa(a, np.ones_like(a))
    with pytest.raises(InvalidParameterError, match=r"method must be one of .*got 'cosine'"):
        rsa(a, a, method="cosine")
    with pytest.raises(
        InvalidParameterError, match=r"n_permutations must be a non-negative integer; got -1"
    ):
        rsa(a, a, n_permutations=-1)


def test_kernel_cka_median_kornblith_matches_the_notebook_gram_rbf() -> None:
    from neuronmap.metrics.similarity import kernel_cka

    def gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:  # Kornblith et al.'s notebook
        dot = x @ x.T
        sq_norms = np.diag(dot)
        sq_distances = -2 * dot + sq_norms[:, None] + sq_norms[None, :]
        return np.exp(-sq_distances / (2 * threshold**2 * np.median(sq_distances)))

    def cka(gx: np.ndarray, gy: np.ndarray) -> float:
        h = np.eye(len(gx)) - 1.0 / len(gx)
        cx, cy = h @ gx @ h, h @ gy @ h
        return float(np.sum(cx * cy) / np.sqrt(np.sum(cx * cx) * np.sum(cy * cy)))

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(15, 4)), rng.normal(size=(15, 6))
    assert kernel_cka(x, y, sigma="median_kornblith") == pytest.approx(cka(gram_rbf(x), gram_rbf(y)), abs=1e-10)
    assert kernel_cka(x, y, sigma="median_offdiag") == kernel_cka(x, y)
    assert kernel_cka(x, y, sigma="median_kornblith") != pytest.approx(kernel_cka(x, y), abs=1e-6)
    with pytest.raises(InvalidParameterError, match=r"sigma must be a positive number, None or one of .*'median"):
        kernel_cka(x, y, sigma="median")
