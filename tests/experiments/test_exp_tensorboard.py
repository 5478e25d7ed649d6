"""TensorBoard event files beside metrics.jsonl (tensorboardX, from the experiments extra):
the records the runner appends become scalars a TensorBoard reader finds."""

import struct

import pytest

from tnlib.experiments import records

pytest.importorskip("tensorboardX")


def _tags(logdir):
    from tensorboardX.proto import event_pb2

    tags = {}
    for path in logdir.glob("events.out.tfevents.*"):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                tags.setdefault(v.tag, []).append((event.step, v.simple_value))
    return tags


def test_records_become_scalars(tmp_path, monkeypatch):
    monkeypatch.delenv("TNLIB_TENSORBOARD", raising=False)
    writer = records.tensorboard_writer(tmp_path / "tb")
    records.write_scalars(writer, {"step": 10, "train_loss": 0.5, "lr": 1e-3, "note": "x",
                                   "test_acc": float("nan")})
    records.write_scalars(writer, {"step": 20, "train_loss": 0.25})
    writer.close()
    tags = _tags(tmp_path / "tb")
    assert tags["train_loss"] == [(10, 0.5), (20, 0.25)]
    assert set(tags) == {"train_loss", "lr"}


def test_off_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TNLIB_TENSORBOARD", "0")
    assert records.tensorboard_writer(tmp_path / "tb") is None
