"""Export ``openapi.json`` from the app (no server needed) and generate a typed Python client from it.

    pip install openapi-python-client && python clients/generate.py [--out clients/python]

The client then reads: ``estimate_age.sync(client=Client(base_url), body=BodyEstimateAge(file=File(...)))``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def generate(out: Path, schema: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from app.openapi_export import openapi_json

    schema.write_text(openapi_json())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    beside = Path(sys.executable).parent / "openapi-python-client"  # the venv's own, even when not activated
    exe = str(beside) if beside.exists() else shutil.which("openapi-python-client")
    if exe is None:
        raise SystemExit("openapi-python-client is not installed: pip install openapi-python-client")
    subprocess.run(
        [
            exe,
            "generate",
            "--path",
            str(schema),
            "--config",
            str(HERE / "openapi-python-client.yml"),
            "--meta",
            "setup",
            "--output-path",
            str(out / "daa-age-client"),
        ],
        check=True,
    )
    return out / "daa-age-client"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "python")
    p.add_argument("--schema", type=Path, default=ROOT / "openapi.json")
    args = p.parse_args()
    print(f"generated {generate(args.out, args.schema)}")


if __name__ == "__main__":
    main()
