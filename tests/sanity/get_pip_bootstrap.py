"""Stand-in for pip's get-pip.py, which ansible-test runs to put pip into each sanity-test virtualenv.

ansible-test downloads get-pip.py from ci-files.testing.ansible.com, a host this project's CI cannot reach;
its error message says to save the script under ~/.ansible/test/cache/get_pip_<version>.py instead, and
tests/ansible_test.sh puts this file there. It does what get-pip.py does with the same arguments — install
the exact pip version ansible-test asks for (``pip==24.2`` ...) — starting from the pip wheel that ships with
Python (ensurepip) instead of one embedded in the script; the pinned version then comes from PyPI.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

# get-pip.py's own switches; pip install does not know them (setuptools and wheel are not wanted anyway).
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    """Install the bundled pip, then pip install the packages ansible-test asked for."""
    # ensurepip points PIP_CONFIG_FILE at /dev/null for good; pip's own config (a proxy's CA bundle, an
    # index mirror) must still apply to the real install.
    env = dict(os.environ)
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args], env=env)


if __name__ == "__main__":
    main()
