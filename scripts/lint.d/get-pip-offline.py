"""Stand-in for the pip bootstrap script ansible-test downloads (ci-files.testing.ansible.com is
unreachable here). ansible-test runs it inside each new sanity virtual environment with pip's
options and the pinned packages (e.g. pip==24.2); this installs the Python's own bundled pip
(ensurepip, offline), then lets it install the packages from the configured package index.
scripts/lint.sh copies it to ~/.ansible/test/cache/get_pip_<version>.py."""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])
