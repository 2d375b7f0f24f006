"""Strip outputs, execution counts and editor metadata from stored notebooks.

    python tools/clean_notebooks.py            # every notebook under notebooks/
    python tools/clean_notebooks.py FILE ...

The course stores notebooks without outputs: every figure is re-computed when
the notebook runs, and a test enforces it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}
# Colab reads these: a notebook that trains opens on a GPU runtime (T4) from its badge.
COLAB_GPU = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


def clean(path: Path) -> bool:
    original = path.read_text()
    notebook = json.loads(original)
    gpu = notebook.get("metadata", {}).get("accelerator") == "GPU"
    notebook["metadata"] = {"kernelspec": KERNEL, "language_info": {"name": "python"}} | (COLAB_GPU if gpu else {})
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if text != original:
        path.write_text(text)
    return text != original


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").rglob("*.ipynb"))
    for path in paths:
        if clean(path):
            print(f"cleaned {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
