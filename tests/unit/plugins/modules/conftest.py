"""Module tests drive the real `ansible` CLI in subprocesses.

ansible-test units points PYTHONPATH at a stub `ansible` package for the test process; a child `ansible`
must import the real one, so the variable is dropped for everything these tests start.
"""

from __future__ import annotations

import os

os.environ.pop("PYTHONPATH", None)
