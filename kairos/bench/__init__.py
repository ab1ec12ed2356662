"""``kairos bench …``: benchmark commands that print JSON.

Each module in this package that defines ``register(app: typer.Typer) -> None`` adds its
command(s) to the ``bench`` group; :func:`bench_app` collects them, so adding a benchmark is adding
a module. Benchmarks compare against baselines measured in the same run (machines are noisy).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from typing import Any

import typer


def bench_app() -> typer.Typer:
    app = typer.Typer(help="Benchmarks (JSON on stdout; record results in docs/BENCHMARKS.md).",
                      no_args_is_help=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)
    return app


def emit(result: dict[str, Any]) -> None:
    """Print a benchmark result: JSON on stdout (progress and logs go to stderr)."""
    text = json.dumps(result, indent=2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
