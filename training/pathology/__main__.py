"""``python -m training.pathology {prepare,train,evaluate,export} ...``"""

from __future__ import annotations

from training.pathology.cli import main

raise SystemExit(main())
