"""``data.download=true``: each public data set is fetched over HTTP, unpacked in the task's
layout, and trained on; a failed download ends in one line. A local server stands in for
download.pytorch.org, so the real download code runs without the internet."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import train_in_process

from torchcamp.datasets import hymenoptera, names


@pytest.fixture
def http_folder(tmp_path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on localhost: (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # keep the test output quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def zip_folder(source: Path, archive: Path) -> None:
    shutil.make_archive(str(archive.with_suffix("")), "zip", root_dir=source)


@pytest.mark.slow
def test_names_download_keeps_only_the_names_folder(monkeypatch, tmp_path, http_folder):
    served, base = http_folder
    tutorial = tmp_path / "tutorial"
    names.write_synthetic_names(tutorial / "data", seed=0)  # the zip holds data/names/*.txt
    (tutorial / "data" / "eng-fra.txt").write_text("go.\tva !\n")  # and more than names
    zip_folder(tutorial, served / "data.zip")
    monkeypatch.setattr(names, "URL", f"{base}/data.zip")
    root = tmp_path / "data"

    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "task=names", f"data.root={root}", "data.download=true",
        "trainer.max_epochs=1",
    )  # fmt: skip
    assert code == 0 and (run_dir / "metrics.json").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["names"]  # no data.zip, no eng-fra.txt
    assert len(list((root / "names").glob("*.txt"))) == 5


@pytest.mark.slow
def test_hymenoptera_download_unpacks_the_tutorial_zip(monkeypatch, tmp_path, http_folder):
    served, base = http_folder
    hymenoptera.render_synthetic_hymenoptera(tmp_path / "tutorial", seed=0, per_class=4)
    zip_folder(tmp_path / "tutorial", served / "hymenoptera_data.zip")
    monkeypatch.setattr(hymenoptera, "URL", f"{base}/hymenoptera_data.zip")
    root = tmp_path / "data"

    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "task=hymenoptera", f"data.root={root}", "data.download=true",
        "model=lenet", "data.image_size=32", "trainer.max_epochs=1",
    )  # fmt: skip
    assert code == 0 and (run_dir / "metrics.json").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["hymenoptera_data"]


def test_a_failed_download_is_one_line_and_leaves_nothing(
    monkeypatch, tmp_path, capsys, http_folder
):
    _, base = http_folder
    monkeypatch.setattr(names, "URL", f"{base}/missing.zip")  # the server answers 404
    root = tmp_path / "data"

    code, _ = train_in_process(
        monkeypatch, tmp_path, "task=names", f"data.root={root}", "data.download=true"
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: could not download {base}/missing.zip into {root}" in err
    assert "Traceback" not in err
    assert list(root.iterdir()) == []  # the temporary folder went with the failure


def test_a_task_without_a_download_says_so(monkeypatch, tmp_path, capsys):
    code, _ = train_in_process(
        monkeypatch, tmp_path, "task=rmb", "data.synthetic=false", f"data.root={tmp_path}",
        "data.download=true",
    )  # fmt: skip
    assert code == 2  # the RMB photos are not public: the usual missing-data message follows
    assert "task=rmb has no public download" in capsys.readouterr().out  # Hydra logs to stdout
