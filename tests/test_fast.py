"""The fast inference path computes the reference function: the fused forms (regrouped arithmetic,
folded BatchNorm), `GraphedSampler`, and the two Triton kernels (run in Triton's CPU interpreter)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO, randomized, require, tiny_config, with_np_noise
from spard import samplers
from spard.fast import FusedGCN, GraphedSampler, fuse, unfuse
from spard.samplers import SamplerOptions
from spard.model import SPARD
from spard.nets.gcn import GCN, NodeBatchNorm


def trained_like(seed: int = 0) -> SPARD:
    """A tiny model with every weight and every BatchNorm statistic away from its initial value."""
    model = randomized(SPARD(tiny_config()), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, NodeBatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


@pytest.mark.parametrize("sampler", ["np", "onestep", "ddim"])
def test_fused_model_equals_reference(sampler):
    model = trained_like()
    history = torch.randn(3, model.t_his, model.dim)
    noise = torch.randn(5, 3, model.n_pre, model.dim)
    extra = {"noise": noise}  # np: the noise its predictor adds to the maps (--np_noise, the default)
    want = samplers.get_sampler(sampler)(model, history, 5, **extra)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = samplers.get_sampler(sampler)(fuse(model), history, 5, **extra)
    tol = (1e-4 if sampler == "ddim" else 1e-5) * want.abs().max().item()  # ddim: ten chained evaluations
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    assert model.state_dict().keys() == state.keys()  # the fused forms hold no weights of the state dict
    assert model.denoiser.fused is not None and model.noise_predictor.model.fused is not None
    torch.testing.assert_close(samplers.get_sampler(sampler)(unfuse(model), history, 5, **extra), want, rtol=0, atol=0)


def test_fused_forms_are_dropped_when_the_weights_may_change():
    model = fuse(trained_like())
    model.noise_predictor.train()  # the np stage trains the predictor: its fused GCN goes, the denoiser's stays
    assert model.noise_predictor.model.fused is None and model.denoiser.fused is not None
    model.load_state_dict(trained_like(seed=1).state_dict())
    assert all(getattr(m, "fused", None) is None for m in model.modules())


def test_fused_gcn_folds_bias_and_batchnorm():
    gcn = GCN(7, 6, 7, nodes=5, layers=2, dropout=0.5, residual=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in gcn.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for m in gcn.modules():
            if isinstance(m, NodeBatchNorm):
                m.running_mean.normal_(generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    gcn.eval()
    x = torch.randn(4, 5, 7, generator=gen)
    torch.testing.assert_close(FusedGCN(gcn)(x, gcn.residual), gcn(x), rtol=1e-5, atol=1e-5)
    assert sum(name.startswith("weight") for name, _ in FusedGCN(gcn).named_buffers()) == 2 + 2 * 2  # gc1, 2 per block, gc7


def test_graphed_sampler_without_compile_runs_the_sampler():
    model = trained_like()
    history = torch.randn(2, model.t_his, model.dim)
    noise = torch.randn(5, 2, model.n_pre, model.dim)
    for np_model in (with_np_noise(model, 0.0), model):  # the published predictor, then the default (noise)
        want = samplers.np_sample(np_model, history, 5, noise=noise)
        fast = GraphedSampler(np_model, SamplerOptions("np", 5), 2, precision="fp32", compile=False)
        torch.testing.assert_close(fast(history, noise), want, rtol=1e-5, atol=1e-5)
    one = GraphedSampler(model, SamplerOptions("onestep", 5), 2, precision="fp32", compile=False)
    torch.testing.assert_close(one(history, noise), samplers.onestep(unfuse(model), history, 5, noise=noise),
                               rtol=1e-5, atol=1e-5)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        GraphedSampler(trained_like(), SamplerOptions("np", 5), 1, precision="fp8", compile=False)


def test_float32_products_follow_the_precision_and_are_restored():
    from spard.precision import float32_products

    before = torch.backends.cuda.matmul.allow_tf32
    try:
        for start in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = start
            for precision, inside in (("fp16", True), ("bf16", True), ("tf32", True), ("fp32", start)):
                with float32_products(precision):
                    assert torch.backends.cuda.matmul.allow_tf32 is inside, precision
                assert torch.backends.cuda.matmul.allow_tf32 is start
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_graph_conv_tiles_follow_the_measured_sweep():
    """bench/kernel_tiles.py: 16-wide tiles for a single row, 64 for more rows; from a thousand rows on,
    the product x @ w first, in cuBLAS, and 8 rows a program."""
    from spard.kernels import graph_conv_tiles

    shapes = [(1, 256), (1, 1000), (50, 256), (50, 125), (1024, 256), (51200, 256), (2, 20)]
    tiles = [graph_conv_tiles(rows, fout) for rows, fout in shapes]
    assert [t[0] for t in tiles] == [16, 16, 64, 64, 64, 64, 16]
    assert [(t[3], t[4]) for t in tiles] == [(False, 1)] * 4 + [(True, 8)] * 2 + [(False, 1)]


KERNEL_CHECK = textwrap.dedent("""
    import torch
    from spard import kernels
    assert kernels.INTERPRET and kernels.triton is not None
    gen = torch.Generator().manual_seed(0)
    half = torch.float16  # the interpreter computes in numpy, which has no bfloat16
    U = 2.0**-11  # half precision's unit roundoff: rounding a number to half moves it by at most U times itself
    SLACK = 2.0**-20  # float32 arithmetic (each operation within 2^-24 relative) on numbers of order one, 16-fold


    def assert_within(got, want, bound, what):
        # `want` and `bound` in float64 from the very half-precision inputs the kernel read
        excess = (got.double() - want).abs() - bound
        assert excess.max() <= 0, f"{what}: {int((excess > 0).sum())} of {want.numel()} elements off by more " \\
                                  f"than the rounding bound (worst {float(excess.max()):.3g} beyond it)"


    # attention: the kernel rounds the softmax weights p to half before p @ v (each moves by <= U p) and its
    # output to half (<= U |out|): |got - want| <= U (|want| + p @ |v|). Larger queries make p peaked (p @ |v|
    # near |want|), so a scale error of a few U shows
    qkv = torch.randn(3, 20, 3 * 2 * 16, generator=gen)
    qkv[..., :32] *= 2
    qkv = qkv.to(half)
    got = kernels.attention(qkv, 2)
    assert got.dtype == half and got.shape == (3, 20, 32)
    q, k, v = qkv.double().view(3, 20, 3, 2, 16).permute(2, 0, 3, 1, 4)  # [N, H, L, d] each
    p = torch.softmax(q @ k.transpose(-1, -2) / 16**0.5, dim=-1)  # [N, H, L, L]
    heads = lambda a: a.transpose(1, 2).reshape(3, 20, 32)  # noqa: E731
    want = heads(p @ v)
    assert_within(got, want, U * (want.abs() + heads(p @ v.abs())) + SLACK, "attention")

    # graph convolution on multiples of 1/4 and 1/8 (|x @ w| <= 20, so x @ w is exact in half and att @ (x @ w)
    # in float32): the kernel's only roundings are float32's in scale, shift, tanh and the residual, and the
    # output's to half
    def dyadic(shape, step):  # uniform multiples of `step` in [-4 step, 4 step]
        return (torch.randint(-4, 5, shape, generator=gen) * step).to(half)

    x = dyadic((2, 40, 5), 1 / 4).transpose(1, 2)  # [N, P=5, Fin=40], not contiguous
    w = dyadic((40, 70), 1 / 8)
    att = dyadic((5, 5), 1 / 8)
    scale, shift = torch.rand(5, 70, generator=gen) + 0.5, torch.randn(5, 70, generator=gen)
    res = torch.randn(2, 5, 70, generator=gen)
    pre = (att.double() @ (x.double() @ w.double())) * scale.double() + shift.double()  # [N, P, Fout]
    for name, extra in (("tanh, half out", {}),
                        ("residual, float32 out", {"residual": res, "tanh": False, "out_dtype": torch.float32})):
        want = pre + res.double() if extra else torch.tanh(pre)
        rounding = U if extra.get("out_dtype", half) == half else 0.0
        bound = rounding * want.abs() + SLACK * (1 + pre.abs() + (res.abs().double() if extra else 0))
        # x @ w in the kernel with five feature tiles; first, with one, two and three rows a program (past the last row)
        for tiles in (None, (16, 4, 3, True, 1), (32, 4, 3, True, 2), (16, 4, 3, True, 3)):
            got = kernels.graph_conv(x, w, att, scale, shift, tiles=tiles, **extra)
            assert got.dtype == extra.get("out_dtype", half) and got.shape == (2, 5, 70)
            assert_within(got, want, bound, f"graph_conv ({name}), tiles {tiles}")
    try:
        kernels.graph_conv(x, w, att, scale, shift, tiles=(16, 4, 3, False, 2))
        raise AssertionError("several rows per program without the product first were taken")
    except ValueError as e:
        assert "product first" in str(e)

    from spard.fast import FusedGCN  # the kernels wired into a whole GCN, under fp16 autocast
    from spard.nets.gcn import GCN
    gcn = GCN(7, 16, 7, nodes=5, layers=2, dropout=0.5, residual=True).eval()
    x = torch.randn(3, 5, 7, generator=gen)
    with torch.autocast("cpu", dtype=half):
        got = FusedGCN(gcn)(x, gcn.residual)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, gcn(x), rtol=0, atol=2e-2)
    print("kernels ok")
""")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: test_triton_kernels_on_the_gpu runs them")
def test_triton_kernels_in_the_interpreter():
    require("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "kernels ok" in run.stdout, run.stdout + run.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_kernels_on_the_gpu(dtype):
    from spard import kernels

    gen = torch.Generator(device="cuda").manual_seed(0)
    def launched(pdl, kernel, *args, **kw):  # with and without dependent launch (kernels.PDL)
        kernels.PDL = pdl
        try:
            return kernel(*args, **kw)
        finally:
            kernels.PDL = True

    qkv = torch.randn(50, 20, 3 * 512, device="cuda", generator=gen).to(dtype)
    for pdl in (True, False):
        torch.testing.assert_close(launched(pdl, kernels.attention, qkv, 8).float(),
                                   kernels.attention_reference(qkv.float(), 8), rtol=0, atol=2e-2)
    # the sampler's shapes: rows of one history (noise predictor, 16-wide tiles) and of 50 samples; the
    # input transposed as the models give it, a residual, the tiles the sweep tries
    for n, fin, fout in ((1, 20, 256), (1, 256, 1000), (3, 256, 256), (50, 125, 256), (50, 256, 256)):
        x = torch.randn(n, fin, 48, device="cuda", generator=gen).to(dtype).transpose(1, 2)
        w = (torch.randn(fin, fout, device="cuda", generator=gen) / fin**0.5).to(dtype)
        att = (torch.randn(48, 48, device="cuda", generator=gen) / 7).to(dtype)
        scale = torch.rand(48, fout, device="cuda", generator=gen) + 0.5
        shift = torch.randn(48, fout, device="cuda", generator=gen)
        res = torch.randn(n, 48, fout, device="cuda", generator=gen).to(dtype)
        want = kernels.graph_conv_reference(x.float(), w.float(), att.float(), scale, shift, res.float(),
                                            out_dtype=torch.float32)
        for tiles in (None, (16, 4, 3, False, 1), (16, 2, 2, True, 1), (32, 4, 3, True, 4), (128, 8, 3, True, 8)):
            for pdl in (True, False):
                got = launched(pdl, kernels.graph_conv, x, w, att, scale, shift, res, tiles=tiles)
                torch.testing.assert_close(got.float(), want, rtol=0, atol=3e-2,
                                           msg=lambda m: f"{n} x {fin} -> {fout}, tiles {tiles}, pdl {pdl}: {m}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sampler, sigma", [("np", 1.0), ("np", 0.0), ("onestep", 1.0)])
def test_graphed_sampler_on_the_gpu_matches_float32(sampler, sigma):
    """The whole fast path (fused model, kernels, frozen compile, CUDA graph, fp16) against float32, on a
    tiny model with random weights: every output within 1 % of the output's scale. (A bound of 0.5 %
    failed for onestep on an H100, whose inputs carry the prior's noise; the accuracy that matters, of
    the metrics of trained models, is measured by bench/precision.py, which bench/gpu_check.py holds to
    0.5 %.) Both noise predictors: the default one (`sigma` 1) draws noise like onestep, the published one
    (0) none. The largest difference is printed (pytest -s) for the record."""
    model = with_np_noise(trained_like(), sigma).cuda()
    history = torch.randn(2, model.t_his, model.dim, device="cuda")
    noise = torch.randn(5, 2, model.n_pre, model.dim, device="cuda")
    extra = {"noise": noise} if samplers.draws_noise(model, sampler) else {}  # the same noise for both paths
    want = samplers.get_sampler(sampler)(model, history, 5, **extra)
    fast = GraphedSampler(model, SamplerOptions(sampler, 5), 2)
    got = fast(history, *extra.values()).clone()
    error = ((got - want).abs().max() / want.abs().max()).item()
    print(f"fast path, {sampler} (noise {sigma:g}): largest difference {error:.2e} of the output scale")
    assert error <= 1e-2
    torch.testing.assert_close(fast(history, *extra.values()), got)  # replays give the same result
