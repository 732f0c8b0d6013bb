"""A user's image dataset laid out as one folder per class, loaded into tensors (host side).

Layout: ``root/<class name>/<image files>``. Classes are the sub-folders sorted by name and the
label of a class is its position in that order; files are sorted by name within each class, so the
result does not depend on the file system's listing order. Entries whose name starts with "." are
ignored, and so are files without an image suffix and folders nested inside a class folder.

Every image is converted to RGB and resized to ``size`` x ``size`` with bilinear resampling: the
whole image is stretched, there is no aspect-preserving crop, so non-square images are distorted.
"""
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp", ".tif", ".tiff")
MIN_SIZE = 8
PROGRESS_EVERY = 500
LAYOUT = "put each class's images in its own sub-folder: <root>/<class name>/<image files>"

log = logging.getLogger("odt_bench.data")


class ImageFolderError(ValueError):
    """The folder is not a usable class-per-folder dataset; the message names the path and the fix."""


def _visible(folder):
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _is_image(path):
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _class_folders(root):
    if not root.exists():
        raise ImageFolderError("dataset folder %s does not exist; %s" % (root, LAYOUT))
    if not root.is_dir():
        raise ImageFolderError("dataset path %s is not a folder; %s" % (root, LAYOUT))
    entries = _visible(root)
    loose = [p for p in entries if _is_image(p)]
    if loose:
        raise ImageFolderError("image %s lies directly in the dataset folder, outside any class "
                               "folder; %s" % (loose[0], LAYOUT))
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise ImageFolderError("dataset folder %s has no class sub-folders; %s" % (root, LAYOUT))
    if len(folders) < 2:
        raise ImageFolderError("dataset folder %s has only one class folder (%r); add a folder for "
                               "each further class (at least 2)" % (root, folders[0].name))
    return folders


def _list_images(root):
    """``(class names, [(relative path, label)])`` in the documented order."""
    folders = _class_folders(root)
    files = []
    for label, folder in enumerate(folders):
        images = [p for p in _visible(folder) if _is_image(p)]
        if not images:
            raise ImageFolderError("class folder %s has no images (looked for %s)"
                                   % (folder, ", ".join(IMAGE_SUFFIXES)))
        files += [(p.relative_to(root), label) for p in images]
    return [f.name for f in folders], files


def _read(path, size):
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageFolderError("Pillow cannot read image %s: %s" % (path, exc)) from exc
    return torch.from_numpy(np.array(rgb))


def load_imagefolder(root, size):
    """``{"x": uint8 N x size x size x 3, "y": int64 N, "classes": names, "files": relative paths}``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise ImageFolderError("image size must be an integer of at least %d pixels, got %r"
                               % (MIN_SIZE, size))
    root = Path(root)
    classes, files = _list_images(root)
    x = torch.empty((len(files), size, size, 3), dtype=torch.uint8)
    for i, (relative, _) in enumerate(files):
        x[i] = _read(root / relative, size)
        if (i + 1) % PROGRESS_EVERY == 0:
            log.info("loaded %d of %d images from %s", i + 1, len(files), root)
    return {"x": x, "y": torch.tensor([label for _, label in files], dtype=torch.int64),
            "classes": classes, "files": [relative.as_posix() for relative, _ in files]}
