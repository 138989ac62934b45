"""``python -m gateway`` behaves as the ``jwksgate`` command."""

from __future__ import annotations

import sys

from gateway.cli import main

sys.exit(main())
