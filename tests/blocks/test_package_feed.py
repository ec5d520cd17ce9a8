"""DirectoryPackageFeed: a folder of wheels, refusing to change a published version."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from blocks.package_feed import DirectoryPackageFeed, wheel_name_and_version
from blocks.publishing import main
from delivery.errors import InvalidInput, PermanentError
from delivery.models import PublishedPackage


def wheel(folder: Path, body: str = "x = 1\n", name: str = "demo_pkg-1.0.0-py3-none-any.whl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("demo_pkg/__init__.py", body)
    return path


def test_a_wheel_is_published_once_and_the_same_bytes_again_are_a_no_op(tmp_path):
    feed = DirectoryPackageFeed(path=str(tmp_path / "feed"))
    built = wheel(tmp_path / "dist")
    published = feed.publish(built)
    assert published == PublishedPackage(name="demo-pkg", version="1.0.0",
                                         location=str(tmp_path / "feed" / built.name))
    assert Path(published.location).read_bytes() == built.read_bytes()
    assert feed.publish(built) == published
    assert feed.has(published) and feed.list_packages() == [published]
    assert not list((tmp_path / "feed").glob(".upload-*"))  # no half-written leftovers


def test_a_different_file_under_a_published_version_is_refused(tmp_path):
    feed = DirectoryPackageFeed(path=str(tmp_path / "feed"))
    feed.publish(wheel(tmp_path / "one"))
    original = (tmp_path / "feed" / "demo_pkg-1.0.0-py3-none-any.whl").read_bytes()
    with pytest.raises(PermanentError, match="already holds a different demo_pkg-1.0.0"):
        feed.publish(wheel(tmp_path / "two", body="x = 2\n"))
    assert (tmp_path / "feed" / "demo_pkg-1.0.0-py3-none-any.whl").read_bytes() == original
    replaced = DirectoryPackageFeed(path=str(tmp_path / "feed"), allow_overwrite=True).publish(
        wheel(tmp_path / "two", body="x = 2\n"))
    assert Path(replaced.location).read_bytes() == (tmp_path / "two" / "demo_pkg-1.0.0-py3-none-any.whl").read_bytes()


@pytest.mark.parametrize("name", ["demo.tar.gz", "demo-1.0.whl", "notes.txt"])
def test_only_wheels_are_accepted(tmp_path, name):
    (tmp_path / name).write_text("x")
    with pytest.raises(InvalidInput, match="not a wheel"):
        DirectoryPackageFeed(path=str(tmp_path / "feed")).publish(tmp_path / name)
    with pytest.raises(InvalidInput):
        wheel_name_and_version(name)


def test_the_pipeline_step_prints_what_it_published(tmp_path, capsys):
    built = wheel(tmp_path / "dist")
    assert main(["package", "--feed", str(tmp_path / "feed"), str(built)]) == 0
    out = capsys.readouterr().out
    assert '##delivery[published]{"kind": "package", "name": "demo-pkg", "version": "1.0.0"' in out


def test_the_pipeline_step_reports_refusals_on_one_line(tmp_path, capsys):
    feed = tmp_path / "feed"
    assert main(["package", "--feed", str(feed), str(wheel(tmp_path / "one"))]) == 0
    assert main(["package", "--feed", str(feed), str(wheel(tmp_path / "two", body="y = 2\n"))]) == 1
    assert "##[error] PermanentError: package feed" in capsys.readouterr().err
    assert main(["package", "--feed", "", str(wheel(tmp_path / "one"))]) == 1
    assert "set the PACKAGE_FEED variable" in capsys.readouterr().err


def test_a_feed_that_allows_overwrites_tells_the_pipeline_step(tmp_path, capsys, monkeypatch):
    feed = DirectoryPackageFeed(path=str(tmp_path / "feed"), allow_overwrite=True)
    variables = feed.pipeline_variables()
    assert variables == {"PACKAGE_FEED": str((tmp_path / "feed").resolve()), "PACKAGE_FEED_ALLOW_OVERWRITE": "true"}
    assert "PACKAGE_FEED_ALLOW_OVERWRITE" not in DirectoryPackageFeed(path=str(tmp_path)).pipeline_variables()
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(["package", "--feed", variables["PACKAGE_FEED"], str(wheel(tmp_path / "one"))]) == 0
    assert main(["package", "--feed", variables["PACKAGE_FEED"], str(wheel(tmp_path / "two", body="y\n"))]) == 0
    assert (tmp_path / "feed" / "demo_pkg-1.0.0-py3-none-any.whl").read_bytes() == (
        tmp_path / "two" / "demo_pkg-1.0.0-py3-none-any.whl").read_bytes()
