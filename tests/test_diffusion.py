"""Schedule, DCT and diffusion arithmetic against exact published values (formats.md section 6)."""
import dataclasses

import numpy as np
import pytest
import torch

from spard.config import DiffusionConfig
from spard.dct import dct_matrix, pad_indices
from spard.diffusion import Schedule, ddim_coefficients, ddim_step, eta_schedule, prior_sample, q_sample, sampling_timesteps

SCHED = Schedule.from_config(DiffusionConfig())


def test_exponential_schedule_values():
    np.testing.assert_allclose(eta_schedule(DiffusionConfig()), [0.0100, 0.20731, 0.41779, 0.67706, 0.9900], atol=5e-6)
    np.testing.assert_allclose(SCHED.etas.numpy(), [0.0001, 0.042979, 0.174550, 0.458407, 0.9801], atol=5e-7)
    np.testing.assert_allclose((SCHED.kappa * SCHED.sqrt_etas).numpy(), [0.04, 0.82926, 1.67117, 2.70823, 3.96], atol=5e-5)


def test_linear_schedule():
    cfg = dataclasses.replace(DiffusionConfig(), schedule="linear")
    np.testing.assert_allclose(eta_schedule(cfg), [0.04, 0.2775, 0.515, 0.7525, 0.99])


def test_unknown_schedule_is_one_line_error():
    with pytest.raises(ValueError, match="--schedule/--scheduler must be one of exponential, linear, got 'cosine'"):
        eta_schedule(dataclasses.replace(DiffusionConfig(), schedule="cosine"))


def test_ddim_coefficients_exact():
    want = {(4, 3): (0.52798, 0.68390, -0.21188), (3, 2): (0.49125, 0.61707, -0.10832),
            (2, 1): (0.54742, 0.49621, -0.04363), (1, 0): (0.95374, 0.04824, -0.00197)}
    for (t, s), kmj in want.items():
        got = [float(c) for c in ddim_coefficients(SCHED, t, s)]
        np.testing.assert_allclose(got, kmj, atol=6e-6)
        assert abs(sum(got) - 1) < 1e-6


@pytest.mark.parametrize("steps,want", [(5, [4, 3, 2, 1, 0]), (1, [4]), (2, [4, 0]), (3, [4, 1, 0]), (4, [4, 2, 1, 0])])
def test_sampling_timesteps(steps, want):
    assert sampling_timesteps(5, steps) == tuple(want)


def test_sampling_timesteps_rejects_too_many():
    with pytest.raises(ValueError, match="sample_steps must be in"):
        sampling_timesteps(5, 6)


def test_dct_is_orthonormal_and_matches_formula():
    dct, idct = dct_matrix(7)
    torch.testing.assert_close(dct @ dct.T, torch.eye(7), atol=1e-6, rtol=0)
    torch.testing.assert_close(idct, dct.T, atol=1e-6, rtol=0)
    assert dct[0, 3] == pytest.approx((1 / 7) ** 0.5)
    assert dct[2, 1] == pytest.approx((2 / 7) ** 0.5 * np.cos(np.pi * 1.5 * 2 / 7))


def test_padding_repeats_last_observed_pose():
    assert pad_indices(3, 2).tolist() == [0, 1, 2, 2, 2]
    assert pad_indices(3, 4, "Repeat").tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_forward_process_endpoints():
    x0, y, eps = torch.randn(3, 2, 20, 6).unbind(0)
    # t = 0 is almost clean; the prior equals the forward process at T when x0 == y
    torch.testing.assert_close(q_sample(x0, y, 0, torch.zeros_like(eps), SCHED), x0 + 1e-4 * (y - x0))
    torch.testing.assert_close(q_sample(y, y, 4, eps, SCHED), prior_sample(y, eps, SCHED))


def test_ddim_step_keeps_a_perfect_prediction_on_the_forward_path():
    """With x0_hat = x0 and x_t on the forward path of eps, the step lands on x_s of the same eps."""
    x0, y, eps = torch.randn(3, 2, 20, 6, dtype=torch.float64).unbind(0)
    sched = Schedule(SCHED.sqrt_etas.double(), SCHED.kappa, SCHED.timesteps)
    for t, s in [(4, 3), (3, 2), (2, 1), (1, 0)]:
        x_t = q_sample(x0, y, t, eps, sched)
        torch.testing.assert_close(ddim_step(x0, x_t, y, ddim_coefficients(sched, t, s)), q_sample(x0, y, s, eps, sched))
