"""Numerical equivalence with the published implementation (same weights in, same numbers out).

Reads the folder named by `SPARD_ORACLE_DIR` (default `../shared/data/oracle`): `weights.pt`
(published layout) and `vectors.npz` (inputs and outputs of the published code; its README says
what each array is). The weights go through the published-checkpoint loader; every stored output
of the model, the schedule, the samplers and the losses must match to a relative error <= 1e-5.
The metric vectors (`met_*`) are checked in test_metrics.py against the same folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from spard import checkpoints, losses, samplers
from spard.config import preset
from spard.dct import dct_matrix, pad_indices
from spard.diffusion import ddim_coefficients, eta_schedule, q_sample
from spard.nets.denoiser import timestep_embedding

RTOL = 1e-5
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def oracle_dir() -> Path:
    if "SPARD_ORACLE_DIR" in os.environ:
        path = Path(os.environ["SPARD_ORACLE_DIR"])
        assert path.is_dir(), f"SPARD_ORACLE_DIR={path} is not a folder"
        return path
    return shared_path("data", "oracle")


@pytest.fixture(scope="module")
def vectors():
    with np.load(oracle_dir() / "vectors.npz") as f:
        return {k: f[k] for k in f.files}


def oracle_config(vectors):
    """Our config equal to the one the vectors were made with (stored in `config_json`)."""
    c = json.loads(str(vectors["config_json"]))["config"]
    cfg = preset(c["dataset"])
    data = dataclasses.replace(cfg.data, t_his=c["t_his"], t_pred=c["t_pred"], num_joints=c["joint_num"],
                               multimodal_threshold=c["multimodal_threshold"])
    den = dataclasses.replace(cfg.denoiser, num_heads=c["num_heads"], dropout=c["dropout"],
                              gcn_dropout=c["gcn_dropout"])
    npc = dataclasses.replace(cfg.noise_predictor, dropout=c["np_gcn_dropout"], alpha=c["np_alpha"])
    diff = dataclasses.replace(cfg.diffusion, schedule=c["scheduler"], noise_steps=c["noise_steps"],
                               sample_steps=c["sample_steps"], eta_min=c["etas_min"], eta_end=c["etas_max"],
                               kappa=c["kappa"], power=c["power"], guidance=c["mod_test"])
    train = dataclasses.replace(cfg.train, div_k=c["div_k"], mod_train=c["mod_train"], loss=c["loss"])
    return dataclasses.replace(cfg, data=data, denoiser=den, noise_predictor=npc, diffusion=diff, train=train)


@pytest.fixture(scope="module", params=DEVICES)
def setup(request, vectors):
    device = request.param
    weights = torch.load(oracle_dir() / "weights.pt", map_location="cpu", weights_only=True)
    model = checkpoints.from_published(oracle_config(vectors), weights["denoiser"], weights["noise_predictor"])
    model = model.to(device).eval()
    v = {k: torch.from_numpy(a).to(device) for k, a in vectors.items() if a.dtype.kind in "fiub"}
    return model, v, device


def close(got, want, rtol=RTOL):
    got = torch.as_tensor(got).detach().double().cpu()
    want = torch.as_tensor(want).double().cpu()
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).norm() / want.norm().clamp_min(1e-30)
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def test_schedule(setup):
    model, v, _ = setup
    cfg = model.cfg.diffusion
    close(eta_schedule(cfg), v["sched_sqrt_etas_f64"], 1e-12)
    close(model.sqrt_etas, v["sched_sqrt_etas"])
    close(model.schedule.etas, v["sched_etas"])
    assert list(model.timesteps) == v["sched_sample_steps"].tolist()
    ks, ms, js = zip(*(ddim_coefficients(model.schedule, int(t), int(s)) for t, s in zip(v["ddim_t"], v["ddim_next_t"])))
    close(torch.stack(ks), v["ddim_k"])
    close(torch.stack(ms), v["ddim_m"])
    close(torch.stack(js), v["ddim_j"])


def test_dct_and_padding(setup):
    model, v, _ = setup
    t_total = model.cfg.data.t_total
    dct, idct = dct_matrix(t_total)
    close(dct, v["dct_m"].float())
    close(idct, v["idct_m"].float())
    assert pad_indices(model.t_his, model.t_pred).tolist() == v["idx_pad"].tolist()
    close(model.condition(v["traj"][:, : model.t_his]), v["y_past_dct"])
    close(model.encode(v["traj"]), v["x0_dct"])


def test_forward_process(setup):
    model, v, device = setup
    for t in range(len(model.sqrt_etas)):
        close(q_sample(v["x0_dct"], v["y_past_dct"], t, v["noise_q"], model.schedule), v["x_t_all"][t])
    close(q_sample(v["x0_dct"], v["y_past_dct"], v["t_vec"], v["noise_q"], model.schedule), v["x_t"])


@torch.no_grad()
def test_denoiser_internals(setup):
    model, v, _ = setup
    den = model.denoiser
    close(timestep_embedding(v["t_vec"], den.cfg.latent_dim), v["dbg_cond_time_embed_in"])
    close(den.time_embed(v["dbg_cond_time_embed_in"]), v["dbg_cond_time_embed_out"])
    close(den.cond_embed(v["y_past_dct"].flatten(1)), v["dbg_cond_cond_embed_out"])
    emb = den.embedding(v["t_vec"], v["y_past_dct"], None)
    h = den.joint_embed(v["x_t"]) + den.sequence_embedding
    close(den.temporal_decoder_blocks[0](h, emb), v["dbg_cond_block0_out"])
    close(den.transformer(v["x_t"], emb), v["dbg_cond_out_linear"])
    close(den.transformer(v["x_t"], den.embedding(v["t_vec"], None, None)), v["dbg_uncond_out_linear"])
    close(den.gcn(v["dbg_cond_gcn_in"]), v["dbg_cond_gcn_out"])


@torch.no_grad()
def test_denoiser(setup):
    model, v, _ = setup
    cond = model.denoiser(v["x_t"], v["t_vec"], v["y_past_dct"], v["past_motion"])
    uncond = model.denoiser(v["x_t"], v["t_vec"], None, v["past_motion"])
    close(cond, v["den_cond"])
    close(uncond, v["den_uncond"])
    close(uncond + 0.3 * (cond - uncond), v["den_cfg_w03"])


def test_samplers(setup):
    model, v, _ = setup
    history, noise = v["past_motion"], v["noise_T"][None]
    close(model.condition(history) + model.cfg.diffusion.kappa * model.sqrt_etas[-1] * v["noise_T"], v["x_T"])
    close(samplers.ddim(model, history, 1, noise=noise, guidance=0.3)[:, 0], v["ddim_out"])
    close(samplers.onestep(model, history, 1, noise=noise)[:, 0], v["onestep_cond"])
    close(samplers.onestep(model, history, 1, noise=noise, use_condition=False)[:, 0], v["onestep_uncond"])
    with torch.no_grad():
        close(model.noise_predictor(v["y_past_dct"]), v["np_noise"])
    close(samplers.np_sample(model, history), v["np_samples"])


def test_ddim_intermediate_states(setup, monkeypatch):
    """The state fed to each of the 5 guided steps equals the published one."""
    model, v, _ = setup
    seen = []
    original = samplers.guided_denoise

    def spy(model_, x_t, *args, **kwargs):
        seen.append(x_t.clone())
        return original(model_, x_t, *args, **kwargs)

    monkeypatch.setattr(samplers, "guided_denoise", spy)
    samplers.ddim(model, v["past_motion"], 1, noise=v["noise_T"][None], guidance=0.3)
    close(torch.stack(seen), v["ddim_states"])


@torch.no_grad()
def test_losses(setup):
    model, v, _ = setup
    h = model.cfg.train.div_k
    for tag, keep in (("cond", True), ("uncond", False)):
        loss, err, pred = losses.base_loss(model, v["traj"], h=h, t=v["train_t"], eps=v["train_noise"], keep_cond=keep)
        close(err, v[f"train_err_{tag}"])
        close(loss, v[f"train_loss_{tag}"])
        close(pred[0], v[f"train_pred_b0_{tag}"])
    for tag, use in (("cond", True), ("uncond", False)):
        loss, _, teacher = losses.distill_loss(model, model, v["traj"], guidance=0.3, eps=v["noise_T"], use_condition=use)
        close(teacher, v["ddim_out"])
        close(loss, v[f"distill_loss_{tag}"])
    loss, err, eps = losses.noise_predictor_loss(model, v["traj"])
    close(eps, v["np_noise"])
    close(err, v["np_train_err"])
    close(loss, v["np_train_loss"])


def test_np_training_input(setup):
    """Stage 3 trains from the true x0 (forward process), not from the prior."""
    model, v, _ = setup
    k = model.cfg.noise_predictor.k
    x0 = v["x0_dct"].repeat_interleave(k, 0)
    y = v["y_past_dct"].repeat_interleave(k, 0)
    x_T = q_sample(x0, y, model.schedule.t_max, v["np_noise"].flatten(0, 1), model.schedule)
    close(x_T.view(v["np_train_x_T"].shape), v["np_train_x_T"])


def test_published_round_trip(setup):
    model, _, _ = setup
    weights = torch.load(oracle_dir() / "weights.pt", map_location="cpu", weights_only=True)
    den, npr = checkpoints.to_published(model)
    assert den.keys() == weights["denoiser"].keys()
    assert npr.keys() == weights["noise_predictor"].keys()
    for k, t in weights["denoiser"].items():
        assert torch.equal(den[k].cpu(), t), k
    for k, t in weights["noise_predictor"].items():
        assert torch.equal(npr[k].cpu(), t), k
