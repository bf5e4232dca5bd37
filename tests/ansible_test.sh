#!/usr/bin/env bash
# Run ansible-test from a copy of this checkout laid out as ansible_collections/llmops/vllm.
# Usage: tests/ansible_test.sh sanity|units [extra ansible-test arguments...]
#
# Why a copy: ansible-test finds the collection from the *resolved* working directory, so the symlink that
# `make collection` creates (.build/collections/ansible_collections/llmops/vllm -> checkout) is refused with
# 'No "ansible_collections" parent directory was found'. Nobody has to move the clone: the files git knows
# about (tracked, plus untracked ones that .gitignore does not exclude) are copied afresh on every run into
# .build/ansible-test/<sanity|units>/ansible_collections/llmops/vllm, and ansible-test runs there (results
# under tests/output of that copy). The collections it depends on are linked beside it, which is where
# ansible-test looks for them.
#
# No Docker: everything runs with --local on the Python of .venv (3.11). Sanity tests create their own pinned
# virtual environments under ~/.ansible/test/venv (PyPI on the first run, cached afterwards). Unit tests run
# in .venv itself because some of them drive the `ansible` CLI; --requirements lets ansible-test add what its
# pytest invocation needs (pytest-xdist, pytest-mock, mock) when they are missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv_bin="${VENV_BIN:-$root/.venv/bin}"
python_version="${ANSIBLE_TEST_PYTHON:-3.11}"

die() { echo "ansible_test: error: $*" >&2; exit 2; }
[[ -x "$venv_bin/ansible-test" ]] || die "$venv_bin/ansible-test not found; run 'make venv' first"

command="${1:-}"
[[ "$command" == sanity || "$command" == units ]] || die "usage: $0 sanity|units [ansible-test args...]"
shift
layout="$root/.build/ansible-test/$command/ansible_collections"
dest="$layout/llmops/vllm"

# Two runs of the same command in one checkout would delete each other's copy mid-run: the second one waits.
mkdir -p "$root/.build/ansible-test"
exec 9>"$root/.build/ansible-test/$command.lock"
flock -n 9 || { echo "ansible_test: waiting for another '$command' run in this checkout" >&2; flock 9; }

copy_collection() {
  rm -rf "$dest"
  mkdir -p "$dest"
  cd "$root"
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Deleted-but-not-yet-committed files are listed by git; skip what is not on disk.
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"; done |
      tar --null --no-recursion -T - -cf - | tar -xf - -C "$dest"
  else
    # An unpacked tarball or a copy without git: everything but build output and caches.
    tar --exclude=./.git --exclude=./.venv --exclude=./.build --exclude='*/__pycache__' \
        --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude=./tests/output -cf - . | tar -xf - -C "$dest"
  fi
}

# ansible-test bootstraps pip into its sanity virtualenvs with get-pip.py from ci-files.testing.ansible.com,
# which is out of reach here; it looks for the script in its cache first, so a stand-in goes there.
install_pip_bootstrap() {
  local version cache
  version="$("$venv_bin/python" -c 'from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version="'"$python_version"'"))["pip"])')"
  cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
  [[ -f "$cache" ]] && return 0
  mkdir -p "$(dirname "$cache")"
  cp "$root/tests/sanity/get_pip_bootstrap.py" "$cache"
}

# kubernetes.core (galaxy.yml dependency) and ansible.posix (json callback used by unit tests) as installed
# with the `ansible` package; ansible-test only sees collections in the same ansible_collections tree.
link_dependencies() {
  local site
  site="$("$venv_bin/python" -c 'import ansible_collections; print(list(ansible_collections.__path__)[0])')"
  for dep in kubernetes/core ansible/posix; do
    [[ -d "$site/$dep" ]] || die "collection ${dep/\//.} not found under $site"
    mkdir -p "$layout/${dep%/*}"
    ln -sfn "$site/$dep" "$layout/$dep"
  done
}

install_pip_bootstrap
copy_collection
link_dependencies
cd "$dest"
# ansible-test lists content with git when it finds a .git on the way up; the outer checkout's .git (which
# ignores .build/) would hide every file of the copy, so the copy gets its own, empty repository.
git init -q . && git config user.email ansible-test@localhost && git config user.name ansible-test
export PATH="$venv_bin:$PATH"
# ansible-test warns about (and some checks depend on) the locale; C.UTF-8 is what this machine has.
export LC_ALL="${LC_ALL:-C.UTF-8}"

case "$command" in
  sanity)
    # Every sanity test ansible-test has for collections; those needing a tool this machine lacks (pwsh for
    # pslint, shellcheck) are reported as skipped by ansible-test itself.
    exec ansible-test sanity --local --python "$python_version" --color no "$@"
    ;;
  units)
    # tests/conftest.py exists for plain pytest runs: it links the checkout as the collection and prepends
    # that link to ANSIBLE_COLLECTIONS_PATH. Here the layout already is the collection, and the changed
    # variable breaks ansible-test's collection plugin in the xdist workers ('File ... not found in collection
    # path'), so the copy does without it; ansible-test points ANSIBLE_COLLECTIONS_PATH at this layout itself.
    rm -f tests/conftest.py
    rm -rf tests/output/junit
    # ansible-test treats pytest's "no tests ran" (exit 5) as success, and a conftest that fails to import
    # in every xdist worker ends that way: read the JUnit report and fail unless tests ran and all passed.
    ansible-test units --local --python "$python_version" --color no --requirements "$@"
    "$venv_bin/python" - tests/output/junit <<'PY'
import pathlib
import sys
import xml.etree.ElementTree as ET

reports = sorted(pathlib.Path(sys.argv[1]).glob("*-units.xml"))
totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for report in reports:
    root = ET.parse(report).getroot()
    for suite in root.iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
print("ansible-test units: {tests} tests, {failures} failures, {errors} errors, {skipped} skipped".format(**totals))
if not reports or totals["tests"] == 0 or totals["failures"] or totals["errors"]:
    sys.exit("ansible-test units: no tests ran or some failed (reports: %s)" % [str(r) for r in reports])
PY
    ;;
esac
