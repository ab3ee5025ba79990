"""rl-oci's OCI hooks (config.md "POSIX-platform Hooks"): small shell scripts that
record their stdin (the state), their argv and environment, where they ran and
in which order; a hook that fails, one that hangs past its timeout."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import test_oci
from test_oci import RlOci, error_line, status

# test_oci's fixtures, used here by name.
rl_oci_path, root, oci, bundle = (test_oci.rl_oci_path, test_oci.root, test_oci.oci,
                                  test_oci.bundle)

# A hook: saves its stdin as $LOG/<kind>.json, appends "<kind> <argv1> $HOOKVAR"
# to $LOG/order, and the mount and PID namespaces it ran in to $LOG/<kind>.ns.
RECORDER = """#!/bin/sh
kind=$1
cat > "$LOG/$kind.json"
echo "$kind $2 $HOOKVAR" >> "$LOG/order"
echo "$(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/pid) $(env | grep -c .)" \
  > "$LOG/$kind.ns"
exit ${HOOK_EXIT:-0}
"""


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def _hook(path: str, kind: str, log: str, **extra: Any) -> dict[str, Any]:
    env = [f"LOG={log}", "PATH=/usr/bin:/bin", f"HOOKVAR=v-{kind}"]
    env += [f"{k}={v}" for k, v in extra.pop("env", {}).items()]
    return {"path": path, "args": ["recorder", kind, "second-arg"], "env": env, **extra}


def _with_hooks(b: Path, hooks: dict[str, Any], writable: bool = False) -> None:
    cfg = json.loads((b / "config.json").read_text())
    cfg["hooks"] = hooks
    cfg["root"]["readonly"] = not writable
    (b / "config.json").write_text(json.dumps(cfg))


def _order(log: Path) -> list[str]:
    p = log / "order"
    return p.read_text().splitlines() if p.exists() else []


def _wait_for(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_every_kind_runs_at_its_point_with_the_state(oci: RlOci, bundle: Callable[..., Path],
                                                     tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    host_hook = _script(tmp_path / "recorder.sh", RECORDER)
    b = bundle("sh", "-c", "echo command >> /hooklog/order; sleep 100")
    # startContainer's path resolves in the container's root, where it writes.
    (b / "rootfs" / "hooklog").mkdir()
    inside = _script(b / "rootfs" / "recorder.sh", RECORDER)
    _with_hooks(b, {
        kind: [_hook(host_hook, kind, str(log))]
        for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    } | {"startContainer": [_hook("/recorder.sh", "startContainer", "/hooklog")]},
        writable=True)
    assert os.path.exists(inside)

    oci("create", "-b", b, "hk", check=True)
    state = json.loads(oci("state", "hk", check=True).stdout)
    pid = state["pid"]
    assert _order(log) == ["prestart second-arg v-prestart",
                           "createRuntime second-arg v-createRuntime",
                           "createContainer second-arg v-createContainer"]
    for kind in ("prestart", "createRuntime", "createContainer"):
        seen = json.loads((log / f"{kind}.json").read_text())
        assert (seen["id"], seen["status"], seen["pid"], seen["bundle"]) == (
            "hk", "creating", pid, str(b)), kind
        assert seen["ociVersion"].startswith("1.")
    # createRuntime in the runtime's namespaces, createContainer in the container's
    # (its path resolved in the host's tree: the script is not in the rootfs).
    host_ns = f"{os.readlink('/proc/self/ns/mnt')} {os.readlink('/proc/self/ns/pid')}"
    container_ns = f"{os.readlink(f'/proc/{pid}/ns/mnt')} {os.readlink(f'/proc/{pid}/ns/pid')}"
    assert (log / "createRuntime.ns").read_text().rsplit(" ", 1)[0] == host_ns
    assert (log / "createContainer.ns").read_text().rsplit(" ", 1)[0] == container_ns
    assert container_ns != host_ns
    # The environment is exactly the hook's env (LOG, PATH, HOOKVAR; sh adds PWD).
    assert int((log / "createRuntime.ns").read_text().split()[-1]) <= 4
    assert not (b / "rootfs" / "hooklog" / "order").exists()  # nothing started yet

    oci("start", "hk", check=True)
    assert _order(log)[-1] == "poststart second-arg v-poststart"
    assert json.loads((log / "poststart.json").read_text())["status"] == "running"
    inner = b / "rootfs" / "hooklog"
    _wait_for(lambda: len(_order(inner)) == 2, "the command's line after startContainer's")
    assert _order(inner) == ["startContainer second-arg v-startContainer", "command"]
    seen = json.loads((inner / "startContainer.json").read_text())
    assert (seen["id"], seen["status"], seen["pid"]) == ("hk", "created", pid)

    oci("kill", "hk", "KILL", check=True)
    _wait_for(lambda: status(oci, "hk") == "stopped", "the container to stop")
    assert "poststop" not in " ".join(_order(log))
    oci("delete", "hk", check=True)
    assert _order(log)[-1] == "poststop second-arg v-poststop"
    seen = json.loads((log / "poststop.json").read_text())
    assert (seen["id"], seen["status"]) == ("hk", "stopped")


def test_run_runs_the_hooks_and_poststop_after_the_command(
        oci: RlOci, bundle: Callable[..., Path], tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    hook = _script(tmp_path / "recorder.sh", RECORDER)
    b = bundle("sh", "-c", "exit 4")
    _with_hooks(b, {k: [_hook(hook, k, str(log))]
                    for k in ("createRuntime", "poststart", "poststop")})
    r = oci("run", "-b", b, "hr")
    assert r.returncode == 4, r.stderr
    assert [line.split()[0] for line in _order(log)] == ["createRuntime", "poststart",
                                                         "poststop"]
    assert oci("list", "-q", check=True).stdout == ""


def test_a_failing_create_hook_fails_create_and_tears_down(
        oci: RlOci, bundle: Callable[..., Path], tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    hook = _script(tmp_path / "recorder.sh", RECORDER)
    failing = _script(tmp_path / "fail.sh", "#!/bin/sh\necho boom >&2\nexit 3\n")
    for kind in ("createRuntime", "createContainer", "prestart"):
        b = bundle("true")
        _with_hooks(b, {kind: [{"path": failing}],
                        "poststop": [_hook(hook, "poststop", str(log))]})
        msg = error_line(oci("create", "-b", b, "hf"))
        assert msg.startswith(f"{kind} hook #0 ({failing}): exit status 3: boom"), msg
        assert oci("list", "-q", check=True).stdout == ""  # torn down
        # The spec's lifecycle continues at delete: poststop runs.
        assert _order(log)[-1] == "poststop second-arg v-poststop"
        (log / "order").unlink()


def test_a_hook_past_its_timeout_is_killed(oci: RlOci, bundle: Callable[..., Path],
                                           tmp_path: Path) -> None:
    pidfile = tmp_path / "hook.pid"
    hang = _script(tmp_path / "hang.sh", f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 1000\n")
    b = bundle("true")
    _with_hooks(b, {"createRuntime": [{"path": hang, "timeout": 1}]})
    msg = error_line(oci("create", "-b", b, "ht"))
    assert msg == f"createRuntime hook #0 ({hang}): timed out after 1 s", msg
    hook_pid = int(pidfile.read_text())
    assert not Path(f"/proc/{hook_pid}").exists() or "Z" in Path(
        f"/proc/{hook_pid}/stat").read_text().split(")")[1].split()[0]
    assert oci("list", "-q", check=True).stdout == ""


def test_poststart_and_poststop_failures_are_warnings(
        oci: RlOci, bundle: Callable[..., Path], tmp_path: Path) -> None:
    failing = _script(tmp_path / "fail.sh", "#!/bin/sh\necho nope >&2\nexit 1\n")
    b = bundle("sleep", "100")
    _with_hooks(b, {"poststart": [{"path": failing}], "poststop": [{"path": failing}]})
    oci("create", "-b", b, "hw", check=True)
    r = oci("start", "hw")
    assert r.returncode == 0 and "level=warning" in r.stderr, r.stderr
    assert f"poststart hook #0 ({failing}): exit status 1: nope" in r.stderr
    assert status(oci, "hw") == "running"
    r = oci("delete", "-f", "hw")
    assert r.returncode == 0 and "poststop hook #0" in r.stderr, r.stderr
    assert oci("list", "-q", check=True).stdout == ""


def test_a_failing_start_container_hook_stops_the_container(
        oci: RlOci, bundle: Callable[..., Path], tmp_path: Path) -> None:
    b = bundle("sh", "-c", "echo command ran")
    _script(b / "rootfs" / "fail.sh", "#!/bin/sh\nexit 5\n")
    _with_hooks(b, {"startContainer": [{"path": "/fail.sh"}]})
    r = oci("run", "-b", b, "hs")
    assert r.returncode == 1 and "command ran" not in r.stdout
    assert "startContainer hook #0 (/fail.sh): exit status 5" in r.stderr
    assert oci("list", "-q", check=True).stdout == ""


def test_bad_hooks_are_refused_naming_the_field(oci: RlOci, bundle: Callable[..., Path]
                                                ) -> None:
    b = bundle("true")
    for hooks, field in (
            ({"poststop": [{"path": "relative/hook"}]}, "hooks.poststop[0].path"),
            ({"createRuntime": [{"path": "/bin/true", "timeout": 0}]},
             "hooks.createRuntime[0].timeout"),
            ({"prestart": [{"args": ["x"]}]}, "hooks.prestart[0].path is missing"),
            ({"poststart": [{"path": "/bin/true", "env": ["NOEQUALS"]}]},
             "hooks.poststart[0].env"),
            ({"startContainer": {"path": "/bin/true"}}, "hooks.startContainer is not a list")):
        _with_hooks(b, hooks)
        assert field in error_line(oci("create", "-b", b, "hb")), hooks
    assert oci("list", "-q", check=True).stdout == ""
