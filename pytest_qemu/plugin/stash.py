"""The keys under which the plugin keeps a test's state in pytest's item stashes (the run's
:class:`~pytest_qemu.plugin.session.QemuSession` is kept by its own class)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_qemu.plugin.factory import VMFactory

#: The factories of a test's VMs (in the item's stash).
factories_key = pytest.StashKey[list["VMFactory"]]()
#: A test's reports so far, by phase ("setup", "call", "teardown").
reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()
#: The test pytest runs after this one in this process (None for the last).
next_item_key = pytest.StashKey["pytest.Item | None"]()
