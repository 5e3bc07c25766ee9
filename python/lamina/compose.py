"""Image-level calls composed of public ones: ``Graph.squash``,
``Graph.diff_images``, ``Layer.find`` / ``Image.find`` (bound as methods by
``src/python/compose.rs``)."""

from __future__ import annotations

import copy
import datetime
import fnmatch
import os
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina._lamina import Change, Entry, Graph, Image, Layer


def _image(graph: Graph, ref: Image | str) -> Image:
    from lamina._lamina import Image

    if isinstance(ref, str):
        return graph.image(ref)
    if not isinstance(ref, Image):
        raise TypeError(f"an image reference is an Image or a name (str), not {type(ref).__name__}")
    return ref


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Counted:
    """A binary writer that reports the bytes written through it to a
    progress callback as the first phase of one layer (total not known),
    every :data:`_STEP` bytes, as the native calls do."""

    def __init__(self, raw: Any, progress: Any) -> None:
        self.raw, self.progress, self.done = raw, progress, 0

    def write(self, data: bytes) -> int:
        n = self.raw.write(data)
        before, self.done = self.done, self.done + len(data)
        if before // _STEP != self.done // _STEP:
            self.progress(self.done, 0, 0, 1)
        return int(n)


_STEP = 4 << 20


def squash(graph: Graph, image: Image | str, name: str, *, progress: Any = None) -> Image:
    """``image`` as one layer (its merged tree, exported whole) named
    ``name``; the config is kept, ``rootfs.diff_ids`` is the one layer's and
    the history collapses to one entry, as ``buildah commit --squash``
    leaves it. ``progress`` counts as ``Graph.commit`` does: the tar's
    bytes as it is exported, then from 0 again as it is registered."""
    from lamina._lamina import export_diff

    img = _image(graph, image)
    config = copy.deepcopy(img.config)
    with tempfile.TemporaryDirectory(dir=os.path.join(graph.root, "tmp")) as tmp:
        tar = os.path.join(tmp, "layer.tar")
        with img.layer.mounted() as root:
            if progress is None:
                export_diff(None, root, tar)
            else:
                progress(0, 0, 0, 1)
                with open(tar, "wb") as f:
                    export_diff(None, root, _Counted(f, progress))
        layer = graph.register(tar, progress=progress)
    created = _created()
    config.pop("rootfs", None)
    config["history"] = [{"created": created, "created_by": f"lamina squash {img.name}"}]
    config["created"] = created
    return graph.tag(layer, name, config=config)


def diff_images(
    graph: Graph, a: Image | str, b: Image | str, *, progress: Any = None
) -> list[Change]:
    """The changes that turn ``a``'s merged tree into ``b``'s, as
    ``docker diff`` lists them: only the paths the layers the two do not
    share touch are looked up in their merged views, nothing mounted
    (``src/view/image_diff.rs``); ``progress`` counts those layers."""
    from lamina._lamina import _diff_images

    ia, ib = _image(graph, a), _image(graph, b)
    return _diff_images(ia, ib, progress=progress)


def find(layer: Layer, pattern: str) -> list[Entry]:
    """The entries of ``layer``'s merged view whose path matches the glob
    ``pattern`` (``fnmatch``: ``*`` crosses ``/``; a pattern without a
    leading ``/`` matches any tail of a path), each naming its layer."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern is a str, not {type(pattern).__name__}")
    if pattern.startswith("/"):
        return [e for e in layer.walk() if fnmatch.fnmatchcase(e.path, pattern)]
    # A relative pattern matches a tail of a path, never the root itself.
    pat = "*/" + pattern
    return [e for e in layer.walk() if e.path != "/" and fnmatch.fnmatchcase(e.path, pat)]
