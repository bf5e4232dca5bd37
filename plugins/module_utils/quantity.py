# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Kubernetes quantities (``32Gi``, ``500m``) and bytes in binary units: the one place they are parsed and written.

Standard library only: modules (the diagnosis), plugin_utils (preflight, sizing) and the docs use it. Transfer sizes
and rates in decimal units (``14.5 GB``) are the staging engine's own (``model_stage.format_si_bytes``).
"""

from __future__ import annotations

import math
import re
from typing import Any

_BINARY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5, "Ei": 1024**6}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
# A Kubernetes quantity: a signed decimal number, then a binary or decimal suffix or a decimal exponent.
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?$")


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity (``32Gi``, ``14.5G``, ``500m``, ``1e3``, ``4``) or a number, in base units.

    Raises ValueError for anything else, with the offending value in the message.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix, exponent = match.groups()
    if exponent is not None:
        return float(number) * 10 ** int(exponent)
    if suffix in _BINARY:
        return float(number) * _BINARY[suffix]
    return float(number) * _DECIMAL[suffix or ""]


def format_bytes(value: float) -> str:
    """Bytes in the binary units manifests use: ``20Gi``, ``13.5Gi``, ``512Mi``."""
    for unit in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        size = _BINARY[unit]
        if abs(value) >= size:
            amount = value / size
            return f"{amount:.0f}{unit}" if amount == int(amount) else f"{amount:.1f}{unit}"
    return f"{value:.0f}"


def ceil_gi(value: float) -> str:
    """The smallest whole number of GiB that holds ``value`` bytes, as a quantity (``14Gi``)."""
    return f"{max(1, math.ceil(value / _BINARY['Gi']))}Gi"
