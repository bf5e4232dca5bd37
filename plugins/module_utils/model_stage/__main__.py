# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run the engine's command line: ``python3 <its directory> ...`` (as pods do) or ``python3 -m model_stage ...``."""

from __future__ import annotations

import importlib.util
import os
import sys


def _load_package():
    """The directory this file is in, imported as the package ``model_stage`` whatever the directory's name."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "model_stage", os.path.join(here, "__init__.py"), submodule_search_locations=[here]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules["model_stage"] = package
    spec.loader.exec_module(package)
    return package


if __name__ == "__main__":
    # Run as a directory there is no parent package, so relative imports need the package made first.
    raise SystemExit((_load_package() if not __package__ else sys.modules[__package__]).main())
