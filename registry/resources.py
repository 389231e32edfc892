"""Folders shipped beside the code: inside the wheel, or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path

import registry

_PACKAGE = Path(registry.__file__).resolve().parent


def resource_dir(checkout_path: str, packaged_name: str, marker: str) -> Path:
    """``packaged_name`` inside the installed package, else ``checkout_path`` in the source tree.

    ``marker`` is a file that proves the folder is the right one.
    """
    for candidate in (_PACKAGE / packaged_name, _PACKAGE.parent / checkout_path):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(f"{checkout_path} not found beside {_PACKAGE}")
