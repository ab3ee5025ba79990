"""RUN's heredocs, `--mount`s and flags, as BuildKit's dockerfile2llb gives them.

`command` turns a RUN into the argv its container runs: a heredoc alone on
the line is the script (run by the shell, or executed from /dev/pipes when it
starts with `#!`); any other line with heredocs goes to the shell with the
bodies put back after it, and the shell does the rest (`<<-`, quoting, fds).

`Mounts.prepare` turns a RUN's `--mount`s into the engine's own mounts
(CreateOptions volumes and tmpfs): every one is a real mount in the RUN's
container, and only what the mount names reaches it.

- bind from the context: a private copy of the source (the filtered context,
  resolved beneath its root, symlinks that leave it refused), so .dockerignored
  files, the host's files and a later change of the context never show, and
  `rw` writes land in the copy that is then thrown away (BuildKit's rule);
- bind `from=stage|image`: that image's tree composed in the user namespace
  (owners kept), the source resolved inside it, thrown away after the step;
- cache: a directory kept between builds under
  `<store root>/build-mounts/<sha256 of id>/data`, with `sharing` done by
  flock on the `lock` file beside it (a kill -9 frees it);
- tmpfs: the engine's tmpfs;
- secret: the value written to a 0700 directory in the runtime dir (a tmpfs,
  never the store), bound read-only; `env=` puts it in the step's environment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rootless import paths
from rootless import syscalls as sc
from rootless.build.context import Context, Source
from rootless.build.dockerfile import Heredoc, Instruction, Mount, is_heredoc_word
from rootless.engine.options import Bind
from rootless.errors import InvalidArgument, RlError
from rootless.image.store import Image, Store
from rootless.runtime.mounts import refused_destination

PIPES = "/dev/pipes/"  # where BuildKit puts a `#!` heredoc to run it
SECRETS = "/run/secrets/"
MAX_SECRET = 500 * 1024  # BuildKit's secret size limit (500KB)
_SIZE = re.compile(r"^\d+[kKmMgG%]?$")


@dataclass(frozen=True)
class Secret:
    """A `--secret` the face resolved: a host file's path, or an env var's value."""

    id: str
    path: str | None = None  # absolute
    value: bytes | None = None


# -- the command -------------------------------------------------------------------


def command(ins: Instruction, shell: list[str], where: str) -> tuple[list[str], Heredoc | None]:
    """The RUN's argv, and the heredoc to provide at /dev/pipes/NAME if it runs one."""
    if not ins.heredocs:
        return (list(ins.args) if ins.json else [*shell, " ".join(ins.args)]), None
    if ins.json or len(ins.args) != 1:
        raise InvalidArgument(f"{where}parsing produced an invalid run command: "
                              f"[{' '.join(ins.args)}]")
    line = ins.args[0]
    if is_heredoc_word(line.strip()):
        doc = ins.heredocs[0]  # the parser has removed a `<<-`'s tabs already
        if doc.content.startswith("#!"):
            if "/" in doc.name or doc.name in (".", ".."):
                raise InvalidArgument(f"{where}a heredoc run as a script cannot be named "
                                      f"{doc.name!r}")
            return [*shell, PIPES + doc.name], doc
        return [*shell, doc.content], None
    # The shell reads the heredocs itself: the line, then each body and its delimiter.
    return [*shell, line + "".join("\n" + d.content + d.name for d in ins.heredocs)], None


def check_flags(ins: Instruction, where: str) -> None:
    """What BuildKit refuses before a RUN runs (flag values were checked at parse time)."""
    if ins.flag("security") == "insecure":
        # BuildKit without the security.insecure entitlement, which rl never grants.
        raise InvalidArgument(f"{where}RUN --security=insecure: granting entitlement "
                              "security.insecure is not allowed by build daemon configuration")
    for m in ins.mounts:
        if m.type == "ssh":
            raise _no_ssh(where)


def _no_ssh(where: str) -> InvalidArgument:
    return InvalidArgument(f"{where}RUN --mount=type=ssh is not supported: rl build forwards "
                           "no SSH agent")


def mount_stages(ins: Instruction) -> list[str]:
    """The `from=` names of a RUN's mounts (never variables: refused at parse time)."""
    texts = ins.flags.get("mount", ())
    out = []
    for text in texts if isinstance(texts, tuple) else ():
        for item in text.split(","):
            key, eq, value = item.partition("=")
            if eq and key.strip().lower() == "from" and value:
                out.append(value)
    return out


def key(ins: Instruction, context: Context, workdir: str) -> str:
    """The mounts' share of a RUN's cache key: their options, a context bind's
    content hash; of a secret only the id (its value must never be in a key)."""
    h = hashlib.sha256()
    for m in ins.mounts:
        target = _target(m, workdir, "")
        fields = [m.type, target, m.source, m.from_, m.id, m.sharing, str(m.readonly),
                  str(m.mode), str(m.uid), str(m.gid), m.size, str(m.env), str(m.required)]
        if m.type == "bind" and not m.from_:
            fields.append(context.sources_digest(context.resolve(m.source.lstrip("/") or ".")))
        h.update("\0".join(fields).encode() + b"\n")
    return "sha256:" + h.hexdigest()


# -- the mounts --------------------------------------------------------------------


@dataclass(eq=False)  # one step's: compared by identity (list.remove)
class Prepared:
    """One RUN's mounts for CreateOptions, and what to undo after the step."""

    volumes: list[Bind] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)  # KEY=VALUE of `env=` secrets
    locked: set[str] = field(default_factory=set)  # cache homes this step holds a lock on
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        self.stack.close()


class Mounts:
    """A build's RUN mounts: the context, how to reach an image, the secrets."""

    def __init__(self, store: Store, context: Context, secrets: Mapping[str, Secret],
                 image: Callable[[str], Image]) -> None:
        self.store = store
        self.context = context
        self.secrets = secrets
        self.image = image  # a mount's from= (a stage or an image) as a stored image
        self.open: list[Prepared] = []
        self._swept: set[Path] = set()

    def close(self) -> None:
        """Undo every step's mounts still open (a failed step's)."""
        while self.open:
            self.open.pop().close()

    def done(self, prepared: Prepared) -> None:
        """Undo one step's mounts (others' may still be open, in stages run side by side)."""
        if prepared in self.open:
            self.open.remove(prepared)
        prepared.close()

    def prepare(self, ins: Instruction, script: Heredoc | None, workdir: str,
                where: str) -> Prepared:
        """The mounts of RUN *ins* (and its `#!` heredoc); close() the result after the step."""
        out = Prepared()
        self.open.append(out)
        try:
            if script is not None:
                tmp = self._tmp(out)
                tmp.chmod(0o755)  # any USER may run it, as from BuildKit's scratch directory
                (tmp / script.name).write_text(script.content, encoding="utf-8",
                                               errors="surrogateescape")
                (tmp / script.name).chmod(0o755)
                out.volumes.append(_bind(str(tmp), PIPES.rstrip("/"), True))
            # Parents before children, whatever the order written: a mount over
            # /a after one over /a/b would hide it.
            for m in sorted(ins.mounts, key=lambda m: _target(m, workdir, where).count("/")):
                self._one(m, workdir, where, out)
        except BaseException:
            self.open.remove(out)
            out.close()
            raise
        return out

    def _one(self, m: Mount, workdir: str, where: str, out: Prepared) -> None:
        if m.type == "ssh":
            raise _no_ssh(where)
        if m.type == "secret":
            self._secret(m, workdir, where, out)
            return
        target = _target(m, workdir, where)
        if m.type == "tmpfs":
            opts = ["exec"]  # BuildKit's tmpfs is nosuid only: a build may run what it puts there
            if m.size:
                if not _SIZE.match(m.size):
                    raise InvalidArgument(f"{where}invalid tmpfs size {m.size!r}")
                opts.append(f"size={m.size}")
            out.tmpfs.append(f"{target}:{','.join(opts)}")
        elif m.type == "bind":
            out.volumes.append(_bind(self._bind_source(m, where, out), target, m.readonly))
        elif m.type == "cache":
            out.volumes.append(_bind(self._cache(m, target, where, out), target, m.readonly))

    # -- bind ------------------------------------------------------------------

    def _bind_source(self, m: Mount, where: str, out: Prepared) -> str:
        # Relative to the root of the context or image, written either way.
        source = m.source.lstrip("/") or "."
        if m.from_:
            tree = self._tree(m.from_, out)
            return _inside(tree, source, m.from_, where)
        found = self.context.resolve(source, where)
        tmp = self._tmp(out)
        if any(s.name == "" for s in found):  # a directory: its contents
            root = tmp / "src"
            _materialize(self.context, found, root)
            return str(root)
        (src,) = found
        dest = tmp / src.name
        _copy_file(self.context, src.entry.path, dest, src.entry.mode)
        return str(dest)

    def _tree(self, name: str, out: Prepared) -> Path:
        """The file tree of a mount's from= image, composed in the user namespace."""
        from rootless.image import layers
        from rootless.runtime import userns

        img = self.image(name)
        for layer, diff_id in zip(img.layers, img.diff_ids, strict=False):
            self.store.ensure_layer(layer["digest"], diff_id)
        lowers = [str(self.store.layer_dir(d)) for d in img.diff_ids]
        root = self._tmp(out) / "tree"
        root.mkdir(mode=0o755)

        def compose() -> None:
            for d in lowers:
                layers.apply(d, str(root))

        userns.run(compose)
        return root

    # -- cache -----------------------------------------------------------------

    def _cache(self, m: Mount, target: str, where: str, out: Prepared) -> str:
        cid = m.id or target
        home = self.store.root / "build-mounts" / hashlib.sha256(cid.encode()).hexdigest()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = home / "data"
        if str(home) in out.locked:  # the same cache twice in a step: one lock, no deadlock
            return str(data)
        out.locked.add(str(home))
        lock = os.open(home / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        out.stack.callback(os.close, lock)
        sharing = m.sharing or "shared"
        if sharing == "private":
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # In use: this step gets a cache of its own, thrown away after it.
                fresh = self._tmp(out) / "cache"
                self._new_cache(m, fresh, out, where)
                return str(fresh)
        else:
            fcntl.flock(lock, fcntl.LOCK_EX if sharing == "locked" else fcntl.LOCK_SH)
        if not data.is_dir():
            # Made beside its final name: a directory owned by uid= cannot be moved to
            # another parent (its ".." would change), and a kill -9 leaves no half cache.
            from rootless.runtime import userns

            staging = home / f".new-{os.getpid()}-{os.urandom(6).hex()}"
            out.stack.callback(userns.remove_tree, staging)
            self._new_cache(m, staging, out, where)
            try:
                os.rename(staging, data)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # another build's came first
                    raise
        return str(data)

    def _new_cache(self, m: Mount, path: Path, out: Prepared, where: str) -> None:
        """An empty cache directory (or a copy of from=/source=), with mode, uid, gid."""
        from rootless.runtime import userns

        mode = 0o755 if m.mode is None else m.mode
        uid, gid = m.uid or 0, m.gid or 0
        if m.from_:
            seed = _inside(self._tree(m.from_, out), m.source or ".", m.from_, where)

            def copy() -> None:
                shutil.copytree(seed, path, symlinks=True, copy_function=_copy_owned)
                _own_tree(seed, path)
                os.chown(path, uid, gid)
                os.chmod(path, mode)

            userns.run(copy)
            return
        path.mkdir(mode=0o700)
        if uid or gid:
            def own() -> None:
                os.chown(path, uid, gid)
                os.chmod(path, mode)

            userns.run(own)
        else:
            path.chmod(mode)

    # -- secret ----------------------------------------------------------------

    def _secret(self, m: Mount, workdir: str, where: str, out: Prepared) -> None:
        sid = m.id or m.source or (posixpath.basename(m.target) if m.target else "")
        secret = self.secrets.get(sid)
        if secret is None:
            if m.required:
                raise InvalidArgument(f"{where}secret {sid}: not found")
            return  # BuildKit leaves an optional secret that was not given out
        value = _secret_value(secret, where)
        if m.env:
            out.env.append(f"{m.env}={value.decode('utf-8', 'surrogateescape')}")
            if not m.target:
                return
        target = _target(m, workdir, where) if m.target else SECRETS + sid
        holder = self._tmp(out, paths.runtime_dir() / "build-secrets")
        path = holder / "secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
        mode = 0o400 if m.mode is None else m.mode
        uid, gid = m.uid or 0, m.gid or 0
        if uid or gid:
            from rootless.runtime import userns

            def own() -> None:
                os.chown(path, uid, gid)
                os.chmod(path, mode)

            userns.run(own)
        else:
            path.chmod(mode)
        out.volumes.append(_bind(str(path), target, True))

    # -- temporary trees -------------------------------------------------------

    def _tmp(self, out: Prepared, base: Path | None = None) -> Path:
        """A private directory for one step (removed with it), by default in the store's
        file system; what a killed build left in *base* goes first."""
        base = base or self.store.root / "build-tmp"
        if base not in self._swept:
            self._swept.add(base)
            _sweep(base)
        return Path(_private_dir(base, out))


def _private_dir(base: Path, out: Prepared) -> str:
    from rootless.runtime import userns

    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = base / f"{os.getpid()}-{os.urandom(6).hex()}"
    path.mkdir(mode=0o700)
    out.stack.callback(userns.remove_tree, path)
    return str(path)


def _sweep(base: Path) -> None:
    """Remove what a killed build left in *base* (its names start with the pid)."""
    from rootless.runtime import userns

    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            pid = name.partition("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(RlError, OSError):
                    userns.remove_tree(base / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _secret_value(secret: Secret, where: str) -> bytes:
    if secret.value is not None:
        return secret.value
    assert secret.path is not None
    try:
        fd = os.open(secret.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidArgument(f"{where}secret {secret.id}: {secret.path} is not a file")
            data = f.read(MAX_SECRET + 1)
    except OSError as e:
        raise RlError(f"failed to stat {secret.path}: stat {secret.path}: "
                      f"{os.strerror(e.errno or 0).lower()}", 1) from None
    if len(data) > MAX_SECRET:
        raise InvalidArgument(f"{where}secret {secret.id} too big. max size 500KB")
    return data


def _target(m: Mount, workdir: str, where: str) -> str:
    if m.type == "secret" and not m.target:
        return SECRETS + (m.id or m.source)
    if not m.target:
        raise InvalidArgument(f"{where}mount type {m.type} needs a target")
    target = posixpath.normpath(posixpath.join(workdir or "/", m.target))
    if ":" in target:
        # The engine's binds are HOST:CONTAINER text: one more colon would split it.
        raise InvalidArgument(f"{where}a mount target with ':' is not supported: {target}")
    target = "/" + target.lstrip("/")
    why = refused_destination(target)
    if why is not None:
        raise InvalidArgument(f"{where}invalid mount target {target}: {why}")
    return target


def _bind(source: str, target: str, readonly: bool) -> Bind:
    return Bind(f"{source}:{target}:{'ro' if readonly else 'rw'}", source)


def _inside(tree: Path, source: str, name: str, where: str) -> str:
    """*source* within an image's *tree*, its symlinks resolved as inside that root."""
    from rootless.runtime import userns

    rel = source.strip("/") or "."

    def resolve() -> str:
        root_fd = os.open(tree, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = sc.openat2(root_fd, rel, os.O_PATH | os.O_CLOEXEC,
                            sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            raise InvalidArgument(f"{where}failed to mount {source} from {name}: "
                                  f"{os.strerror(e.errno or 0).lower()}") from None
        finally:
            os.close(root_fd)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if real != str(tree) and not real.startswith(str(tree) + "/"):
            raise InvalidArgument(f"{where}failed to mount {source} from {name}: outside "
                                  "its root")
        return real

    return userns.run(resolve)


def _materialize(context: Context, found: list[Source], root: Path) -> None:
    """A directory source's files (from Context.resolve) copied under *root*."""
    sources = sorted(found, key=lambda s: s.name)
    modes: list[tuple[Path, int]] = []
    for src in sources:
        path = root / src.name if src.name else root
        entry = src.entry
        if entry.kind == "dir":
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            modes.append((path, entry.mode))
            continue
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if entry.kind == "symlink":
            # A symlink stays one: inside the container it resolves in the container.
            os.symlink(entry.target, path)
        else:
            _copy_file(context, entry.path, path, entry.mode)
    for path, mode in reversed(modes):  # a 0555 directory is set only once it is full
        os.chmod(path, mode)


def _copy_file(context: Context, name: str, dest: Path, mode: int) -> None:
    src = context.open(name)  # beneath the root, no symlinks, a regular file
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(src, "rb", closefd=False) as r, os.fdopen(fd, "wb",
                                                                    closefd=False) as w:
                shutil.copyfileobj(r, w, 1 << 20)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    finally:
        os.close(src)


def _copy_owned(src: str, dst: str) -> None:
    shutil.copy2(src, dst)
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)


def _own_tree(src: str, dst: Path) -> None:
    """Directory and symlink owners of a copied tree (copytree sets only modes)."""
    for top, dirs, files in os.walk(src):
        rel = os.path.relpath(top, src)
        for name in [*dirs, *files, "."] if rel == "." else [*dirs, *files]:
            s = os.path.join(top, name)
            d = os.path.normpath(os.path.join(dst, rel, name))
            st = os.lstat(s)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
                os.lchown(d, st.st_uid, st.st_gid)
