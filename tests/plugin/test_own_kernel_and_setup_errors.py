"""A distribution kernel given as your own kernel, and how setup errors are reported
(once, without our frames; a forced KVM that does not work named at once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.guests.default import DefaultGuest
from pytest_qemu.guests.own import OwnBootFilesGuest
from pytest_qemu.platforms import get_platform
from pytest_qemu.platforms.kernel import find_host_kernel
from pytest_qemu.vm import accel


def test_a_setup_error_is_shown_once_without_our_frames(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def qemu_devices():
            return ["not a device"]

        def test_a(qemu_vm):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--qemu-accel=tcg")
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "During handling of the above exception" not in output
    errors = output.split("= ERRORS =", 1)[1].split("short test summary", 1)[0]
    assert errors.count("is not a pytest_qemu Device") == 1, errors
    assert "pytest_qemu/" not in errors


@pytest.mark.vm
def test_a_distribution_kernel_as_own_kernel_gets_its_modules(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    # Debian's own /boot/vmlinuz-*: virtio_console, 9p... are modules (=m) in it.
    kernel = find_host_kernel().image
    pytester.makepyfile(
        """
        def test_own_kernel(qemu_vm_factory, p9_dir):
            (p9_dir.directory / "hello").write_text("hi")
            vm = qemu_vm_factory(devices=[p9_dir])
            assert vm.check(f"cat {p9_dir.guest_path}/hello") == "hi"
            assert "virtio_console" in vm.check("cat /proc/modules")
        """
    )
    result = pytester.runpytest_subprocess(
        "--qemu-accel=tcg", f"--qemu-kernel={kernel}", "--qemu-boot-timeout=240"
    )
    result.assert_outcomes(passed=1)


def test_an_own_kernel_without_matching_modules_is_told_which_built_ins_it_needs(
    tmp_path: Path,
) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"\0" * 4096 + b"Linux version 9.9.9-no-such-release (x) #1 ")
    guest = OwnBootFilesGuest(DefaultGuest(BuildCache(tmp_path / "cache")), kernel, None)
    hint = guest.boot_timeout_hint
    assert "9.9.9-no-such-release" in hint
    assert "virtio_pci" in hint and "virtio_console" in hint and "built in" in hint
    assert "troubleshooting.md#a-distribution-kernel-as-own-kernel" in hint


def test_a_forced_kvm_that_does_not_work_fails_each_setup_at_once_naming_it(
    pytester: pytest.Pytester, isolated_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a host whose KVM hangs every guest (this project's own machine).
    verdict = accel.ProbeResult(False, "a test kernel printed nothing within 5 s under kvm")
    monkeypatch.setattr(accel, "probe_accelerator", lambda *args: verdict)
    pytester.makepyfile(
        """
        def test_a(qemu_vm):
            pass

        def test_b(qemu_vm_factory):
            pass
        """
    )
    result = pytester.runpytest("--qemu-accel=kvm", "--qemu-boot-timeout=600")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*accelerator: kvm (requested) — but KVM does not work here*",
            "*--qemu-accel=kvm was given, but KVM does not work on this host: a test kernel "
            "printed nothing within 5 s under kvm*troubleshooting.md#kvm-hangs-or-is-missing*",
        ]
    )
    assert result.duration < 120, "named at once, not after the boot timeout"


@pytest.mark.vm
def test_an_architectures_own_files_come_from_the_directory_given(
    pytester: pytest.Pytester, isolated_state: Path, tmp_path: Path
) -> None:
    # A host without apt: the user unpacked armhf's kernel, modules and busybox into a
    # directory of their own (here, from the packages the plugin downloads).
    armhf = get_platform("armhf")
    unpacked = armhf.system_root(default_cache_dir())
    own = tmp_path / "armhf-root"
    own.mkdir()
    for part in unpacked.iterdir():
        (own / part.name).symlink_to(part)
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parametrize("qemu_arch", ["armv7l"])
        def test_armhf(qemu_vm, qemu_arch):
            assert str(qemu_vm.spec.kernel).startswith({str(own)!r})
            assert qemu_vm.check("uname -m") == "armv7l\\n"
        """
    )
    result = pytester.runpytest_subprocess(
        "--qemu-accel=tcg", "--qemu-snapshots=off", f"--qemu-arch-files=armv7l={own}",
        "--qemu-boot-timeout=240",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
