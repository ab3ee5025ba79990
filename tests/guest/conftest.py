"""tests/guest runs only inside the qemu guest (RL_GUEST=1); the host suite does not collect it.

tests/test_quotas_vm.py reports each in-guest test on the host instead.
"""

import os

if os.environ.get("RL_GUEST") != "1":
    collect_ignore_glob = ["test_*.py"]
