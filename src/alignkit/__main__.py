"""``python -m alignkit``: the same as the ``alignkit`` command."""

from alignkit.cli import main

raise SystemExit(main())
