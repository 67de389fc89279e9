"""Independent tests of three start-up pieces of the heartbeat, against oracles the package did
not write: the glob matcher (units.glob_tokens / units.glob_matches) against fnmatch.fnmatchcase,
the path and environment helpers of syscalls against os.path, stat and os.environ, and the state
loader (state.loads_bounded / state.load_memory) against hostile marshal data.

Hostile loads run in a child interpreter (`python -IS`, as the service runs) with a timeout, so a
hang or a crash fails its test instead of the suite; children that are not run under the
service's own address-space cap (LimitAS=512M) run under a looser safety net so that a bomb that
gets through cannot take the machine's memory, and are then judged on their peak resident size.
"""
from __future__ import annotations

import ast
import itertools
import marshal
import os
import random
import resource
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2] / "plugins/module_utils")
if PACKAGE_PARENT not in sys.path:
    sys.path.insert(0, PACKAGE_PARENT)

from systemd_heartbeat import state, syscalls, units  # noqa: E402
from glob_oracle import cpython_negates_a_literal_bang, fnmatch_oracle  # noqa: E402

PYTHON = sys.executable


# ---------------------------------------------------------------------------------------------
# 1. glob_tokens / glob_matches against fnmatch.fnmatchcase
# ---------------------------------------------------------------------------------------------

def glob(name: str, pattern: str) -> bool:
    return units.glob_matches(name, units.glob_tokens(pattern))


PATTERN_ALPHABET = "ab-]![*?\\"
NAME_ALPHABET = "ab-]![\\c"


def test_glob_exhaustively_small_patterns_against_fnmatch():
    """Every pattern of up to 5 characters over the characters that matter to a glob (the
    wildcards, both brackets, `!`, `-`, a backslash and two letters) against every name of up
    to 2 characters (`^` and the rest are in the edge cases and the random tests)."""
    names = ["".join(chars) for size in range(3) for chars in itertools.product(NAME_ALPHABET, repeat=size)]
    failures = []
    for size in range(6):
        for chars in itertools.product(PATTERN_ALPHABET, repeat=size):
            pattern = "".join(chars)
            tokens = units.glob_tokens(pattern)
            for name in names:
                expected = fnmatch_oracle(name, pattern)
                if units.glob_matches(name, tokens) != expected:
                    failures.append((pattern, name, expected))
                    if len(failures) >= 20:
                        break
    assert failures == [], f"(pattern, name, fnmatchcase) that disagree: {failures}"


EDGE_PATTERNS = [
    "", "*", "**", "?", "[", "]", "[]", "[!]", "[]]", "[!]]", "[]-]", "[!]-]", "[]a]", "[]-a]",
    "[z-a]", "[!z-a]", "[a-]", "[-a]", "[!-a]", "[a-a]", "[--]", "[---]", "[a-b-c]", "[b-a-c]",
    "[^a]", "[!^]", "[\\]", "[\\]]", "[\\-a]", "[a\\]", "\\", "\\*", "\\?", "\\[a]", "[[]", "[[]]",
    "[a", "a[", "[!", "[!a", "a[b-", "[]", "x[]y", "[*]", "[?]", "[!*]", "*[", "*]", "?[", "[a-z]*",
    "[!a-z]*", "*.service", "foo@*.service", "sys-*.mount", "[&&]", "[~~]", "[||]", "[a&&b]",
    "[a--b]", "[%-/]", "[.]", "[$]", "a.b", "a+b", "(a)", "a{1}", "a|b", "^a$", "é", "[é]",
    "[a-é]", "[!é]", "\U0001f600*", "[\U0001f600-\U0001f64f]", "*\n*", "[\n]", "?\x00", "[\x00-a]",
    "[]-z]", "[!]-z]", "[z-]", "[!z-]", "[-]", "[!-]", "[!--]", "[]]]", "[]]]]", "[![]", "[[!]",
]
EDGE_NAMES = [
    "", "a", "b", "-", "]", "[", "!", "^", "\\", "*", "?", "ab", "a]", "[]", "[!]", "]]", "a-", "x]y",
    "xy", "x[]y", "é", "\U0001f600", "\U0001f601x", "\n", "a\nb", "\x00", "&", "~", "|", "%", ".",
    "/", "$", "a.b", "axb", "a+b", "(a)", "a{1}", "a|b", "^a$", "foo.service", "foo@bar.service",
    "sys-kernel-debug.mount", "z", "A", "Z", "[a", "[!", "[!a", "a[b-", "[ab", "aa", "\\]", "*[",
]


@pytest.mark.parametrize("pattern", EDGE_PATTERNS)
def test_glob_edge_patterns_against_fnmatch(pattern):
    tokens = units.glob_tokens(pattern)
    assert isinstance(tokens, list)
    for name in EDGE_NAMES + [pattern, pattern + "a", "a" + pattern]:
        assert units.glob_matches(name, tokens) == fnmatch_oracle(name, pattern), (pattern, name)


def test_glob_tokens_can_be_reused():
    """Tokens are compiled once and matched against many names (as the allowlist is)."""
    tokens = units.glob_tokens("*[!a-c]?.serv[i]ce")
    names = ["xd1.service", "xa1.service", "d1.service", "a1.service", "dd.service", "d.service"] * 3
    assert [units.glob_matches(name, tokens) for name in names] == [
        fnmatch_oracle(name, "*[!a-c]?.serv[i]ce") for name in names]


GLOB_CHARS = st.sampled_from(list("*?[]!-^\\abcz.@é\U0001f600\n\x00/"))
NAME_CHARS = st.sampled_from(list("]!-^\\abcz.@é\U0001f600\n\x00/[*?AZ"))


@st.composite
def pattern_and_name(draw):
    pattern = draw(st.text(GLOB_CHARS, max_size=14))
    if draw(st.booleans()):
        name = draw(st.text(NAME_CHARS, max_size=14))
    else:
        # a name shaped like the pattern, so that matches are common
        out = []
        for char in pattern:
            choice = draw(st.integers(0, 4))
            if choice == 0:
                out.append(draw(st.text(NAME_CHARS, max_size=3)))
            elif choice == 1:
                continue
            else:
                out.append(char)
        name = "".join(out)
    return pattern, name


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern_and_name())
def test_glob_random_against_fnmatch(case):
    pattern, name = case
    assume(not cpython_negates_a_literal_bang(pattern))
    assert glob(name, pattern) == fnmatch_oracle(name, pattern), (pattern, name)


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=10), st.text(max_size=10))
def test_glob_arbitrary_unicode_against_fnmatch(pattern, name):
    assume(not cpython_negates_a_literal_bang(pattern))
    assert glob(name, pattern) == fnmatch_oracle(name, pattern), (pattern, name)


@settings(max_examples=1500, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12),
       st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12))
def test_glob_printable_ascii_against_fnmatch(pattern, name):
    assume(not cpython_negates_a_literal_bang(pattern))
    assert glob(name, pattern) == fnmatch_oracle(name, pattern), (pattern, name)


def timed_glob(name: str, pattern: str) -> tuple[bool, float]:
    started = time.perf_counter()
    result = glob(name, pattern)
    return result, time.perf_counter() - started


@pytest.mark.parametrize("pattern, name, budget", [
    ("*a" * 30 + "b", "a" * 200, 0.5),                        # the brief's pathological case
    ("*a" * 30 + "b", "a" * 199 + "b", 0.5),                  # same shape, matching
    ("*a" * 30 + "*b", "a" * 200, 0.5),
    ("*?" * 30 + "b", "a" * 200, 0.5),
    ("*[a]" * 30 + "[b]", "a" * 200, 0.5),
    ("*[!b]" * 30 + "b", "a" * 200, 0.5),
    ("*" * 200 + "b", "a" * 200, 0.5),
    ("a*" * 100 + "b", "a" * 300, 1.0),
    ("*a" * 100 + "b", "a" * 1000, 2.0),                      # product ~2e5
    ("*" + "?" * 300 + "*b", "a" * 600, 2.0),
    ("*" + "[a-z]" * 100 + "*!", "a" * 1000, 2.0),
])
def test_glob_is_not_exponential(pattern, name, budget):
    result, elapsed = timed_glob(name, pattern)
    assert result == fnmatch_oracle(name, pattern)
    assert elapsed < budget, f"{elapsed:.3f} s for pattern of {len(pattern)} against name of {len(name)}"


def test_glob_long_inputs_against_fnmatch():
    rng = random.Random(20240601)
    for _ in range(40):
        pattern = "".join(rng.choice("ab*?[]!-") for _ in range(rng.randrange(50, 200)))
        name = "".join(rng.choice("ab-]!") for _ in range(rng.randrange(100, 400)))
        if cpython_negates_a_literal_bang(pattern):
            continue  # glob_oracle.py: left to glibc
        result, elapsed = timed_glob(name, pattern)
        assert result == fnmatch_oracle(name, pattern), (pattern, name)
        assert elapsed < 1.0, (pattern, name, elapsed)
    long_class = "[" + "".join(chr(c) for c in range(0x100, 0x2100)) + "]"
    assert glob("\u2000", long_class) is True and glob("a", long_class) is False
    assert glob("x" * 10000, "x" * 10000) is True
    assert glob("x" * 10000, "x" * 9999 + "y") is False
    assert glob("x" * 10000 + "y", "*y") is True


# ---------------------------------------------------------------------------------------------
# 2. syscalls against os.path, stat and os.environ
# ---------------------------------------------------------------------------------------------

JOIN_EDGES = ["", "/", "//", "///", "a", "a/", "/a", "/a/", "a//", ".", "..", "./", "a/b", "\x00",
              "é", "\\", "a\\", "\udcff", " ", "a\nb"]


def test_join_edges_against_os_path():
    for directory, name in itertools.product(JOIN_EDGES, repeat=2):
        assert syscalls.join(directory, name) == os.path.join(directory, name), (directory, name)


@settings(max_examples=2000, deadline=None)
@given(st.text(st.sampled_from(list("/a.b\\ é\x00\n")), max_size=8),
       st.text(st.sampled_from(list("/a.b\\ é\x00\n")), max_size=8))
def test_join_random_against_os_path(directory, name):
    assert syscalls.join(directory, name) == os.path.join(directory, name)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_join_any_text_against_os_path(directory, name):
    assert syscalls.join(directory, name) == os.path.join(directory, name)


def build_tree(root: str) -> list[str]:
    """Files, directories and every kind of link; the paths to ask about."""
    os.mkdir(f"{root}/dir")
    Path(f"{root}/file").write_text("x")
    Path(f"{root}/dir/inner").write_text("y")
    os.symlink("file", f"{root}/link_file")
    os.symlink("dir", f"{root}/link_dir")
    os.symlink(f"{root}/file", f"{root}/link_abs")
    os.symlink("link_file", f"{root}/link_chain")
    os.symlink("missing", f"{root}/dangling")
    os.symlink("dangling", f"{root}/dangling_chain")
    os.symlink("loop2", f"{root}/loop1")
    os.symlink("loop1", f"{root}/loop2")
    os.symlink("self", f"{root}/self")
    os.symlink("file/x", f"{root}/link_through_file")
    os.mkfifo(f"{root}/fifo")
    Path(f"{root}/\udcff").write_text("z")         # a name that is not UTF-8 (byte 0xff)
    Path(f"{root}/é").write_text("z")
    os.mkdir(f"{root}/{'d' * 255}")
    deep = root
    while len(deep) < 4200:                        # a real path longer than PATH_MAX
        deep += "/" + "e" * 200
        try:
            os.mkdir(deep)
        except OSError:
            # mkdir with a path beyond PATH_MAX fails: continue relative to the last directory
            break
    names = ["file", "dir", "dir/", "dir/.", "dir/..", "dir/inner", "dir/inner/", "file/", "file/.",
             "file/x", "missing", "missing/", "missing/x", "link_file", "link_file/", "link_dir",
             "link_dir/", "link_dir/.", "link_dir/inner", "link_abs", "link_chain", "dangling",
             "dangling/", "dangling_chain", "loop1", "loop2", "loop1/", "loop1/x", "self", "self/x",
             "link_through_file", "fifo", "fifo/", "\udcff", "é", "e\u0301", "d" * 255, "d" * 256,
             "d" * 255 + "/", "a\x00b", "file\x00", "\x00", "\ud800", "dir/\ud800"]
    paths = [f"{root}/{name}" for name in names]
    paths += ["", ".", "..", "/", "//", "/.", "/..", "\x00", "/dev/null", "/proc/self/root",
              "/proc/self/exe", "/proc/self/fd/0", "/nonexistent", root, root + "/", root + "//file",
              root + "/" + "x/" * 3000, root + "/" + "/" * 5000 + "file", "/" * 5000, root + "/" + "f" * 5000,
              deep, deep + "/", deep + "/nothing", "file", "dir", "link_file", "dangling", "loop1", "missing"]
    return paths


def compare_path_predicates(paths: list[str]) -> list:
    failures = []
    for path in paths:
        for ours, theirs in [(syscalls.lexists, os.path.lexists), (syscalls.exists, os.path.exists),
                             (syscalls.islink, os.path.islink)]:
            expected = theirs(path)
            try:
                got = ours(path)
            except BaseException as error:  # noqa: BLE001 - an exception is a difference too
                got = f"raised {error!r}"
            if got != expected:
                failures.append((ours.__name__, path[:80] + ("..." if len(path) > 80 else ""), expected, got))
    return failures


def test_path_predicates_against_os_path(tmp_path, monkeypatch):
    root = str(tmp_path)
    paths = build_tree(root)
    monkeypatch.chdir(root)  # the relative paths at the end of the list
    assert compare_path_predicates(paths) == []


def test_path_predicates_against_os_path_without_permission():
    """As an unprivileged user (a forked child that drops to nobody): a directory that cannot be
    searched, one that cannot be read, links into both."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody; the permission cases run as root otherwise")
    root = tempfile.mkdtemp(prefix="independent-perm-")
    try:
        os.chmod(root, 0o755)
        paths = build_tree(root)
        for mode, name in [(0o000, "locked"), (0o644, "unsearchable"), (0o311, "unreadable")]:
            os.mkdir(f"{root}/{name}")
            Path(f"{root}/{name}/f").write_text("x")
            os.symlink("f", f"{root}/{name}/l")
            os.symlink("missing", f"{root}/{name}/dangling")
            os.chmod(f"{root}/{name}", mode)
            os.symlink(f"{name}/f", f"{root}/link_into_{name}")
            paths += [f"{root}/{name}", f"{root}/{name}/", f"{root}/{name}/f", f"{root}/{name}/l",
                      f"{root}/{name}/dangling", f"{root}/{name}/missing", f"{root}/link_into_{name}",
                      f"{root}/{name}/f/"]
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop to nobody, compare, report, exit without running pytest's atexit
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                os.write(write_end, repr(compare_path_predicates(paths)).encode("ascii", "backslashreplace"))
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            report = reader.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert ast.literal_eval(report.decode("ascii")) == []
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", root], check=False)
        subprocess.run(["rm", "-rf", root], check=False)


def test_is_regular_against_stat_for_every_mode():
    wrong = [mode for mode in range(0o200000) if syscalls.is_regular(mode) != stat.S_ISREG(mode)]
    assert wrong == [], [oct(mode) for mode in wrong[:20]]


def test_is_regular_against_real_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_text("x")
    os.symlink("file", tmp_path / "link")
    for path in [tmp_path / "file", tmp_path / "fifo", tmp_path, tmp_path / "link", "/dev/null"]:
        for mode in (os.stat(path).st_mode, os.lstat(path).st_mode):
            assert syscalls.is_regular(mode) == stat.S_ISREG(mode)


ENVIRONMENT_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from systemd_heartbeat import syscalls
    import os
    got = syscalls.environment()
    expected = dict(os.environ)
    if got == expected:
        print("same", len(got))
    else:
        print("differ", ascii([i for i in got.items() if i not in expected.items()][:10]), ascii([i for i in expected.items() if i not in got.items()][:10]),
              ascii(type(got)), len(got), len(expected))
""")


def environment_in_child(env) -> str:
    done = subprocess.run([PYTHON, "-IS", "-c", ENVIRONMENT_CHILD, PACKAGE_PARENT], env=env,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode("ascii").strip()


@pytest.mark.parametrize("env", [
    pytest.param({b"PATH": b"/usr/bin:/bin", b"K\xff": b"v\xfe", b"\xc3\xa9": b"\xe2\x82\xac",
                  b"EMPTY": b"", b"EQUALS": b"a=b==c=", b"LATIN": b"caf\xe9", b"SPACE KEY": b" v ",
                  b"NEWLINE": b"a\nb", b"TAB": b"\t", b"LANG": b"C.UTF-8", b"\x80": b"\x80"}, id="non-utf8"),
    pytest.param({b"LC_ALL": b"C", b"K\xff": b"\xff"}, id="non-utf8-c-locale"),
    pytest.param({b"LANG": b"en_US.ISO-8859-1", b"K\xe9": b"\xe9"}, id="latin1-locale"),
    pytest.param({}, id="empty-python-coerces-locale"),
    pytest.param({"LANG": "C"}, id="lang-c-python-coerces-locale"),
    pytest.param({"LC_ALL": "C.UTF-8", "PYTHONPATH": "/x", "PYTHONHASHSEED": "0",
                  "PYTHONIOENCODING": "latin-1", "PYTHONUTF8": "1"}, id="python-variables"),
    pytest.param({"LANG": "C.UTF-8", **{f"V{i}": "x" * (i % 50) for i in range(20000)}}, id="many"),
    pytest.param({"LANG": "C.UTF-8", "BIG": "y" * 120000, "BIG2": "=" * 100000}, id="big-values"),
    pytest.param({"LANG": "C.UTF-8", "A": "", "B": "=", "C": "==", "D": "x=", "E": "=x", "é": "ü",
                  "\U0001f600": "\U0001f601"}, id="equals-and-empties"),
])
def test_environment_against_os_environ(env):
    assert environment_in_child(env).startswith("same")


def test_environment_against_os_environ_under_a_latin1_locale(tmp_path):
    """A host whose locale is not UTF-8 (LANG=en_US.ISO-8859-1, as /etc/locale.conf may pass it
    to the service): os.environ decodes with the file-system encoding (ISO-8859-1 here), so a
    non-ASCII byte in the environment must come out the same. The locale is compiled into
    tmp_path and found through LOCPATH: nothing outside tmp_path is written."""
    import shutil
    if not shutil.which("localedef") or not Path("/usr/share/i18n/locales/en_US").exists():
        pytest.skip("no localedef or locale sources to build a Latin-1 locale")
    done = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1", str(tmp_path / "en_US.ISO-8859-1")],
                          capture_output=True, timeout=60)
    if not (tmp_path / "en_US.ISO-8859-1").exists():
        pytest.skip(f"localedef failed: {done.stderr[-300:]!r}")
    env = {b"LOCPATH": str(tmp_path).encode(), b"LANG": b"en_US.ISO-8859-1",
           b"K\xe9": b"\xc3\xa9", b"PLAIN": b"ascii only"}
    assert environment_in_child(env).startswith("same")


RAW_EXEC = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    entries = [b"LANG=C.UTF-8", b"NOEQUALS", b"=leading", b"==", b"DUP=first", b"DUP=second",
               b"K\\xff=\\xff\\xfe", b"EMPTY=", b"", b"X=a=b"]
    argv = [sys.executable.encode(), b"-IS", b"-c", sys.argv[1].encode(), sys.argv[2].encode()]
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
    c_env = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
    libc.execve(argv[0], c_argv, c_env)
    raise OSError(ctypes.get_errno(), "execve")
""")


def test_environment_against_os_environ_with_raw_envp():
    """Entries that no subprocess env= can make: without `=`, with a leading `=`, duplicates, empty."""
    done = subprocess.run([PYTHON, "-IS", "-c", RAW_EXEC, ENVIRONMENT_CHILD, PACKAGE_PARENT],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode("ascii").startswith("same"), done.stdout


# ---------------------------------------------------------------------------------------------
# 3. state.loads_bounded / state.load_memory against hostile marshal data
# ---------------------------------------------------------------------------------------------

CAP = state.ADDRESS_SPACE_CAPPED
SAFETY_NET = 3 << 30          # not the service's cap: only keeps a bomb that gets through off the machine
PEAK_RESIDENT_LIMIT_KB = 512 * 1024
# "a fraction of a second" of CPU time (0.2 s idle), with slack for a VM whose CPU time counts
# what other guests steal (1.3 s in a loaded CI run)
TIME_LIMIT = 3.0
MEMORY_FILE = "last-push.marshal"


def i32(value: int) -> bytes:
    return struct.pack("<i", value)


def state_file(payload: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(payload)) + payload


def nested(codes: bytes, depth: int, total: int) -> bytes:
    """`depth` containers, each claiming total - 1 elements (just below the data's length, so
    every count is one the data could hold), padded with None to `total` bytes. The count's
    bytes are none of marshal's container codes, so no 4 bytes read from inside one look
    larger than the data either."""
    count = i32(total - 1)
    assert not set(count) & set(b"[(<>{\xdb\xa8\xbc\xbe\xfb")
    head = b"".join(codes[level % len(codes):level % len(codes) + 1] + count for level in range(depth))
    return head + b"N" * (total - len(head))


def exponential_tuple(depth: int) -> tuple:
    shared = ()
    for _ in range(depth):
        shared = (shared, shared)
    return shared


def retag(data: bytes, code: bytes) -> bytes:
    """Change the type code of a marshal object, keeping its ref flag."""
    return bytes([(data[0] & 0x80) | code[0]]) + data[1:]


def colliding_ints(count: int) -> list[int]:
    modulus = (1 << 61) - 1  # hash(k * modulus) == 0 for every k
    return [modulus * k for k in range(1, count + 1)]


def self_referential_dict() -> dict:
    value: dict = {"units": {}}
    value["self"] = value
    value["units"]["loop"] = [value, value["units"]]
    return value


def deep_list(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def code_object():
    return compile("import os\nos.system('false')\nx = [i for i in range(3)]\n", "<hostile>", "exec")


DAG = marshal.dumps([exponential_tuple(45)])      # a list holding a tuple whose tree has 2**45 leaves
COLLIDING = colliding_ints(20000)   # about 2 s of dict inserts in marshal.loads

HOSTILE = {
    # containers claiming 2**31-1 elements, with and without the ref flag
    "list-max": b"[" + i32(2**31 - 1),
    "list-max-ref": b"\xdb" + i32(2**31 - 1),
    "tuple-max": b"(" + i32(2**31 - 1),
    "tuple-max-ref": b"\xa8" + i32(2**31 - 1),
    "set-max": b"<" + i32(2**31 - 1),
    "set-max-ref": b"\xbc" + i32(2**31 - 1),
    "frozenset-max": b">" + i32(2**31 - 1),
    "frozenset-max-ref": b"\xbe" + i32(2**31 - 1),
    # counts that fit under the safety net, so a loader that lets them through is seen using them
    "tuple-2**28": b"(" + i32(2**28),
    "tuple-2**28-ref": b"\xa8" + i32(2**28),
    "list-2**28": b"[" + i32(2**28),
    "list-2**28-ref": b"\xdb" + i32(2**28),
    "dict-list-2**28": b"{z\x01k[" + i32(2**28),
    # strings, bytes, longs and refs with huge claimed sizes
    "unicode-max": b"u" + i32(2**31 - 1) + b"abc",
    "interned-max": b"t" + i32(2**31 - 1) + b"abc",
    "ascii-max": b"a" + i32(2**31 - 1) + b"abc",
    "ascii-interned-max": b"A" + i32(2**31 - 1) + b"abc",
    "bytes-max": b"s" + i32(2**31 - 1) + b"abc",
    "short-ascii-max": b"z\xff" + b"a" * 10,
    "long-max": b"l" + i32(2**31 - 1) + b"\x01\x00",
    "long-min": b"l" + i32(-(2**31 - 1)) + b"\x01\x00",
    "long-negative-count": b"l" + i32(-(2**31)),
    "long-2**28": b"l" + i32(2**28),
    "ref-max": b"r" + i32(2**31 - 1),
    "ref-forward": b"\xdb" + i32(1) + b"r" + i32(1),
    "float-text": b"f\xff" + b"9" * 255,
    "complex-text": b"x\xff" + b"9" * 255 + b"\xff" + b"9" * 255,
    "negative-list": b"[" + i32(-1),
    "negative-tuple": b"(" + i32(-5),
    # nested containers, each claiming a count just below the rest of the data
    "nested-lists": nested(b"[", 1999, 100_000),
    "nested-tuples": nested(b"(", 1999, 100_000),
    "nested-tuples-ref": nested(b"\xa8", 1999, 100_000),
    "nested-mixed": nested(b"[(\xdb\xa8<>", 1999, 100_000),
    "nested-sets": nested(b"<", 1999, 100_000),
    # deeper than marshal allows
    "deep-lists": (b"[" + i32(1)) * 200_000 + b"N",
    "deep-tuples": (b")\x01") * 200_000 + b"N",
    "deep-dicts": b"{N" * 200_000 + b"N" + b"0" * 200_000,
    "deep-frozensets": (b">" + i32(1)) * 200_000 + b"N",
    # small data, exponential work: hashing a tuple DAG whose tree has 2**45 leaves
    "dag-in-set": retag(DAG, b"<"),
    "dag-in-frozenset": retag(DAG, b">"),
    "dag-as-dict-key": b"{" + DAG[5:] + b"N0",
    "dag-in-dict-set": b"{z\x01k" + retag(DAG, b"<") + b"0",
    "dag-as-dict-value": b"{z\x01k" + marshal.dumps(exponential_tuple(60)) + b"0",
    "dag-list-as-dict-value": b"{z\x01k" + marshal.dumps([exponential_tuple(60)]) + b"0",
    # many keys with one hash: quadratic inserts
    "colliding-dict": b"{" + b"".join(marshal.dumps(key) + b"N" for key in COLLIDING) + b"0",
    "colliding-set": b"<" + i32(len(COLLIDING)) + b"".join(
        marshal.dumps(key) for key in COLLIDING),
    "colliding-dict-in-dict": b"{z\x01k{" + b"".join(marshal.dumps(key) + b"N" for key in COLLIDING) + b"00",
    # structures a walker could loop on or recurse into
    "self-referential-dict": marshal.dumps(self_referential_dict()),
    "deep-but-legal": marshal.dumps({"units": deep_list(1990)}),
    "deep-but-legal-key": marshal.dumps({"k": {"units": deep_list(1980)}}),
    # code objects
    "code": marshal.dumps(code_object()),
    "code-in-dict": marshal.dumps({"code": code_object(), "units": {"a.service": code_object()}}),
    "code-truncated": marshal.dumps(code_object())[:40],
}


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import marshal
    from systemd_heartbeat import state
    mode, path = sys.argv[2], sys.argv[3]
    resource_before = "resource" in sys.modules
    sys.modules.pop("resource", None)
    if mode.endswith("-many"):
        with open(path, "rb") as handle:
            cases = marshal.loads(handle.read())
    elif mode.startswith("loads"):
        with open(path, "rb") as handle:
            cases = [handle.read()]
    else:
        cases = [path]
    results = []
    for case in cases:
        # CPU time, not the wall clock: what the loader spends, not how busy the machine is
        # (a CI run with other suites beside it took 1.08 s of wall clock for 0.3 s of work)
        started = time.process_time()
        try:
            if mode.startswith("loads"):
                value = state.loads_bounded(marshal.loads, case)
            else:
                value = state.load_memory(case)
            outcome = "returned " + type(value).__name__
        except BaseException as error:
            outcome = "raised " + type(error).__name__
        elapsed = time.process_time() - started
        value = None
        results.append((outcome, elapsed))
    with open("/proc/self/status") as status:
        peak_kb = int(status.read().split("VmHWM:")[1].split()[0])
    print(repr((results, peak_kb, resource_before, "resource" in sys.modules)))
""")


def run_loader(mode: str, argument: str, *, capped: bool, timeout: float = 6) -> tuple:
    limit = CAP if capped else SAFETY_NET

    def limit_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        done = subprocess.run([PYTHON, "-IS", "-c", CHILD, PACKAGE_PARENT, mode, argument],
                              capture_output=True, timeout=timeout, preexec_fn=limit_address_space)
    except subprocess.TimeoutExpired:
        done = None
    if done is None:
        pytest.fail(f"{mode} did not finish in {timeout} s (the child was killed)")
    assert done.returncode == 0, f"child died: exit {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
    return ast.literal_eval(done.stdout.decode().strip().splitlines()[-1])


def write_payload(tmp_path: Path, payload: bytes) -> str:
    path = tmp_path / "payload"
    path.write_bytes(payload)
    return str(path)


def write_state(tmp_path: Path, payload: bytes) -> str:
    state_dir = tmp_path / "state"
    state_dir.mkdir(exist_ok=True)
    (state_dir / MEMORY_FILE).write_bytes(state_file(payload))
    return str(state_dir)


def check_bounded(results, peak_kb, *, must_return_dict: bool):
    for index, (outcome, elapsed) in enumerate(results):
        if must_return_dict:
            assert outcome == "returned dict", f"case {index}: {outcome}"
        else:
            assert outcome.startswith(("returned", "raised")), (index, outcome)
        assert elapsed < TIME_LIMIT, f"case {index}: {elapsed:.2f} s ({outcome})"
    assert peak_kb < PEAK_RESIDENT_LIMIT_KB, f"peak resident {peak_kb} kB"


# Small data, unbounded CPU: marshal hashes every set element and dict key as it builds them, and
# a tuple reached through shared references hashes its whole tree (2**45 leaves), or 20,000 keys
# with one hash insert in quadratic time. No address-space cap and no deadline can stop a C loop;
# the heartbeat's answer is the next tick (test_cli.py: a tick killed while its state hangs it
# leaves the next one a clean start). Documented as not bounded within a tick: RELIABILITY.md.
CPU_BOMBS = ["dag-in-set", "dag-in-frozenset", "dag-as-dict-key", "dag-in-dict-set", "colliding-dict",
             "colliding-set", "colliding-dict-in-dict"]
BOUNDED = [name for name in HOSTILE if name not in CPU_BOMBS]


@pytest.mark.xfail(strict=True, reason="marshal's hashing is not bounded within a tick (CPU_BOMBS)")
@pytest.mark.parametrize("name", ["dag-in-set"])
def test_cpu_bombs_are_not_bounded_within_a_tick(tmp_path, name):
    results, peak_kb, _, _ = run_loader("memory", write_state(tmp_path, HOSTILE[name]), capped=True)
    check_bounded(results, peak_kb, must_return_dict=True)


@pytest.mark.parametrize("name", BOUNDED)
def test_loads_bounded_uncapped(tmp_path, name):
    results, peak_kb, _, _ = run_loader("loads", write_payload(tmp_path, HOSTILE[name]), capped=False)
    check_bounded(results, peak_kb, must_return_dict=False)


@pytest.mark.parametrize("name", BOUNDED)
def test_load_memory_uncapped(tmp_path, name):
    results, peak_kb, _, _ = run_loader("memory", write_state(tmp_path, HOSTILE[name]), capped=False)
    check_bounded(results, peak_kb, must_return_dict=True)


CAPPED_CASES = ["list-max", "tuple-max-ref", "tuple-2**28", "long-max", "nested-tuples", "deep-lists",
                "self-referential-dict", "code-in-dict", "deep-but-legal"]


@pytest.mark.parametrize("name", CAPPED_CASES)
def test_load_memory_capped_does_not_import_resource(tmp_path, name):
    """As the service runs it (LimitAS=512M): still a dict in a fraction of a second, and the
    resource module is not imported to find that out."""
    results, peak_kb, resource_before, resource_after = run_loader(
        "memory", write_state(tmp_path, HOSTILE[name]), capped=True)
    check_bounded(results, peak_kb, must_return_dict=True)
    assert resource_before is False, "resource imported before load_memory ran (by the package import)"
    assert resource_after is False, "load_memory imported resource under the service's cap"


@pytest.mark.parametrize("name", CAPPED_CASES)
def test_loads_bounded_capped(tmp_path, name):
    results, peak_kb, _, _ = run_loader("loads", write_payload(tmp_path, HOSTILE[name]), capped=True)
    check_bounded(results, peak_kb, must_return_dict=False)


def realistic_state() -> dict:
    return {"version": 1, "time": 1717171717.25,
            "units": {f"unit-{i}.service": ("active", "running", i, 1.5 * i, None, True) for i in range(40)},
            "counters": [1, 2, 3, 2**70, -5], "labels": frozenset({"a", "b"}), "blob": b"\x00\xff"}


def mutations(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    base = marshal.dumps(realistic_state())
    out = []
    for _ in range(count):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            kind = rng.randrange(5)
            at = rng.randrange(len(data))
            if kind == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                data[at:at + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x10", b"\xff\xff\xff\xff",
                                              b"\x00\x00\x00\x08"])
            elif kind == 2:
                data[at] = rng.choice(b"[(<>{)ltuasAzZrcNTFig\xdb\xa8\xbc\xbe")
            elif kind == 3:
                del data[at:at + rng.randrange(1, 8)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        out.append(bytes(data))
    return out


def test_loads_bounded_mutated_state_fuzz(tmp_path):
    results, peak_kb, _, _ = run_loader("loads-many", write_payload(tmp_path, marshal.dumps(mutations(1, 1500))),
                                        capped=False, timeout=60)
    check_bounded(results, peak_kb, must_return_dict=False)


def load_every_state(tmp_path, payloads: list[bytes]) -> None:
    """load_memory on a state directory per payload (valid CRC), in one child: a dict, in time."""
    directories = []
    for index, payload in enumerate(payloads):
        state_dir = tmp_path / f"s{index}"
        state_dir.mkdir()
        (state_dir / MEMORY_FILE).write_bytes(state_file(payload))
        directories.append(str(state_dir))
    results, peak_kb, _, _ = run_loader("memory-many", write_payload(tmp_path, marshal.dumps(directories)),
                                        capped=False, timeout=60)
    check_bounded(results, peak_kb, must_return_dict=True)


def test_load_memory_mutated_state_fuzz(tmp_path):
    load_every_state(tmp_path, mutations(2, 400))


def mutated_code_objects(seed: int, count: int, inside_dict: bool) -> list[bytes]:
    rng = random.Random(seed)
    base = marshal.dumps({"units": code_object()} if inside_dict else code_object())
    cases = []
    for _ in range(count):
        data = bytearray(base)
        at = rng.randrange(len(data))
        data[at] = rng.randrange(256)
        cases.append(bytes(data))
    return cases


def test_loads_bounded_mutated_code_objects(tmp_path):
    """Some of these make marshal.loads itself raise SystemError: raising is allowed here."""
    cases = mutated_code_objects(3, 300, inside_dict=False)
    results, peak_kb, _, _ = run_loader("loads-many", write_payload(tmp_path, marshal.dumps(cases)),
                                        capped=False, timeout=60)
    check_bounded(results, peak_kb, must_return_dict=False)


def test_load_memory_mutated_code_objects(tmp_path):
    """...but not for load_memory, which returns a dict whatever marshal raises."""
    load_every_state(tmp_path, mutated_code_objects(4, 300, inside_dict=True))


def test_loads_bounded_returns_what_marshal_returns_for_ordinary_data():
    for value in [realistic_state(), {}, [], 1, "x", None, {"a": [1, 2, (3, 4)]}]:
        assert state.loads_bounded(marshal.loads, marshal.dumps(value)) == value


def test_load_memory_on_ordinary_files_and_places(tmp_path):
    """Never raises, always a dict, whatever is (or is not) at <state_dir>/last-push.marshal."""
    cases: list = [str(tmp_path / "does-not-exist"), str(tmp_path / "a\x00b"), "", "/" + "x" * 5000,
                   str(tmp_path) + "/" + "y" * 300]
    contents = [b"", b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x00", b"\xff" * 4,
                struct.pack("<I", zlib.crc32(b"{0") ^ 1) + b"{0",      # wrong CRC
                state_file(b""), state_file(b"\x00"), state_file(b"garbage"), state_file(marshal.dumps(5)),
                state_file(marshal.dumps([1, 2])), state_file(marshal.dumps(None)),
                state_file(marshal.dumps({})), state_file(marshal.dumps(realistic_state())),
                state_file(marshal.dumps({1: 2, (3,): frozenset(), None: b"", 2.5: 1j})),
                state_file(marshal.dumps(realistic_state())) + b"trailing",
                state_file(marshal.dumps(realistic_state()))[:-3],
                state_file(b"\x00" * 100_000), os.urandom(3000), state_file(os.urandom(3000))]
    for index, content in enumerate(contents):
        state_dir = tmp_path / f"c{index}"
        state_dir.mkdir()
        (state_dir / MEMORY_FILE).write_bytes(content)
        cases.append(str(state_dir))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "dir").mkdir()
    (odd / "dir" / MEMORY_FILE).mkdir()                          # a directory where the file should be
    (odd / "dangling").mkdir()
    os.symlink("missing", odd / "dangling" / MEMORY_FILE)        # a dangling link
    (odd / "loop").mkdir()
    os.symlink(MEMORY_FILE, odd / "loop" / MEMORY_FILE)          # a link to itself
    (odd / "plainfile").write_text("not a directory")
    cases += [str(odd / "dir"), str(odd / "dangling"), str(odd / "loop"), str(odd / "plainfile"),
              str(odd / "dir") + "/"]
    for state_dir in cases:
        try:
            value = state.load_memory(state_dir)
        except BaseException as error:  # noqa: BLE001
            pytest.fail(f"load_memory({state_dir[:60]!r}) raised {error!r}")
        assert isinstance(value, dict), (state_dir[:60], value)


def test_load_memory_code_object_with_shifted_references(tmp_path):
    """The smallest case the mutation fuzz found: {"units": compile("x=1", "", "exec")} as
    marshal writes it, with the dict's first byte given the reference flag (0x7b -> 0xfb), so
    every later back-reference points one object too early. marshal.loads raises SystemError
    (Objects/codeobject.c: bad argument to internal function) building the code object."""
    payload = bytearray(marshal.dumps({"units": compile("x=1", "", "exec")}))
    payload[0] |= 0x80
    state_dir = write_state(tmp_path, bytes(payload))
    try:
        value = state.load_memory(state_dir)
    except BaseException as error:  # noqa: BLE001
        pytest.fail(f"load_memory raised {error!r}")
    assert isinstance(value, dict)


def test_load_memory_special_files(tmp_path):
    """A FIFO (no writer), a link to /dev/zero, a character device: a dict, at once."""
    fifo, zero = tmp_path / "fifo", tmp_path / "zero"
    fifo.mkdir()
    os.mkfifo(fifo / MEMORY_FILE)
    zero.mkdir()
    os.symlink("/dev/zero", zero / MEMORY_FILE)
    for state_dir in (fifo, zero):
        results, peak_kb, _, _ = run_loader("memory", str(state_dir), capped=False)
        check_bounded(results, peak_kb, must_return_dict=True)


def test_load_memory_none_is_a_dict():
    """The signature allows None (no state directory): still a dict."""
    assert isinstance(state.load_memory(None), dict)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_load_memory_random_small_payloads(payload):
    """Random short marshal data with a valid CRC (short data cannot claim more than marshal
    itself checks against the data length, except through counts: those are in the hostile set)."""
    with tempfile.TemporaryDirectory() as state_dir:
        Path(state_dir, MEMORY_FILE).write_bytes(state_file(payload))
        code = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {PACKAGE_PARENT!r})
            from systemd_heartbeat import state
            value = state.load_memory({state_dir!r})
            print(type(value).__name__)
        """)
        try:
            done = subprocess.run([PYTHON, "-IS", "-c", code], capture_output=True, timeout=10,
                                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"load_memory hung on {payload!r}")
        assert done.returncode == 0 and done.stdout.strip() == b"dict", (payload, done.stdout, done.stderr[-500:])
