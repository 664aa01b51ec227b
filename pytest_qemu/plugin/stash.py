"""The keys under which the plugin keeps its state in pytest's stashes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_qemu.plugin.factory import VMFactory
    from pytest_qemu.plugin.session import QemuSession  # noqa: F401 - named in a string

#: The run's :class:`QemuSession` (in the config's stash).
session_key = pytest.StashKey["QemuSession"]()
#: The factories of a test's VMs (in the item's stash).
factories_key = pytest.StashKey[list["VMFactory"]]()
#: A test's reports so far, by phase ("setup", "call", "teardown").
reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()
#: The test pytest runs after this one in this process (None for the last).
next_item_key = pytest.StashKey["pytest.Item | None"]()
