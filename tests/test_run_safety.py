"""No wrong number, no lost work (docs/reliability.md): a stage folder has one process at a time, a
result is never replaced without --overwrite, a resumed run keeps its settings, a diverged or
stepless training stops without promoting its weights, a broken model gets no metric, every setting
is checked where a config is built, and nothing unexpected escapes as a traceback."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import typing

import pytest
import torch

from conftest import tiny_config, write_gsps
from spard import checkpoints, metrics
from spard.cli import main
from spard.config import SECTIONS, Config, ConfigError, fields_of
from spard.model import SPARD
from spard.runs import StageLock

TINY = ["--latent_dim", "16", "--ff_size", "32", "--num_layers", "2", "--num_heads", "2", "--gcn_hidden", "8",
        "--gcn_layers", "1", "--np_hidden", "8", "--np_layers", "1", "--np_k", "6"]


def train_args(data, out, *extra) -> list[str]:
    return ["train", "--cfg", "h36m", "--device", "cpu", "--no_progress", "--data_dir", str(data), "--out_dir", str(out),
            "--val_fraction", "0.3", "--batch_size", "32", "--num_epoch", "1", "--stride", "50", "--num_samples", "2",
            "--div_k", "2", "--metrics_epoch", "0", *TINY, *extra]


def tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_gsps(folder)
    return folder


def interrupted(data, out, capsys, *extra) -> None:
    """A finished 1-epoch run made to look interrupted: its last.pt unfinished, no stage result."""
    assert main(train_args(data, out, *extra)) == 0
    last = out / "train" / "runs" / "001" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["finished"] = False
    torch.save(state, last)
    (out / "train" / "ckpt.pt").unlink()
    capsys.readouterr()


def test_a_busy_stage_folder_refuses_a_second_process(data, tmp_path, capsys):
    (tmp_path / "train").mkdir()
    with StageLock(tmp_path / "train"):
        before = tree(tmp_path)
        assert main(train_args(data, tmp_path)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tmp_path / 'train'} is in use by process" in err
        assert tree(tmp_path) == before
    assert main(train_args(data, tmp_path)) == 0  # free again once the holder is done


def test_resuming_with_other_settings_is_refused_and_changes_nothing(data, tmp_path, capsys):
    interrupted(data, tmp_path, capsys)
    before = tree(tmp_path)
    assert main(train_args(data, tmp_path, "--lr", "0.002")) == 2
    err = capsys.readouterr().err
    assert "was started with other settings (--lr 0.0001 -> 0.002)" in err and "--no_resume" in err
    assert tree(tmp_path) == before  # not even log.txt grew
    assert main(train_args(data, tmp_path, "--num_epoch", "2")) == 0  # more epochs: a change a resume may make
    assert "resuming" in capsys.readouterr().out
    assert torch.load(tmp_path / "train" / "ckpt.pt", weights_only=True)["epoch"] == 2


def test_a_torn_history_line_does_not_block_resuming(data, tmp_path, capsys):
    interrupted(data, tmp_path, capsys)
    history = tmp_path / "train" / "runs" / "001" / "history.jsonl"
    history.write_text(history.read_text() + '{"epoch": 2, "train_lo')  # a write cut off by a kill
    assert main(train_args(data, tmp_path, "--num_epoch", "2")) == 0
    assert [line[:11] for line in history.read_text().splitlines()] == ['{"epoch": 1', '{"epoch": 2']


def test_an_unfinished_run_does_not_replace_a_result_without_overwrite(data, tmp_path, capsys):
    interrupted(data, tmp_path, capsys)
    (tmp_path / "train" / "ckpt.pt").write_bytes(b"an earlier result")
    before = tree(tmp_path)
    assert main(train_args(data, tmp_path)) == 2
    assert "pass --overwrite to resume it and replace that result" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_a_stage_result_is_not_a_run_to_resume(data, tmp_path, capsys):
    assert main(train_args(data, tmp_path)) == 0
    capsys.readouterr()
    assert main(train_args(data, tmp_path, "--resume", str(tmp_path / "train" / "ckpt.pt"), "--overwrite")) == 2
    assert "is a stage result, not a run's checkpoint" in capsys.readouterr().err


def test_diverged_training_stops_and_keeps_its_last_good_checkpoint(data, tmp_path, capsys):
    # after epoch 1 the learning rate becomes 1e26: epoch 2 diverges
    assert main(train_args(data, tmp_path, "--num_epoch", "3", "--milestones", "1", "--gamma", "1e22")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training diverged at epoch 2" in err
    run = tmp_path / "train" / "runs" / "001"
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (tmp_path / "train" / "ckpt.pt").exists()  # never promoted to the result


def test_an_epoch_without_an_optimiser_step_fails(tmp_path, capsys):
    write_gsps(tmp_path / "data", train_frames=126)  # 10 training sequences of 2 windows: 1 item at stride 20
    args = train_args(tmp_path / "data", tmp_path / "out")
    for flag, value in (("--stride", "20"), ("--val_fraction", "0")):
        args[args.index(flag) + 1] = value
    assert main(args) == 2  # one window a batch: BatchNorm cannot train on it
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epoch 1 made no optimiser step: 1 training windows" in err
    assert not (tmp_path / "out" / "train" / "ckpt.pt").exists()


@pytest.mark.parametrize("broken, value", [("weight", float("nan")), ("bias", 1e36)])
def test_a_broken_model_gets_no_metric(data, tmp_path, capsys, broken, value):
    """NaN futures, or finite futures so far off that a distance overflows float32: no metric either way."""
    model = SPARD(tiny_config())
    with torch.no_grad():
        getattr(model.denoiser.out, broken).fill_(value)
    checkpoints.save_checkpoint(tmp_path / "broken.pt", model, "base")
    args = ["eval", "--cfg", "h36m", "--device", "cpu", "--no_progress", "--data_dir", str(data), "--out_dir",
            str(tmp_path / "out"), "--num_samples", "2", "--sample", "onestep", "--ckpt", str(tmp_path / "broken.pt")]
    assert main(args) == 2
    assert "got non-finite (NaN or inf) futures, or futures so far off that a metric overflows" in \
        capsys.readouterr().err
    assert not list((tmp_path / "out").rglob("*.json"))


def test_cmd_without_a_reference_is_not_a_number():
    motion, labels = torch.rand(4, 9), torch.tensor([0, 0, 1, 1])
    assert math.isnan(metrics.cmd(motion, labels, [math.nan, math.nan]))
    assert metrics.cmd(motion, labels, [math.nan, 0.1]) > 0


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_setting_is_checked_where_a_config_is_built(section):
    """Each field refuses a value of the wrong type and, where it has bounds or choices, an out-of-range
    one, NaN and infinity: one line naming its flag."""
    cfg = Config()
    tried = 0
    for f, s, kind in fields_of(SECTIONS[section]):
        bad = [object()]
        if s.choices:
            bad.append("no-such-choice")
        number = float if float in (kind, *typing.get_args(kind)) else int
        for bound, step in ((s.low, -1), (s.above, 0), (s.high, 1), (s.below, 0)):
            if bound is not None:
                value = number(bound + step)
                bad.append((value,) if typing.get_origin(kind) is tuple else value)
        if kind is float:
            bad += [math.nan, math.inf]
        for value in bad:
            with pytest.raises(ConfigError) as info:
                dataclasses.replace(getattr(cfg, section), **{f.name: value})
            assert "\n" not in str(info.value) and (s.flag == "" or f"--{s.flag or f.name}" in str(info.value))
            tried += 1
    assert tried >= len(fields_of(SECTIONS[section]))


def test_checkpoint_fields_of_the_wrong_type_are_one_line(tmp_path):
    model = SPARD(tiny_config())
    checkpoints.save_checkpoint(tmp_path / "good.pt", model, "base")
    for field, value in (("stage", 5), ("config", [1, 2]), ("model", "weights"), ("format_version", "1")):
        state = torch.load(tmp_path / "good.pt", weights_only=True)
        state[field] = value
        torch.save(state, tmp_path / "bad.pt")
        with pytest.raises(checkpoints.CheckpointError, match=f"{field} is a") as info:
            checkpoints.load_model(tmp_path / "bad.pt")
        assert "\n" not in str(info.value)
    state = torch.load(tmp_path / "good.pt", weights_only=True)
    state["config"]["train"]["lr"] = "fast"
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(checkpoints.CheckpointError, match="unreadable config .*--lr must be a finite number"):
        checkpoints.load_model(tmp_path / "bad.pt")


def test_an_unexpected_error_is_one_line_too(monkeypatch, capsys):
    def boom(*_):
        raise KeyError("nowhere")

    monkeypatch.setattr("spard.cli.run_mode", boom)
    assert main(["train", "--cfg", "h36m"]) == 2
    err = capsys.readouterr().err
    assert err == "error: KeyError: 'nowhere' (pass --debug for the traceback)\n"


@pytest.mark.parametrize("content, message", [
    ("[" * 100_000, "is nested too deeply to be the expected JSON"),
    ('{"train": {"lr": 0.1}, "train": {"lr": 0.2}}', "so its meaning is ambiguous"),
    ('{"train": {"lr": "fast"}}', "is not a spard config (--lr must be a finite number"),
    ('{"trian": {}}', "is not a spard config (unknown config sections"),
    ("not json", "is not valid JSON"),
])
def test_a_bad_config_file_is_one_line_and_writes_nothing(data, tmp_path, capsys, content, message):
    (tmp_path / "config.json").write_text(content)
    before = tree(tmp_path)
    assert main(["train", "--config", str(tmp_path / "config.json"), "--out_dir", str(tmp_path / "out"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert tree(tmp_path) == before


def test_a_run_resumed_from_another_out_dir_waits_for_its_holder(data, tmp_path, capsys):
    """The lock covers the stage folder holding the run written, not only --out_dir's."""
    a, b = tmp_path / "a", tmp_path / "b"
    interrupted(data, a, capsys)
    before = tree(tmp_path)
    with StageLock(a / "train"):  # the command that trains in a's run folder is still running
        assert main(train_args(data, b, "--resume", str(a / "train" / "runs" / "001"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{a / 'train'} is in use by process" in err
    assert tree(tmp_path) == before


def test_resuming_on_other_data_is_refused(data, tmp_path, capsys):
    """--data_dir may move (a changeable setting), but a resumed run must see the same training data."""
    interrupted(data, tmp_path / "out", capsys)
    write_gsps(tmp_path / "other", seed=1)
    before = tree(tmp_path / "out")
    args = train_args(data, tmp_path / "out", "--num_epoch", "2")
    args[args.index("--data_dir") + 1] = str(tmp_path / "other")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained on other data than" in err and "--no_resume" in err
    assert tree(tmp_path / "out") == before
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "data_3d_h36m.npz").hardlink_to(data / "data_3d_h36m.npz")  # the same data elsewhere
    args[args.index("--data_dir") + 1] = str(moved)
    assert main(args) == 0 and "resuming" in capsys.readouterr().out


def test_a_damaged_run_checkpoint_is_refused_before_anything_is_written(data, tmp_path, capsys):
    interrupted(data, tmp_path, capsys)
    last = tmp_path / "train" / "runs" / "001" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["best_val_loss"] = "x"
    torch.save(state, last)
    before = tree(tmp_path)
    assert main(train_args(data, tmp_path, "--num_epoch", "2")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged (epoch 1, best_val_loss 'x')" in err
    assert tree(tmp_path) == before


def test_weights_blown_up_by_the_last_step_are_not_promoted(data, tmp_path, capsys):
    """The loss of an epoch is measured before its last update: the weights themselves are checked too."""
    from spard.train import Trainer
    from spard.runs import make_logger
    from spard.data import load_dataset

    cfg = dataclasses.replace(tiny_config(), data=dataclasses.replace(tiny_config().data, data_dir=str(data)))
    trainer = Trainer(cfg, "base", SPARD(cfg), load_dataset(cfg.data), run_dir=None, out_dir=None,
                      device=torch.device("cpu"), logger=make_logger(None, quiet=True), progress=False)
    assert trainer.non_finite_weights() == ""
    with torch.no_grad():
        trainer.model.denoiser.gcn.gc1.weight[0, 0] = float("inf")
    assert trainer.non_finite_weights() == "denoiser.gcn.gc1.weight"
    trainer.train_epoch = lambda epoch: 0.5  # a finite loss, as when only the last update blew up
    trainer.validation_loss = lambda: 0.5
    with pytest.raises(ValueError, match=r"training diverged at epoch 1 \(train loss 0\.5, validation loss 0\.5, "
                                         r"non-finite weights in denoiser\.gcn\.gc1\.weight\).*nothing is saved"):
        trainer.fit()


def test_evaluation_refuses_model_settings_other_than_the_checkpoints(data, tmp_path, capsys):
    assert main(train_args(data, tmp_path)) == 0
    capsys.readouterr()
    args = ["eval", "--cfg", "h36m", "--device", "cpu", "--no_progress", "--data_dir", str(data), "--out_dir",
            str(tmp_path), "--num_samples", "2", *TINY]
    for flag, value in (("--noise_steps", "20"), ("--latent_dim", "32")):
        assert main(args + [flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag} {value} differs from the checkpoint's" in err
    checkpoints.save_checkpoint(tmp_path / "np.pt", SPARD(tiny_config()), "np")  # the noise predictor, when it samples
    assert main(["np_eval", *args[1:-len(TINY)], "--np_ckpt", str(tmp_path / "np.pt"), "--np_noise", "50"]) == 2
    assert "--np_noise 50.0 differs from the checkpoint's 1.0: evaluation uses the model as trained" in \
        capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
    assert main(args + ["--guidance", "0.5", "--json", str(tmp_path / "m.json")]) == 0  # evaluation's own setting
    import json

    recorded = json.loads((tmp_path / "m.json").read_text())["config"]
    assert recorded["diffusion"]["guidance"] == 0.5 and recorded["denoiser"]["latent_dim"] == 16  # what was evaluated
