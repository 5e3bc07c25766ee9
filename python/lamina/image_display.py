"""``Image._repr_html_``: an image's config, history and layers (notebooks)."""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING

from lamina.display import FONT, _table, human, short

if TYPE_CHECKING:
    from lamina._lamina import Image

#: The config keys shown, in ``docker inspect``'s order.
CONFIG_KEYS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
)


def image_html(image: Image) -> str:
    config = image.config
    c = config.get("config") or {}
    head = (
        f"<div style='{FONT}'><b>lamina.Image</b> {escape(image.name)} "
        f"{escape(image.digest[:19])} ({len(image.layers)} layers, "
        f"{escape(str(config.get('os', '')))}/{escape(str(config.get('architecture', '')))})</div>"
    )
    rows = [
        [escape(k), f"<code>{escape(json.dumps(c[k]))}</code>"]
        for k in CONFIG_KEYS
        if c.get(k) not in (None, "", [], {})
    ]
    history = [
        [
            escape(str(h.get("created", ""))),
            escape(str(h.get("created_by", ""))),
            escape(str(h.get("author", ""))),
            escape(str(h.get("comment", ""))),
            "" if h.get("empty_layer") else "layer",
        ]
        for h in image.history
    ]
    layers = [
        [escape(short(lay.id)), human(lay.size), escape(lay.diff_id or "")] for lay in image.layers
    ]
    parts = [head]
    parts.append(f"<div style='{FONT}'><b>config</b></div>")
    parts.append(_table(["key", "value"], rows) if rows else f"<div style='{FONT}'>(empty)</div>")
    parts.append(f"<div style='{FONT}'><b>history</b></div>")
    parts.append(
        _table(["created", "created by", "author", "comment", ""], history)
        if history
        else f"<div style='{FONT}'>(none)</div>"
    )
    parts.append(f"<div style='{FONT}'><b>layers</b> (base first)</div>")
    parts.append(_table(["layer", "size", "diff id"], layers))
    return "".join(parts)
