"""dive's efficiency, ported line by line to Python over ``tarfile``: the
independent computation ``Layer.analyze()`` is checked against.

A port of wagoodman/dive at d6c6919: ``dive/filetree/file_tree.go``
(``AddPath``, ``Stack``, ``StackTreeRange``, ``GetNode``),
``dive/filetree/file_node.go`` (``AddChild``, ``IsLeaf``, ``IsWhiteout``,
``Path``, ``VisitDepthChildFirst``), ``dive/filetree/efficiency.go``
(``Efficiency``), ``dive/image/analysis.go`` (``Analyze``) and
``dive/image/docker/image_archive.go`` (``getFileList``: every header, its
name cleaned). The trees are real node trees, as dive builds them, not the
flat maps lamina uses, so the two share no code and no data structure.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

WHITEOUT = ".wh."
DOUBLE_WHITEOUT = ".wh..wh.."


@dataclass
class Info:
    """dive's ``FileInfo``: what the efficiency looks at."""

    size: int = 0
    is_dir: bool = False


@dataclass
class Node:
    name: str
    parent: Node | None
    info: Info = field(default_factory=Info)
    children: dict[str, Node] = field(default_factory=dict)

    def path(self) -> str:
        names = []
        cur: Node | None = self
        while cur is not None and cur.parent is not None:
            name = cur.name
            if cur is self:
                # "white out prefixes are fictitious on leaf nodes"
                name = name.removeprefix(WHITEOUT)
            names.append(name)
            cur = cur.parent
        return ("/" + "/".join(reversed(names))).replace("//", "/")

    def is_whiteout(self) -> bool:
        return self.name.startswith(WHITEOUT)

    def is_leaf(self) -> bool:
        return not self.children

    def visit_child_first(self) -> Iterator[Node]:
        """``VisitDepthChildFirst``, iteratively, the root not visited."""
        stack: list[tuple[Node, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                if node.parent is not None:
                    yield node
                continue
            stack.append((node, True))
            for name in sorted(node.children, reverse=True):
                stack.append((node.children[name], False))

    def copy(self, parent: Node | None = None) -> Node:
        n = Node(self.name, parent, Info(self.info.size, self.info.is_dir))
        n.children = {k: c.copy(n) for k, c in self.children.items()}
        return n


class Tree:
    def __init__(self) -> None:
        self.root = Node("", None)

    def add_path(self, path: str, info: Info) -> None:
        path = posixpath.normpath(path)
        if path == ".":
            raise ValueError("cannot add relative path '.'")
        names = path.strip("/").split("/")
        node = self.root
        for i, name in enumerate(names):
            if not name:
                continue
            if name in node.children:
                node = node.children[name]
            else:
                if name.startswith(DOUBLE_WHITEOUT):
                    return
                child = Node(name, node)
                node.children[name] = child
                node = child
            if i == len(names) - 1:
                node.info = Info(info.size, info.is_dir)

    def get_node(self, path: str) -> Node | None:
        node = self.root
        for name in path.strip("/").split("/"):
            if not name:
                continue
            if name not in node.children:
                return None
            node = node.children[name]
        return node

    def remove_path(self, path: str) -> bool:
        node = self.get_node(path)
        if node is None or node.parent is None:
            return False
        del node.parent.children[node.name]
        return True

    def stack(self, upper: Tree) -> None:
        for node in upper.root.visit_child_first():
            if node.is_whiteout():
                self.remove_path(node.path())
            else:
                self.add_path(node.path(), node.info)

    def copy(self) -> Tree:
        t = Tree()
        t.root = self.root.copy()
        return t


def layer_tree(tar: str | os.PathLike[str]) -> tuple[Tree, int]:
    """A layer's tree and size (the sum of its headers' sizes)."""
    tree, size = Tree(), 0
    with tarfile.open(tar) as t:
        for m in t:
            name = posixpath.normpath(m.name)
            if name == ".":
                continue
            size += m.size
            tree.add_path(name, Info(m.size, m.isdir()))
    return tree, size


def stack_range(trees: list[Tree], start: int, stop: int) -> Tree:
    tree = trees[0].copy()
    for i in range(start, stop + 1):
        tree.stack(trees[i])
    return tree


@dataclass
class Data:
    cumulative: int = 0
    minimum: int = -1
    count: int = 0


@dataclass
class Result:
    efficiency: float
    wasted_bytes: int
    size_bytes: int
    user_size_bytes: int
    user_wasted_percent: float
    layer_sizes: list[int]
    inefficiencies: dict[str, tuple[int, int]]
    """path -> (count, cumulative bytes)"""


def analyze(tars: list[str | os.PathLike[str]], *, stop_at_missing: bool = True) -> Result:
    """dive's analysis of the layer tars, base first. ``stop_at_missing``:
    a whiteout of a path the stack below does not have ends the visit of
    its layer, as dive's visitor error does (lamina counts it 0 and goes
    on)."""
    built = [layer_tree(t) for t in tars]
    trees = [t for t, _ in built]
    data: dict[str, Data] = {}
    for idx, tree in enumerate(trees):
        for node in tree.root.visit_child_first():
            if not node.is_leaf():
                continue
            path = node.path()
            size = 0
            if node.is_whiteout():
                below = stack_range(trees, 0, idx - 1)
                prev = below.get_node(path)
                if prev is None:
                    if stop_at_missing:
                        break
                elif prev.info.is_dir:
                    # Its subtree, itself included (`VisitDepthChildFirst`).
                    size = sum(n.info.size for n in prev.visit_child_first())
            else:
                size = node.info.size
            d = data.setdefault(path, Data())
            d.cumulative += size
            if d.minimum < 0 or size < d.minimum:
                d.minimum = size
            d.count += 1
    minimum = sum(d.minimum for d in data.values())
    discovered = sum(d.cumulative for d in data.values())
    score = 1.0 if discovered == 0 else minimum / discovered
    ineff = {p: (d.count, d.cumulative) for p, d in data.items() if d.count >= 2}
    wasted = sum(b for _, b in ineff.values())
    sizes = [s for _, s in built]
    user = sum(sizes[1:])
    pct = 0.0 if wasted == 0 else (wasted / user if user else float("inf"))
    return Result(score, wasted, sum(sizes), user, pct, sizes, ineff)
