"""Tests for suites.data.imagefolder on real class-per-folder trees of Pillow-written images."""
import logging
import re

import pytest
import torch
from PIL import Image

from suites.data import imagefolder
from suites.data.imagefolder import ImageFolderError, load_imagefolder

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def _write(path, colour, size=(12, 9)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def tree(tmp_path):
    """3 classes written out of order: cat (2 PNG), dog (1 JPEG, 1 PNG), emu (3 PNG)."""
    root = tmp_path / "data"
    _write(root / "emu" / "b.png", COLOURS["emu"])
    _write(root / "emu" / "a.png", COLOURS["emu"])
    _write(root / "emu" / "c.PNG", COLOURS["emu"])
    _write(root / "cat" / "2.png", COLOURS["cat"])
    _write(root / "cat" / "1.png", COLOURS["cat"])
    _write(root / "dog" / "x.jpg", COLOURS["dog"])
    _write(root / "dog" / "y.png", COLOURS["dog"])
    return root


def test_loads_sorted_classes_and_files_with_labels_and_resized_rgb(tree):
    data = load_imagefolder(tree, 16)
    assert data["classes"] == ["cat", "dog", "emu"]
    assert data["files"] == ["cat/1.png", "cat/2.png", "dog/x.jpg", "dog/y.png",
                             "emu/a.png", "emu/b.png", "emu/c.PNG"]
    assert data["x"].dtype == torch.uint8 and data["x"].shape == (7, 16, 16, 3)
    assert data["y"].dtype == torch.int64 and data["y"].tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_pixel_colours_survive_loading(tree):
    data = load_imagefolder(tree, 8)
    for image, label, name in zip(data["x"], data["y"], data["files"]):
        colour = torch.tensor(COLOURS[data["classes"][label]])
        tolerance = 4 if name.endswith(".jpg") else 0  # JPEG is lossy
        assert (image.int() - colour).abs().max() <= tolerance, name


def test_grey_and_palette_images_become_rgb_and_wide_images_are_stretched(tmp_path):
    root = tmp_path / "data"
    root.joinpath("a").mkdir(parents=True)
    Image.new("L", (10, 10), 90).save(root / "a" / "grey.png")
    strip = Image.new("RGB", (40, 10), (255, 255, 255))
    strip.paste((0, 0, 0), (0, 0, 10, 10))  # black left quarter: a centre crop would lose it
    strip.convert("P").save(root / "a" / "strip.gif")
    _write(root / "b" / "one.bmp", (1, 2, 3))
    data = load_imagefolder(root, 8)
    assert data["x"][0].unique().tolist() == [90]
    stretched = data["x"][1]
    assert stretched[:, 0].max() == 0 and stretched[:, 3:].min() == 255
    assert data["x"][2, 0, 0].tolist() == [1, 2, 3]


def test_hidden_entries_and_non_image_files_are_ignored(tree):
    (tree / ".cache").mkdir()
    _write(tree / ".cache" / "thumb.png", (0, 0, 0))
    _write(tree / "cat" / ".hidden.png", (0, 0, 0))
    (tree / "cat" / "notes.txt").write_text("not an image")
    (tree / "README.md").write_text("a dataset")
    _write(tree / "dog" / "nested" / "deep.png", (0, 0, 0))
    data = load_imagefolder(tree, 8)
    assert data["classes"] == ["cat", "dog", "emu"]
    assert len(data["files"]) == 7 and not any("hidden" in f or "deep" in f for f in data["files"])


def test_missing_root_or_a_file_as_root_is_named(tmp_path):
    missing = re.escape(str(tmp_path / "no"))
    with pytest.raises(ImageFolderError, match=missing + " does not exist.*<class name>"):
        load_imagefolder(tmp_path / "no", 8)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageFolderError, match="is not a folder"):
        load_imagefolder(tmp_path / "file", 8)


def test_no_class_folders_or_a_single_class_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="empty has no class sub-folders"):
        load_imagefolder(tmp_path / "empty", 8)
    _write(tmp_path / "one" / "cat" / "a.png", (1, 1, 1))
    with pytest.raises(ImageFolderError, match=r"only one class folder \('cat'\)"):
        load_imagefolder(tmp_path / "one", 8)


def test_class_folder_without_images_is_named(tree):
    (tree / "fox").mkdir()
    (tree / "fox" / "labels.csv").write_text("a,b")
    with pytest.raises(ImageFolderError,
                       match=r"class folder .*fox has no images \(looked for .png, .jpg"):
        load_imagefolder(tree, 8)


def test_loose_image_in_root_is_named(tree):
    _write(tree / "stray.jpg", (5, 5, 5))
    with pytest.raises(ImageFolderError, match="stray.jpg lies directly in the dataset folder"):
        load_imagefolder(tree, 8)


def test_corrupt_image_names_the_file_and_pillows_message(tree):
    (tree / "dog" / "x.png").write_bytes(b"this is not a png at all")
    with pytest.raises(ImageFolderError, match=r"Pillow cannot read image .*dog/x.png: cannot identify"):
        load_imagefolder(tree, 8)


@pytest.mark.parametrize("size", [7, 0, 16.0, "32", True, None])
def test_size_must_be_an_integer_of_at_least_8(tree, size):
    with pytest.raises(ImageFolderError, match="at least 8 pixels, got %r" % (size,)):
        load_imagefolder(tree, size)


def test_progress_is_logged_every_few_hundred_images(tree, caplog, monkeypatch):
    monkeypatch.setattr(imagefolder, "PROGRESS_EVERY", 3)
    with caplog.at_level(logging.INFO, logger="odt_bench.data"):
        load_imagefolder(tree, 8)
    assert [r.getMessage().split(" from ")[0] for r in caplog.records] == [
        "loaded 3 of 7 images", "loaded 6 of 7 images"]
