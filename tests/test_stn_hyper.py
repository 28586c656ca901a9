import math

import pytest
import torch

from hptransfer.stn.hyper import HyperParams, HyperSpec


@pytest.mark.parametrize(
    "spec,values",
    [
        (HyperSpec("dropout", 0.1, 0.0, 0.9), [0.001, 0.1, 0.45, 0.899]),
        (HyperSpec("label_smoothing", 0.05, 0.01, 0.3), [0.011, 0.2, 0.29]),
        (HyperSpec("weight_decay", 1e-3, 1e-6, 1.0), [1e-6, 3e-4, 0.5, 1.0]),
        (HyperSpec("input_noise", 0.1, 1e-3, math.inf), [1e-3, 2.0, 100.0]),
    ],
)
def test_round_trip(spec: HyperSpec, values: list[float]) -> None:
    for v in values:
        u = spec.to_unconstrained(v)
        assert spec.value(u) == pytest.approx(v, rel=1e-9)
        assert float(spec.value(torch.tensor(u, dtype=torch.float64))) == pytest.approx(v, rel=1e-9)


def test_values_stay_in_bounds() -> None:
    logit = HyperSpec("dropout", 0.5, 0.1, 0.7)
    log = HyperSpec("weight_decay", 1e-2, 1e-4, 1e-1)
    u = torch.linspace(-50, 50, 101)
    assert logit.value(u).min() >= 0.1 - 1e-6 and logit.value(u).max() <= 0.7 + 1e-6
    assert log.value(u).min() >= 1e-4 * (1 - 1e-6) and log.value(u).max() <= 1e-1 * (1 + 1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="dropout", init=0.1, low=0.9, high=0.0), "reversed"),
        (dict(name="dropout", init=0.1, low=0.0, high=1.0), r"inside \[0, 1\)"),
        (dict(name="dropout", init=0.95, low=0.0, high=0.9), "strictly inside"),
        (dict(name="weight_decay", init=0.1, low=0.0, high=1.0), "low > 0"),
        (dict(name="weight_decay", init=2.0, low=1e-3, high=1.0), "inside"),
        (dict(name="mystery", init=1.0, low=0.5, high=2.0), "no default transform"),
        (dict(name="dropout", init=0.1, low=0.0, high=0.9, sigma=0.0), "sigma"),
        (dict(name="x", init=0.1, low=0.0, high=math.inf, transform="logit"), "finite bounds"),
    ],
)
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HyperSpec(**kwargs)


def test_duplicate_names_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        HyperParams([HyperSpec("dropout", 0.1, 0, 0.9), HyperSpec("dropout", 0.2, 0, 0.9)])


def test_entropy_matches_gaussian_and_has_right_gradient() -> None:
    hp = HyperParams(
        [HyperSpec("dropout", 0.1, 0, 0.9, sigma=0.3), HyperSpec("weight_decay", 1e-3, 1e-6, 1.0, sigma=0.7)]
    )
    want = sum(torch.distributions.Normal(0.0, s).entropy() for s in (0.3, 0.7))
    assert float(hp.entropy().detach()) == pytest.approx(float(want), rel=1e-5)
    hp.entropy().backward()
    # dH/drho = sigmoid(rho) / softplus(rho) > 0: the entropy bonus pushes sigma up
    sig = torch.nn.functional.softplus(hp.rho.detach())
    assert torch.allclose(hp.rho.grad, torch.sigmoid(hp.rho.detach()) / sig, rtol=1e-5)


def test_sample_clipped_and_differentiable() -> None:
    torch.manual_seed(0)
    hp = HyperParams([HyperSpec("weight_decay", 1e-6, 1e-6, 1e-2, sigma=3.0)])
    samples = torch.stack([hp.sample() for _ in range(200)]).detach()
    assert float(samples.min()) >= math.log(1e-6) - 1e-5
    assert float(samples.max()) <= math.log(1e-2) + 1e-5
    s = hp.sample(torch.Generator().manual_seed(1))
    s.sum().backward()
    assert hp.rho.grad is not None and hp.u.grad is not None
    with torch.no_grad():
        hp.u.fill_(-100.0)
    hp.project_()
    assert float(hp.u.detach()) == pytest.approx(math.log(1e-6), rel=1e-6)
    assert hp.values_dict()["weight_decay"] == pytest.approx(1e-6, rel=1e-5)


def test_sample_per_example_rows_stay_in_bounds_and_carry_gradients() -> None:
    hp = HyperParams([HyperSpec("dropout", 0.2, 0.0, 0.9), HyperSpec("l2", 1e-3, 1e-6, 1.0)])
    u = hp.sample(n=500)
    assert u.shape == (500, 2)
    vals = hp.values(u).detach()
    assert float(vals[:, 0].min()) > 0.0 and float(vals[:, 0].max()) < 0.9
    assert float(vals[:, 1].min()) >= 1e-6 * (1 - 1e-5) and float(vals[:, 1].max()) <= 1.0 * (1 + 1e-5)
    u.sum().backward()
    assert hp.u.grad is not None and hp.rho.grad is not None
