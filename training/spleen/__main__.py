"""``python -m training.spleen {prepare,train,evaluate,export} ...``"""

from __future__ import annotations

from training.spleen.cli import main

raise SystemExit(main())
