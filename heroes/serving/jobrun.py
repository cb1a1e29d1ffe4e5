"""One triage job in a process of its own: ``python -m heroes.serving.jobrun EVIDENCE CASE``.

The same pass as ``heroes triage`` (:func:`heroes.pipeline.runner.triage`) with the server's
settings, read as JSON from stdin (empty: from the environment); the run summary is printed as one
JSON line at the end. A separate process keeps a
crash or the Ray engine's start-up out of the server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from heroes.config import Settings
    from heroes.pipeline.runner import triage

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m heroes.serving.jobrun EVIDENCE CASE", file=sys.stderr)
        return 2
    text = sys.stdin.read() if not sys.stdin.isatty() else ""
    settings = Settings.model_validate_json(text) if text.strip() else Settings()
    summary = triage(Path(args[0]), Path(args[1]), settings=settings)
    print(json.dumps(summary.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
