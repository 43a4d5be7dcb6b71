"""Checkpoint files (trainer/checkpoint.py): atomic and checksummed writes, weights-only loads
that refuse pickled code, loadable on the CPU, written in the background."""

from __future__ import annotations

import os

import pytest
import torch

from torchcamp.trainer.checkpoint import BackgroundWriter, load_checkpoint, save_checkpoint
from torchcamp.trainer.errors import UserError


def test_save_is_atomic_and_load_is_weights_only(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    assert not list(path.parent.glob("*.tmp"))
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["format"] == 2


def test_truncated_and_foreign_files_are_user_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.ones(100)}, "epoch": 1}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.ones(1)}, foreign)
    with pytest.raises(UserError, match="not a torchcamp checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_checkpoint_saved_on_gpu_loads_on_cpu(tmp_path):
    path = tmp_path / "gpu.pt"
    save_checkpoint({"model": {"w": torch.ones(2, device="cuda")}, "epoch": 1}, path)
    assert load_checkpoint(path)["model"]["w"].device.type == "cpu"


def test_a_checksum_catches_changed_contents_and_a_truncated_file_is_named(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    state = torch.load(path, weights_only=True)
    state["model"]["w"][1] = 2.0  # a changed value under the old checksum
    torch.save(state, path)
    with pytest.raises(UserError, match=r"last.pt is corrupt \(its contents do not match"):
        load_checkpoint(path)
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"cannot read checkpoint .*last.pt"):
        load_checkpoint(path)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match=r"No space left on device.*previous last.pt is intact"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert not path.with_suffix(".pt.tmp").exists()


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "crafted.pt"
    torch.save({"model": {}, "epoch": 1, "payload": RunsCode()}, path)
    with pytest.raises(UserError, match=r"cannot read checkpoint .*crafted.pt"):
        load_checkpoint(path)
    assert not marker.exists()  # weights_only=True never called os.system


def test_the_background_writer_snapshots_the_state_and_links_best(tmp_path):
    weights = torch.ones(3)
    writer = BackgroundWriter()
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    writer.save({"model": {"w": weights}, "epoch": 1}, last, [best])
    weights.zero_()  # the next optimizer step changes the weights while the file is written
    writer.wait()
    assert torch.equal(load_checkpoint(best)["model"]["w"], torch.ones(3))
    assert os.path.samefile(last, best)  # a hard link, not a second copy
    writer.save({"model": {"w": weights}, "epoch": 2}, last)
    writer.wait()
    # last.pt is replaced by a rename, so the best epoch's file is untouched.
    assert load_checkpoint(last)["epoch"] == 2 and load_checkpoint(best)["epoch"] == 1


def test_a_failed_background_write_is_raised_by_the_next_wait(tmp_path, monkeypatch):
    import errno

    def disk_full(obj, file, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    writer = BackgroundWriter()
    writer.save({"model": {}, "epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(UserError, match="No space left on device"):
        writer.wait()
    writer.wait()  # reported once
