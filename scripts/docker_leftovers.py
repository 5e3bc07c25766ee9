"""Is a Docker data root (default /var/lib/docker) provably lamina's leftover?

Before the project had an engine of its own, the tests started the system's
dockerd (default data root) to build their fixture images. That store can be
removed only when nothing in it can be anyone else's: every tagged image is a
``lamina-test-*`` image, every other image is an ancestor of one (the legacy
builder's intermediate images), every layer on disk belongs to those images,
and there are no containers, volumes, plugins, swarm state, other graph
drivers or BuildKit/containerd content. Run it only when no dockerd uses the
data root. Exit 0 and "ours" when provable; exit 1 and the first reason not.
Only the standard library: fresh-check runs it before any venv exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def _files(d: Path) -> list[Path]:
    return [Path(r, f) for r, _, fs in os.walk(d) for f in fs] if d.exists() else []


def _entries(d: Path) -> list[str]:
    return sorted(os.listdir(d)) if d.exists() else []


def _chain_ids(diff_ids: list[str]) -> list[str]:
    # OCI ChainID: chain(n) = sha256(chain(n-1) + " " + diff_id(n)).
    chain: list[str] = []
    for d in diff_ids:
        chain.append(
            d if not chain else "sha256:" + hashlib.sha256(f"{chain[-1]} {d}".encode()).hexdigest()
        )
    return [c.split(":", 1)[1] for c in chain]


def why_not_ours(root: Path) -> str | None:
    """None when the store is provably the tests' own leftover, else why not."""
    if not (root / "image").exists():
        return f"{root}/image missing: not a Docker data root this script knows"
    if _entries(root / "image") != ["overlay2"]:
        return f"image stores other than overlay2: {_entries(root / 'image')}"
    store = root / "image/overlay2"
    repos = json.loads((store / "repositories.json").read_text()).get("Repositories", {})
    tagged = {ref: img for refs in repos.values() for ref, img in refs.items()}
    foreign = sorted(ref for ref in tagged if not ref.startswith("lamina-test-"))
    if foreign:
        return f"images not made by lamina's tests: {foreign}"
    # Every image must be tagged lamina-test-* or an ancestor of one.
    ours: set[str] = set()
    for img in tagged.values():
        hexid = img.split(":", 1)[1]
        while hexid and hexid not in ours:
            ours.add(hexid)
            parent = store / "imagedb/metadata/sha256" / hexid / "parent"
            hexid = parent.read_text().split(":", 1)[1].strip() if parent.exists() else ""
    images = set(_entries(store / "imagedb/content/sha256"))
    if images - ours:
        return f"images that are no lamina-test-* image's ancestors: {sorted(images - ours)}"
    chains: set[str] = set()
    for img in images:
        config = json.loads((store / "imagedb/content/sha256" / img).read_text())
        chains.update(_chain_ids(config.get("rootfs", {}).get("diff_ids", [])))
    layers = set(_entries(store / "layerdb/sha256"))
    if layers - chains:
        return f"layers no image of ours uses: {sorted(layers - chains)}"
    cache_ids = {(store / "layerdb/sha256" / c / "cache-id").read_text().strip() for c in layers}
    on_disk = set(_entries(root / "overlay2")) - {"l"}
    if on_disk - cache_ids:
        return f"overlay2 dirs no image of ours uses: {sorted(on_disk - cache_ids)}"
    for sub in ("containers", "image/overlay2/layerdb/mounts", "swarm", "plugins/tmp"):
        if _entries(root / sub):
            return f"{root / sub} is not empty"
    if set(_entries(root / "volumes")) - {"metadata.db", "backingFsBlockDev"}:
        return "volumes exist"
    if _entries(root / "plugins/storage/ingest") or _files(root / "plugins/storage/blobs"):
        return "plugins exist"
    for content in ("buildkit/content", "containerd/daemon/io.containerd.content.v1.content"):
        if _files(root / content):
            return f"content under {root / content}"
    for snap in (root / "containerd/daemon").glob("io.containerd.snapshotter.v1.*/snapshots"):
        if _entries(snap):
            return f"snapshots under {snap}"
    drivers = {"aufs", "btrfs", "devicemapper", "fuse-overlayfs", "vfs", "zfs", "overlay"}
    present = sorted(d for d in drivers if (root / d).exists())
    if present:
        return f"other graph drivers' dirs: {present}"
    return None


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/var/lib/docker")
    try:
        reason = why_not_ours(root)
    except (OSError, ValueError, KeyError, IndexError) as e:
        reason = f"cannot read it ({e})"
    print("ours" if reason is None else reason)
    return 0 if reason is None else 1


if __name__ == "__main__":
    sys.exit(main())
