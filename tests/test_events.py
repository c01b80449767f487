"""TensorBoard event files of the training loop, read back with tensorboard's own EventAccumulator:
after an interruption (events written past the last checkpoint) and a resume, every curve has each
step once and no gap, with the values of an uninterrupted run and of the JSON-lines logs; without
the tensorboard package, one note and no event files."""
import json
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clipfh_utils.config import to_dict
from clipfh_utils.training import events as events_module
from clipfh_utils.training import loop as loop_module

from .test_clip_reid import tiny_cfg, tiny_data, train_seed


class Interrupt(Exception):
    pass


def read_events(folder, purge: bool = True) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=purge)
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def cut_before_checkpoint(phase_name: str, epoch: int):
    """A process dying after the epoch's events were flushed, before its checkpoint was saved."""
    real = loop_module.Trainer._checkpoint

    def checkpoint(self, index, phase, e):
        if phase.name == phase_name and e == epoch:
            raise Interrupt
        real(self, index, phase, e)

    return checkpoint


CFG = dict(epochs=3, monitor_every=1)


def test_resumed_curves_have_every_step_once_and_match_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg, data = tiny_cfg(**CFG), tiny_data()
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    (ref / "events.out.tfevents.1.stale.0.0").write_bytes(b"from an earlier attempt")
    train_seed(cfg, data, ref, config=to_dict(cfg))
    assert not (ref / "events.out.tfevents.1.stale.0.0").exists()  # a fresh start begins empty
    with monkeypatch.context() as mp:
        mp.setattr(loop_module.Trainer, "_checkpoint", cut_before_checkpoint("finetune", 2))
        with pytest.raises(Interrupt):
            train_seed(cfg, data, cut, config=to_dict(cfg))
    raw = scalars(read_events(cut, purge=False))
    before = [s for s, _ in raw["loss/total"]]
    at_checkpoint = torch.load(cut / "checkpoint.pt", weights_only=False)["summary"]["steps"]
    train_seed(cfg, data, cut, resume=True, config=to_dict(cfg))
    assert len(list(cut.glob(events_module.EVENTS_GLOB))) == 2  # the interrupted writer's file, and the resumed one's

    got, expected = scalars(read_events(cut)), scalars(read_events(ref))
    steps_log, epochs_log = jsonl(cut / "log.jsonl"), jsonl(cut / "epochs.jsonl")
    n = len(steps_log)
    # the interrupted process wrote finetune epoch 2 past its last checkpoint: the resume re-wrote it
    assert before == list(range(len(before))) and at_checkpoint < len(before) < n
    assert set(got) == set(expected) == ({"loss/total", "loss/supcon", "loss/id", "loss/triplet", "loss/i2t",
                                          "speed/images_per_s"} | {f"lr/{k[3:]}" for e in epochs_log for k in e
                                                                   if k.startswith("lr_")}
                                         | {"monitor/val_rank1", "monitor/val_rank5", "monitor/val_rank10",
                                            "monitor/val_mAP"})
    for tag, points in got.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)) and steps == sorted(steps), tag
        if tag == "loss/total":
            assert steps == list(range(n))  # contiguous: one point per optimiser step of every phase
    for tag in got:
        if tag != "speed/images_per_s":  # the only value that depends on the clock
            assert got[tag] == expected[tag], tag
    # the values are the logs' (float32 in the event file)
    assert [v for _, v in got["loss/total"]] == pytest.approx([r["total"] for r in steps_log], rel=1e-6)
    assert [v for _, v in got["loss/id"]] == pytest.approx([r["id"] for r in steps_log if "id" in r], rel=1e-6)
    ends = [i for i, r in enumerate(steps_log) if i + 1 == n or steps_log[i + 1]["epoch"] != r["epoch"]
            or steps_log[i + 1]["phase"] != r["phase"]]
    assert [s for s, _ in got["speed/images_per_s"]] == ends  # per-epoch values at each epoch's last step
    assert [v for _, v in got["speed/images_per_s"]] == pytest.approx([e["images_per_s"] for e in epochs_log], rel=1e-6)
    lr_tag = next(t for t in got if t.startswith("lr/"))
    assert [v for _, v in got[lr_tag]] == pytest.approx([e["lr_" + lr_tag[3:]] for e in epochs_log
                                                          if "lr_" + lr_tag[3:] in e], rel=1e-6)
    assert [v for _, v in got["monitor/val_mAP"]] == pytest.approx([e["val_mAP"] for e in epochs_log
                                                                    if "val_mAP" in e], rel=1e-6)
    # the resolved config as text, once, at step 0 (not again on resume)
    acc = read_events(cut)
    (text_tag,) = acc.Tags()["tensors"]
    (config_event,) = acc.Tensors(text_tag)
    text = config_event.tensor_proto.string_val[0].decode()
    assert config_event.step == 0 and "epochs: 3" in text and "monitor_every: 1" in text


def test_without_tensorboard_training_notes_it_once_and_writes_no_events(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setattr(events_module, "_noted", False)
    cfg, data = tiny_cfg(epochs=1), tiny_data()
    train_seed(cfg, data, tmp_path / "a")
    train_seed(cfg, data, tmp_path / "b")
    err = capsys.readouterr().err
    assert err.count("tensorboard is not installed") == 1
    for d in (tmp_path / "a", tmp_path / "b"):
        assert not list(d.glob(events_module.EVENTS_GLOB)) and (d / "weights.pt").exists()
        assert len(jsonl(d / "log.jsonl")) > 0


def test_a_resume_in_the_same_second_writes_an_event_file_that_sorts_after_the_interrupted_one(tmp_path):
    """TensorBoard reads event files in name order (creation second, host, pid): the resumed
    writer's file must come after the interrupted writer's, or its purge is read first."""
    import socket
    import time
    from clipfh_utils.training.events import EVENTS_GLOB, EventLog
    # the interrupted writer: same second, same host, a pid that sorts after ours
    old = tmp_path / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.99999999.0"
    old.write_bytes(b"")
    events = EventLog(tmp_path, resume_step=3)
    events.close()
    files = sorted(tmp_path.glob(EVENTS_GLOB), key=lambda f: f.name)
    assert len(files) == 2 and files[0] == old, files
