"""Write the OpenAPI schema without starting a server: ``python -m app.openapi_export [openapi.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.main import create_app


def openapi_json() -> str:
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path("openapi.json")
    out.write_text(openapi_json())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
