"""The pieces resumption rests on, without training: the data order is a pure function of
(seed, step), metrics are cut back to the checkpoint, manifests detect damaged files.

End-to-end runs (SIGKILL, Ctrl-C, corrupt checkpoints, the lock) are in
test_exp_reliability.py.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from tnlib.experiments import records, training


def test_data_order_is_a_function_of_seed_and_step():
    n, bs = 50, 8  # 6 full batches per epoch, 2 examples dropped
    epoch = [training.batch_indices(3, s, n, bs) for s in range(6)]
    flat = np.concatenate(epoch)
    assert len(set(flat)) == len(flat) == 48  # no example twice within an epoch
    again = [training.batch_indices(3, s, n, bs) for s in range(6)]  # e.g. after a restart
    assert all(np.array_equal(a, b) for a, b in zip(epoch, again, strict=True))
    second = np.concatenate([training.batch_indices(3, s, n, bs) for s in range(6, 12)])
    assert not np.array_equal(flat, second)  # a new permutation each epoch
    assert not np.array_equal(flat, np.concatenate(
        [training.batch_indices(4, s, n, bs) for s in range(6)]))
    with pytest.raises(ValueError, match="batch_size=64 exceeds the 50"):
        training.batch_indices(0, 0, n, 64)


def test_truncate_metrics_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in (2, 4, 6, 8):
        records.append_metrics(path, {"step": step, "loss": 1.0 / step})
    with open(path, "a") as f:
        f.write('{"step": 10, "lo')  # a line cut by SIGKILL
    assert [r["step"] for r in records.read_metrics(path)] == [2, 4, 6, 8]
    assert records.truncate_metrics(path, 5) == 2
    assert path.read_text().splitlines() == [json.dumps({"loss": 0.5, "step": 2}),
                                             json.dumps({"loss": 0.25, "step": 4})]


def test_manifest_detects_each_kind_of_damage(tmp_path):
    step_dir = tmp_path / "7"
    (step_dir / "state" / "d").mkdir(parents=True)
    (step_dir / "state" / "d" / "a").write_bytes(b"0123456789")
    (step_dir / "meta").mkdir()
    (step_dir / "meta" / "metadata").write_text("{}")
    assert training.verify_manifest(step_dir) == (False, None)
    training.write_manifest(step_dir, 7)
    assert training.verify_manifest(step_dir) == (True, None)
    manifest = json.loads((step_dir / training.MANIFEST).read_text())
    assert manifest["step"] == 7 and set(manifest["files"]) == {"state/d/a", "meta/metadata"}

    data = step_dir / "state" / "d" / "a"
    data.write_bytes(b"0123456780")  # same size, one byte changed
    assert "does not match its SHA-256" in training.verify_manifest(step_dir)[1]
    data.write_bytes(b"01234")
    assert "has 5 bytes, the manifest says 10" in training.verify_manifest(step_dir)[1]
    data.unlink()
    assert f"file {data} is missing" in training.verify_manifest(step_dir)[1]
    (step_dir / training.MANIFEST).write_text("{not json")
    assert "manifest" in training.verify_manifest(step_dir)[1]
    # a flipped bit may leave valid JSON: a renamed key or another step is damage too
    for text in (json.dumps({**manifest, "step": 6}),
                 json.dumps({**manifest, "files": {"meta/metadata": {"size": 2, "sha255": "x"}}}),
                 json.dumps({"step": 7, "filez": {}})):
        (step_dir / training.MANIFEST).write_text(text)
        assert "manifest" in training.verify_manifest(step_dir)[1]


def test_a_save_returns_durable_with_its_manifest_and_then_prunes(tmp_path):
    # issue 26 item 1: the manifest of step N used to be written at the next save
    mngr = training.checkpoint_manager(tmp_path / "checkpoints", keep=2)
    state = {"params": {"w": jnp.arange(4.0)}, "opt_state": (jnp.zeros(2),)}
    for step in (1, 2, 3):
        path = training.save_checkpoint(mngr, step, state, {"step": step})
        assert training.verify_manifest(path) == (True, None)  # before anything else runs
    assert sorted(mngr.all_steps()) == [2, 3]  # pruned only after the newest is verified
    assert training.commit_checkpoints(mngr, [1, 2, 3]) == []  # nothing left to commit
    mngr.close()
