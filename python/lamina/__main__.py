"""``python -m lamina``: the command line."""

from lamina.cli import main

raise SystemExit(main())
