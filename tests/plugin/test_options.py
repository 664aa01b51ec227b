"""The plugin as a user meets it before any VM boots: fixtures, options, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import small_tmpfs

FIXTURES = (
    "qemu_vm",
    "qemu_vm_factory",
    "qemu_session_vm_factory",
    "qemu_devices",
    "qemu_arch",
    "qemu_network",
    "p9_dir",
    "fat_dir",
)


def test_fixtures_are_listed_with_their_docstrings(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    output = result.stdout.str()
    for name in FIXTURES:
        assert re.search(rf"^{name}( \[session scope\])? -- ", output, re.M), name
    assert "no docstring available" not in output.split("pytest_qemu")[1].split("xdist")[0]


def test_options_are_documented_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    for option in (
        "--qemu-binary",
        "--qemu-kernel",
        "--qemu-accel",
        "--qemu-memory",
        "--qemu-boot-timeout",
        "--qemu-arch",
        "--qemu-userland",
    ):
        result.stdout.fnmatch_lines([f"*{option}*"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--qemu-memory=lots"], "*--qemu-memory 'lots' is not a number*"),
        (["--qemu-boot-timeout=-3"], "*--qemu-boot-timeout '-3' must be greater than zero*"),
        (["--qemu-accel=hvf"], "*--qemu-accel 'hvf' is not one of*"),
        (["--qemu-arch=sparc64"], "*architecture 'sparc64' is not supported: use one of*"),
        (["--qemu-userland=alpine"], "*--qemu-userland 'alpine' is not one of*"),
        (["--qemu-kernel=/no/such/vmlinuz"], "*--qemu-kernel '/no/such/vmlinuz': no such file*"),
        (["--qemu-memory=8"], "*--qemu-memory 8 MiB is far too small*"),
        (["--qemu-arch-files=i386"], "*--qemu-arch-files 'i386' is not ARCH=DIR*"),
        (["--qemu-arch-files=sparc=/tmp"], "*architecture 'sparc' is not supported: use one of*"),
        (["--qemu-arch-files=i686=/no/such"], "*'i686=/no/such': /no/such is not a directory*"),
        (["--qemu-kernel-args=x='a\nb'"], "*--qemu-kernel-args * argument 'x=a\\nb'*control*"),
        (["--qemu-boot-timeout=nan"], "*--qemu-boot-timeout 'nan' is not a finite number*"),
        (["--qemu-boot-timeout=inf"], "*--qemu-boot-timeout 'inf' is not a finite number*"),
        (["--qemu-memory=nan"], "*--qemu-memory 'nan' is not a number*"),
        (
            ["--qemu-log-dir=/proc/version/logs"],
            "*--qemu-log-dir '/proc/version/logs' is not a writable directory*",
        ),
    ],
)
def test_bad_options_are_usage_errors(
    pytester: pytest.Pytester, arguments: list[str], message: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess(*arguments)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize("option", ["--qemu-kernel-args=a'b", '--qemu-kernel-args="x'])
def test_unbalanced_quotes_in_kernel_args_are_a_usage_error(
    pytester: pytest.Pytester, option: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    value = option.split("=", 1)[1]
    result.stderr.fnmatch_lines([f"*--qemu-kernel-args {value!r} cannot be split*quote*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_a_cache_dir_that_cannot_be_created_is_a_usage_error(pytester: pytest.Pytester) -> None:
    blocker = pytester.path / "a-file"
    blocker.write_text("not a directory")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess(f"--qemu-cache-dir={blocker}/cache")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--qemu-cache-dir '{blocker}/cache' is not a writable directory*Not a directory*"]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize("variable", ["PYTEST_QEMU_CACHE_DIR", "XDG_CACHE_HOME"])
def test_a_cache_dir_from_the_environment_that_is_a_file_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    blocker = pytester.path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.delenv("PYTEST_QEMU_CACHE_DIR", raising=False)
    monkeypatch.setenv(variable, str(blocker))
    pytester.makepyfile("def test_vm(qemu_vm): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*cache directory '{blocker}*' (from {variable}) cannot be used: {blocker} is not a "
         "directory*--qemu-cache-dir*"]
    )  # fmt: skip
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_a_read_only_cache_dir_from_the_environment_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_tmpfs(pytester.path / "ro", size_kib=64, read_only=True) as read_only:
        monkeypatch.setenv("PYTEST_QEMU_CACHE_DIR", str(read_only / "cache"))
        pytester.makepyfile("def test_vm(qemu_vm): pass")
        result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*(from PYTEST_QEMU_CACHE_DIR)*{read_only} is not writable*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_the_cache_dir_is_created(pytester: pytest.Pytester) -> None:
    cache = pytester.path / "new" / "cache"
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess(f"--qemu-cache-dir={cache}", "--qemu-accel=tcg")
    result.assert_outcomes(passed=1)
    assert cache.is_dir()


def test_ini_options_are_read(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nqemu_memory = 384\nqemu_accel = tcg\n")
    pytester.makepyfile(
        """
        def test_settings(qemu_settings):
            assert qemu_settings.memory == 384
            assert qemu_settings.accel == "tcg"
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_missing_qemu_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_vm(qemu_vm): pass")
    result = pytester.runpytest_subprocess(
        "--qemu-binary=/nonexistent/qemu-system-x86_64", "--qemu-accel=tcg"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*'/nonexistent/qemu-system-x86_64' was not found*apt-get install qemu-system-x86*"]
    )
    assert "resolved_binary" not in result.stdout.str()


def test_missing_qemu_under_auto_is_a_test_error_not_an_internal_error(
    pytester: pytest.Pytester,
) -> None:
    # The header's accelerator probe needs QEMU too: it must not turn into an INTERNALERROR.
    pytester.makepyfile("def test_vm(qemu_vm): pass\ndef test_other(): pass")
    result = pytester.runpytest_subprocess("--qemu-binary=/nonexistent/qemu-system-x86_64")
    result.assert_outcomes(errors=1, passed=1)
    output = result.stdout.str()
    assert "INTERNALERROR" not in output + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "pytest-qemu: VMs cannot start: *'/nonexistent/qemu-system-x86_64' was not found*",
            "*ERROR at setup of test_vm*",
            "*'/nonexistent/qemu-system-x86_64' was not found*apt-get install qemu-system-x86*",
        ]
    )


def test_header_names_the_accelerator(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--qemu-accel=auto")
    result.stdout.fnmatch_lines(["pytest-qemu: accelerator: *"])


def test_a_first_run_says_what_it_will_build(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess(f"--qemu-cache-dir={tmp_path / 'empty'}")
    result.stdout.fnmatch_lines(["*pytest-qemu: nothing built yet in *: the first VMs build*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("memroy=512", "*@pytest.mark.qemu has no keyword 'memroy': the known keywords are arch, "
         "userland, packages, suite, snapshot, cpus, kernel_warnings*"),
        ("cpu=2", "*@pytest.mark.qemu has no keyword 'cpu'*cpus*"),
        ("cpus=0", "*@pytest.mark.qemu: cpus 0 is not valid: give a number from 1 to 255*"),
        ("'aarch64'", "*@pytest.mark.qemu('aarch64',) takes keywords only*arch, userland*"),
        ("snapshot='no'", "*@pytest.mark.qemu: snapshot 'no' is not valid: give True or False*"),
        ("kernel_warnings='off'", "*@pytest.mark.qemu: kernel_warnings 'off' is not valid*"),
        ("userland='alpine'", "*@pytest.mark.qemu: userland 'alpine' is not valid*"),
        ("packages='python3'", "*@pytest.mark.qemu: packages 'python3' is not valid: give a list*"),
    ],
)  # fmt: skip
def test_a_bad_qemu_marker_fails_the_test_naming_the_keyword(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.qemu({marker})
        def test_vm(qemu_vm_factory):
            raise AssertionError("the test ran")

        @pytest.mark.qemu(arch="x86_64", snapshot=False, kernel_warnings=False, userland="host")
        def test_fine():
            pass
        """
    )
    result = pytester.runpytest_subprocess("--qemu-accel=tcg")
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_vm*", message])
    assert "the test ran" not in result.stdout.str()


def test_an_unusable_default_cache_fails_only_the_tests_that_need_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read-only or odd home directory must not break a run that starts no VM.
    home = pytester.path / "home"
    home.mkdir()
    (home / ".cache").write_text("not a directory")
    monkeypatch.delenv("PYTEST_QEMU_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    pytester.makepyfile(
        "def test_plain(): pass\n"
        "def test_vm(qemu_vm):\n"
        "    pass\n"
    )  # fmt: skip
    result = pytester.runpytest_subprocess("--qemu-accel=tcg", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [f"*cannot write * to the pytest-qemu cache in {home}/.cache/pytest-qemu/*cache-dir*"]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
