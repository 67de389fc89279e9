"""ONE BAD ENTRY NEVER BREAKS EVERYTHING: templates without an instance, names systemd refuses."""
from __future__ import annotations

import re

import pytest

from blackbox import HOST, assert_bus_values, assert_clean

T = 2.0
HINT = re.compile(r"instance|@\*|e\.g\.|for example|glob|template", re.I)


def check_template_outcome(res, entry, where=None):
    """Rejected at start with one line naming the entry (and FILE:LINE) and a hint, or expanded."""
    assert_clean(res)
    if res.rc == 1:
        line = res.errors[0]
        assert entry in line, f"the line names the entry {entry!r}\n{res}"
        if where:
            assert where in line, f"the line names {where}\n{res}"
        assert HINT.search(line.split(entry, 1)[1]), f"the line gives a hint\n{res}"
    else:
        units = {s.labels.get("unit") for s in res.samples}
        assert "getty@tty1.service" in units, f"expanded like getty@*.service\n{res}"
        assert not any(u and "@." in u for u in units), f"reported a template as a unit\n{res}"
        assert_bus_values(res)


@pytest.mark.parametrize("entry", ["getty@.service", "getty@"])
def test_template_without_instance_on_the_command_line(run, bus, entry):
    res = run("--host", HOST, "--unit", "alpha", "--unit", entry, "--unit", "broken.service",
              "--unit", "tick.timer", "--dry-run", "--timeout", T, bus=bus)
    check_template_outcome(res, entry)


@pytest.mark.parametrize("entry", ["getty@.service", "getty@"])
def test_template_without_instance_in_the_allowlist_file(run, bus, tmp_path, entry):
    allowlist = tmp_path / "allowlist"
    allowlist.write_text(f"# units\nalpha.service\n{entry}\nbroken.service\ntick.timer\n")
    res = run("--host", HOST, "--allowlist", allowlist, "--dry-run", "--timeout", T, bus=bus)
    check_template_outcome(res, entry, where=f"{allowlist}:3")


@pytest.mark.parametrize("how", ["flag", "file"])
@pytest.mark.parametrize("refused", [["refused-by-systemd.service"],
                                     ["refused-by-systemd.service", "also-refused.socket"]],
                         ids=["one", "two"])
def test_unit_systemd_refuses_does_not_cost_the_others(run, bus, tmp_path, refused, how):
    """The fake systemd answers InvalidArgs to any ListUnitsByNames holding a refused name; no systemctl."""
    bus.refuse_names = set(refused)
    names = ["alpha.service", *refused, "broken.service", "tick.timer"]
    if how == "flag":
        args = [a for n in names for a in ("--unit", n)]
    else:
        allowlist = tmp_path / "allowlist"
        allowlist.write_text("\n".join(names) + "\n")
        args = ["--allowlist", allowlist]
    res = run("--host", HOST, *args, "--dry-run", "--timeout", T, bus=bus)
    assert_clean(res, ok=True)
    assert_bus_values(res, bus)
    for name in refused:
        assert any(name in w for w in res.warnings), f"a warning names {name}\n{res}"
