"""Seed the fuzz corpora: the adversarial corpus of tests/unit (every case,
each a tar built to break out) and a few honest tars made by ``tarfile``.

Run from the repository root: ``.venv/bin/python fuzz/seed.py``.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path[:0] = [str(here.parent / "tests"), str(here.parent / "tests" / "unit")]

from test_adversarial import CASES  # noqa: E402

TARGETS = ("apply", "reassemble", "whiteouts", "reader")


def honest() -> list[bytes]:
    out = []
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
            for name, kind in (
                ("d", tarfile.DIRTYPE),
                ("d/f", tarfile.REGTYPE),
                ("d/l", tarfile.SYMTYPE),
                ("d/h", tarfile.LNKTYPE),
                ("d/.wh.gone", tarfile.REGTYPE),
                ("e/.wh..wh..opq", tarfile.REGTYPE),
                ("p", tarfile.FIFOTYPE),
            ):
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = {"d/l": "f", "d/h": "d/f"}.get(name, "")
                data = b"data" * 10 if name == "d/f" else b""
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        out.append(buf.getvalue())
    return out


def main() -> None:
    seeds = [make(b"/tmp/sentinel") for make, _ in CASES.values()] + honest()
    for target in TARGETS:
        d = here / "corpus" / target
        d.mkdir(parents=True, exist_ok=True)
        for s in seeds:
            if len(s) <= 1 << 20:
                (d / hashlib.sha1(s).hexdigest()).write_bytes(s)
    print(f"{len(seeds)} seeds for {', '.join(TARGETS)}")


if __name__ == "__main__":
    main()
