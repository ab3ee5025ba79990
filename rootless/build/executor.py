"""`rl build`'s executor: a parsed Dockerfile run step by step over the engine.

Sequential and uncached for now: the stages the target needs, in file
order, one instruction after another. Each RUN is a container made through
the same engine calls `rl run` uses (containers.create/start/wait), its
diff committed as the next layer; COPY and ADD write a layer tar of context
files; config instructions change the image config and add a history entry
(`empty_layer`). Between steps the stage's image lives in the store as a
nameless intermediate image (a RUN needs an image to start from); every
intermediate is removed when the build ends, and the tags move only after
the whole build succeeded.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rootless import syscalls
from rootless.build import dockerfile, scope
from rootless.build.context import Context, Source
from rootless.build.dockerfile import Dockerfile, Instruction
from rootless.defaults import DEFAULT_NETWORK
from rootless.engine import containers
from rootless.engine import images as engine_images
from rootless.engine.options import CreateOptions
from rootless.engine.store import Container
from rootless.errors import InvalidArgument, NoSuchImage, RlError
from rootless.image import images as imagelib
from rootless.image.store import MT_OCI_LAYER, Image, Store
from rootless.runtime import idmap
from rootless.runtime.spec import IDMapping

DEFAULT_SHELL = ["/bin/sh", "-c"]
_LAYER_KINDS = ("RUN", "COPY", "ADD", "WORKDIR")  # the steps progress numbers, as BuildKit


@dataclass
class BuildOptions:
    """What a face hands the builder, resolved: absolute paths, build args with values."""

    context: str  # the context directory, absolute
    dockerfile: str  # the Dockerfile's path, absolute
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    pull: bool = True  # pull a missing base image (through the face's hook)


class BuildFailed(RlError):
    """A step that failed while running (a RUN's exit status): rl exits 1, as docker."""

    exit_code = 1


@dataclass
class _StageImage:
    """A stage's image as it grows: layers, config and history not yet stored."""

    layers: list[dict[str, Any]]
    diff_ids: list[str]
    config: dict[str, Any]  # the whole image config (architecture, os, config, ...)
    stored: Image | None = None  # the store's image for exactly this state, if written

    @property
    def cc(self) -> dict[str, Any]:
        cfg: dict[str, Any] = self.config.setdefault("config", {})
        return cfg

    def history(self, created_by: str, empty: bool) -> None:
        entry: dict[str, Any] = {"created": imagelib.now_iso(), "created_by": created_by,
                                 "comment": "buildkit.dockerfile.v0"}
        if empty:
            entry["empty_layer"] = True
        self.config.setdefault("history", []).append(entry)
        self.stored = None

    def add_layer(self, digest: str, size: int, diff_id: str, created_by: str) -> None:
        self.layers.append({"mediaType": MT_OCI_LAYER, "digest": digest, "size": size})
        self.diff_ids.append(diff_id)
        self.config["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        self.history(created_by, empty=False)


class Builder:
    """One build: its store, context, progress and the intermediates it made."""

    def __init__(self, opts: BuildOptions, progress: Callable[[str], None],
                 pull: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.progress = progress
        self.pull = pull
        self.store: Store = imagelib.open_store()
        self.intermediates: set[str] = set()  # manifest digests
        self.containers: list[Container] = []
        self._maps: tuple[list[IDMapping], list[IDMapping]] | None = None  # host → container

    # -- the whole build -----------------------------------------------------------

    def build(self) -> Image:
        try:
            with open(self.opts.dockerfile, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            raise InvalidArgument(f"failed to read dockerfile: open {self.opts.dockerfile}: "
                                  f"{os.strerror(e.errno or 0).lower()}") from None
        df = dockerfile.parse(text)
        with Context.directory(self.opts.context, self.opts.dockerfile) as ctx:
            try:
                final = self._build(df, ctx)
            finally:
                self._cleanup()
        return final

    def _build(self, df: Dockerfile, ctx: Context) -> Image:
        target = self._target(df)
        predefined = scope.platform_args(scope.Platform(arch=imagelib.go_arch()),
                                         target_stage=self.opts.target or "")
        bases = scope.scopes(df, self.opts.build_args, predefined)
        needed = self._needed(df, bases, target)
        base_images: dict[str, Image] = {}
        for i in sorted(needed):
            sc = bases[i]
            if sc.base_stage is None and sc.base.lower() != "scratch":
                base_images[sc.base] = self._base_image(sc.base)
        envs = {name: _env_map(img) for name, img in base_images.items()}
        scopes = scope.scopes(df, self.opts.build_args, predefined, envs)
        done: dict[int, _StageImage] = {}
        for i in sorted(needed):
            done[i] = self._stage(df, ctx, scopes, i, done, base_images)
        result = done[target]
        cc = result.cc
        if self.opts.labels:
            cc["Labels"] = {**(cc.get("Labels") or {}), **self.opts.labels}
        result.config["created"] = imagelib.now_iso()
        with self.store.writing():
            img = imagelib.put_image(self.store, result.config, result.layers, [])
            self.intermediates.discard(img.manifest_digest)
            for name in self.opts.tags:
                imagelib.tag(img.id, name)
        return img

    def _target(self, df: Dockerfile) -> int:
        if self.opts.target is None:
            return len(df.stages) - 1
        st = df.stage(self.opts.target)
        if st is None:
            raise InvalidArgument(f'target stage "{self.opts.target}" could not be found')
        return st.index

    def _needed(self, df: Dockerfile, scopes: list[scope.StageScope], target: int) -> set[int]:
        """The stages the target needs: itself, its FROM stage and COPY --from stages."""
        needed: set[int] = set()
        todo = [target]
        while todo:
            i = todo.pop()
            if i in needed:
                continue
            needed.add(i)
            sc = scopes[i]
            if sc.base_stage is not None:
                todo.append(sc.base_stage)
            for ins in sc.stage.instructions:
                src = ins.flag("from")
                if ins.kind == "COPY" and isinstance(src, str):
                    ref = self._stage_ref(df, src, i)
                    if ref is not None:
                        todo.append(ref)
        return needed

    @staticmethod
    def _stage_ref(df: Dockerfile, name: str, before: int) -> int | None:
        st = df.stage(name)
        if st is None or st.index >= before:
            return None
        return st.index

    def _base_image(self, name: str) -> Image:
        try:
            return imagelib.lookup(self.store, name)
        except NoSuchImage:
            if self.pull is None or not self.opts.pull:
                raise
        self.pull(name)
        return imagelib.lookup(self.store, name)

    def _cleanup(self) -> None:
        for ctr in self.containers:
            with contextlib.suppress(RlError, OSError):
                containers.remove(ctr, force=True)
        self.containers.clear()
        if self.intermediates:
            with self.store.writing():
                for digest in self.intermediates:
                    self.store.delete_image(digest)
            self.store.collect(engine_images.holds)  # takes the store's locks itself
            self.intermediates.clear()

    # -- one stage -----------------------------------------------------------------

    def _stage(self, df: Dockerfile, ctx: Context, scopes: list[scope.StageScope], index: int,
               done: dict[int, _StageImage], base_images: dict[str, Image]) -> _StageImage:
        sc = scopes[index]
        stage = sc.stage
        label = stage.name or f"stage-{index}"
        if len(df.stages) == 1 and stage.name is None:
            label = ""
        total = 1 + sum(1 for ins in stage.instructions if ins.kind in _LAYER_KINDS)
        number = 1

        def show(text: str) -> None:
            head = f"{label} {number}/{total}" if label else f"{number}/{total}"
            self.progress(f"[{head}] {text}")

        show(f"FROM {sc.base}")
        if sc.base_stage is not None:
            img = copy.deepcopy(done[sc.base_stage])
            img.stored = done[sc.base_stage].stored
        elif sc.base.lower() == "scratch":
            img = _StageImage([], [], {"architecture": imagelib.go_arch(), "os": "linux",
                                       "config": {}, "rootfs": {"type": "layers",
                                                                "diff_ids": []},
                                       "history": []})
        else:
            base = base_images[sc.base]
            img = _StageImage(list(base.layers), list(base.diff_ids),
                              copy.deepcopy(base.config), stored=base)
            img.config.pop("author", None)
        if img.cc.get("OnBuild"):
            # Silently skipping a base's triggers would build something else than docker.
            raise InvalidArgument(f"Dockerfile:{stage.from_.start_line}: the base {sc.base} has "
                                  "ONBUILD triggers, which rl build does not run yet")
        img.cc.setdefault("Env", [])
        if not img.cc["Env"] and sc.base.lower() == "scratch":
            img.cc["Env"] = [imagelib.DEFAULT_ENV]
        stage_args: dict[str, str] = {}  # ARGs declared here with a value, for RUN's history
        for step in sc.steps:
            ins = _expanded(step, df)
            if ins.kind in _LAYER_KINDS:
                number += 1
                show(_shown(ins))
            where = f"Dockerfile:{ins.start_line}: "
            kind = ins.kind
            if kind == "RUN":
                self._run(img, ins, step, sc, stage_args, where)
            elif kind in ("COPY", "ADD"):
                self._copy(img, ins, ctx, df, index, done, where)
            elif kind == "ARG":
                after = _vars_after(sc, step)
                keys = [w.partition("=")[0] for w in ins.args]
                stage_args.update({k: after[k] for k in keys if k in after})
                img.history("ARG " + " ".join(f"{k}={after[k]}" if k in after else k
                                              for k in keys), empty=True)
            else:
                self._config(img, ins, step, sc, where)
        return img

    # -- RUN -----------------------------------------------------------------------

    def _stored(self, img: _StageImage) -> Image:
        """The stage's current state as an image in the store (a RUN starts from it)."""
        if img.stored is None:
            with self.store.writing():
                stored = imagelib.put_image(self.store, img.config, img.layers, [])
            if not any(stored.manifest_digest == i.manifest_digest for i in self._named()):
                self.intermediates.add(stored.manifest_digest)
            img.stored = stored
        return img.stored

    def _named(self) -> Iterator[Image]:
        return (i for i in self.store.images() if i.names)

    def _run(self, img: _StageImage, ins: Instruction, step: scope.Step,
             sc: scope.StageScope, stage_args: dict[str, str], where: str) -> None:
        if ins.mounts:
            raise InvalidArgument(f"{where}RUN --mount is not supported yet")
        if ins.heredocs:
            raise InvalidArgument(f"{where}RUN with a heredoc is not supported yet")
        if ins.flag("security") == "insecure":
            raise InvalidArgument(f"{where}RUN --security=insecure is not supported")
        shell = list(img.cc.get("Shell") or DEFAULT_SHELL)
        argv = list(ins.args) if ins.json else [*shell, " ".join(ins.args)]
        network = ins.flag("network")
        net = network if isinstance(network, str) else self.opts.network
        net = DEFAULT_NETWORK if net == "default" else net
        env = {**dict(sc.proxy), **dict(step.vars)}
        base = self._stored(img)
        opts = CreateOptions(
            rootfs="", image=base.id, command=argv, entrypoint="",
            env=[f"{k}={v}" for k, v in env.items()],
            workdir=img.cc.get("WorkingDir") or None, user=img.cc.get("User") or None,
            network=net,
        )
        ctr = containers.create(opts)
        self.containers.append(ctr)
        containers.start(ctr, attach=False, stdin=False)
        # start may return before the supervisor records "running" and makes the log;
        # a followed log ends at once without either: wait for both (or the exit).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = ctr.state().status
            if status not in ("created", "running") or (
                    status == "running" and ctr.log_path.exists()):
                break
            time.sleep(0.01)
        # Relayed as it comes (the log, followed until the container exits).
        for rec in containers.logs(ctr, follow=True):
            for line in rec.text.splitlines():
                self.progress(line)
        code = containers.wait(ctr)
        if code != 0:
            shown = " ".join(argv)
            raise BuildFailed(f'process "{shown}" did not complete successfully: '
                              f"exit code: {code}")
        args = {k: v for k, v in stage_args.items() if k not in step.env}
        prefix = f"|{len(args)} " + "".join(f"{k}={v} " for k, v in sorted(args.items())) \
            if args else ""
        with self.store.writing():
            layer = engine_images.commit_layer(ctr, self.store)
        containers.remove(ctr, force=True)
        self.containers.remove(ctr)
        img.add_layer(layer.digest, layer.size, layer.diff_id,
                      f"RUN {prefix}{' '.join(argv)} # buildkit")

    # -- COPY / ADD ----------------------------------------------------------------

    def _copy(self, img: _StageImage, ins: Instruction, ctx: Context, df: Dockerfile,
              index: int, done: dict[int, _StageImage], where: str) -> None:
        if ins.heredocs:
            raise InvalidArgument(f"{where}{ins.kind} with a heredoc is not supported yet")
        for unsupported in ("link", "parents", "exclude", "checksum"):
            if ins.flag(unsupported):
                raise InvalidArgument(f"{where}{ins.kind} --{unsupported} is not supported yet")
        srcs = ins.sources()
        if not srcs:
            raise InvalidArgument(f"{where}{ins.kind} requires at least two arguments, "
                                  "but only one was provided. Destination could not be "
                                  "determined")
        uid, gid = _chown(ins.flag("chown"), where)
        chmod = _chmod(ins.flag("chmod"), where)
        workdir = img.cc.get("WorkingDir") or "/"
        dest = ins.dest()
        as_dir = dest.endswith("/") or dest in (".", "..")
        dest = posixpath.normpath(posixpath.join(workdir, dest))
        from_ = ins.flag("from")
        with tempfile.TemporaryDirectory(prefix="rl-build-") as tmp:
            tar_path = os.path.join(tmp, "layer.tar")
            with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as out:
                if isinstance(from_, str):
                    self._copy_from(out, img, ins, df, index, done, from_, dest, as_dir,
                                    (uid, gid, chmod), where)
                else:
                    self._copy_context(out, img, ins, ctx, srcs, dest, as_dir,
                                       (uid, gid, chmod), where)
            with self.store.writing():
                digest, size = self.store.put_file(tar_path)
                diff_id, _ = self.store.ensure_layer(digest, digest)
        # BuildKit's history names the sources and the destination, never the flags.
        img.add_layer(digest, size, diff_id,
                      f"{ins.kind} {' '.join(srcs)} {ins.dest()} # buildkit")

    def _copy_context(self, out: tarfile.TarFile, img: _StageImage, ins: Instruction,
                      ctx: Context, srcs: tuple[str, ...], dest: str, as_dir: bool,
                      owner: tuple[int, int, int | None], where: str) -> None:
        if ins.kind == "ADD":
            for word in srcs:
                if "://" in word or word.startswith("git@"):
                    raise InvalidArgument(f"{where}ADD of a URL is not supported yet")
        found: list[list[Source]] = [ctx.resolve(src, where) for src in srcs]
        if ins.kind == "ADD":
            for sources in found:
                for src in sources:
                    if src.entry.kind == "file" and _is_archive(ctx, src):
                        # docker unpacks it; copying it as-is would build something else.
                        raise InvalidArgument(f"{where}ADD of a local archive "
                                              f"({src.entry.path}) is not supported yet")
        # docker: several sources (or a wildcard matching several) need a dir/ dest.
        many = len(srcs) > 1 or any(
            any(c in text for c in "*?[") and len(f) > 1
            for text, f in zip(srcs, found, strict=True))
        if many and not as_dir:
            raise InvalidArgument(f"{where}When using {ins.kind} with more than one source "
                                  "file, the destination must be a directory and end with a /")
        into_dir = as_dir or many or _is_dir_source(found[0]) or self._is_dir(img, dest)
        written: set[str] = set()
        for sources in found:
            for src in sources:
                entry_owner = owner
                if src.name == "":  # the directory source itself: the destination
                    name = dest
                    if self._is_dir(img, dest) or name in written:
                        continue
                    # BuildKit makes it as a missing parent: 0755 (--chown's owner),
                    # not the source directory's mode, nor --chmod's.
                    entry_owner = (owner[0], owner[1], 0o755)
                elif into_dir:
                    name = posixpath.join(dest, src.name)
                else:
                    name = dest
                written.add(name)
                _add(out, ctx, src, name, entry_owner)
        self._parents(out, img, written, owner[:2])

    def _copy_from(self, out: tarfile.TarFile, img: _StageImage, ins: Instruction,
                   df: Dockerfile, index: int, done: dict[int, _StageImage], from_: str,
                   dest: str, as_dir: bool, owner: tuple[int, int, int | None],
                   where: str) -> None:
        ref = self._stage_ref(df, from_, index)
        if ref is None:
            raise InvalidArgument(f"{where}COPY --from={from_}: no earlier stage of that name "
                                  "(images are not supported yet)")
        source = self._stored(done[ref])
        written: set[str] = set()
        ctr = containers.create(CreateOptions(rootfs="", image=source.id, command=["true"],
                                              entrypoint="", network="none"))
        self.containers.append(ctr)
        with tempfile.TemporaryFile() as tree:
            engine_images.export(ctr, tree.fileno())
            containers.remove(ctr, force=True)
            self.containers.remove(ctr)
            tree.seek(0)
            with tarfile.open(fileobj=tree, mode="r:") as tf:
                members = {_abs(m.name): m
                           for m in tf.getmembers()}
                for src in ins.sources():
                    path = _abs(src)
                    top = members.get(path)
                    if top is None:
                        raise InvalidArgument(
                            f'{where}failed to compute cache key: "{path}": not found')
                    if top.isdir():
                        picked = [(m, posixpath.join(dest, p[len(path):].lstrip("/")))
                                  for p, m in members.items()
                                  if p == path or p.startswith(path.rstrip("/") + "/")]
                    else:
                        name = posixpath.join(dest, posixpath.basename(path)) \
                            if as_dir or len(ins.sources()) > 1 or self._is_dir(img, dest) \
                            else dest
                        picked = [(top, name)]
                    for m, name in picked:
                        top_dir = m.isdir() and posixpath.normpath(name) == dest
                        if top_dir and self._is_dir(img, dest):
                            continue
                        copied = copy.copy(m)
                        copied.name = posixpath.normpath(name).lstrip("/") or "."
                        uid, gid, chmod = owner
                        if uid >= 0:
                            copied.uid, copied.gid, copied.uname, copied.gname = uid, gid, "", ""
                        if chmod is not None:
                            copied.mode = chmod
                        if top_dir:  # made as a missing parent, as from the context
                            copied.mode = 0o755
                        written.add(posixpath.normpath(name))
                        data = tf.extractfile(m) if m.isfile() else None
                        out.addfile(copied, data)
        self._parents(out, img, written, owner[:2])

    def _is_dir(self, img: _StageImage, path: str) -> bool:
        """Whether *path* is a directory in the stage's file system (its layers, top down;
        whiteouts are not read: a directory deleted in a later layer still counts)."""
        rel = path.strip("/")
        if not rel:
            return True
        for diff_id in reversed(img.diff_ids):
            try:
                st = os.lstat(os.path.join(self.store.layer_dir(diff_id), rel))
            except OSError:
                continue
            return stat.S_ISDIR(st.st_mode)
        return False

    def _lstat(self, img: _StageImage, path: str) -> os.stat_result | None:
        """*path* in the stage's file system, its ids as the container sees them (the
        topmost layer that has it; whiteouts are not read, as in _is_dir)."""
        rel = path.strip("/")
        for diff_id in reversed(img.diff_ids):
            try:
                st = os.lstat(os.path.join(self.store.layer_dir(diff_id), rel))
            except (FileNotFoundError, NotADirectoryError):
                continue
            if self._maps is None:
                plan = idmap.plan()
                self._maps = (plan.uid_mappings, plan.gid_mappings)
            uid, gid = (_container_id(host, maps)
                        for host, maps in zip((st.st_uid, st.st_gid), self._maps, strict=True))
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, uid, gid,
                                   st.st_size, int(st.st_atime), int(st.st_mtime),
                                   int(st.st_ctime)))
        return None

    def _parents(self, out: tarfile.TarFile, img: _StageImage, written: set[str],
                 owner: tuple[int, int]) -> None:
        """Entries for the parent directories of what a step wrote: as the image has
        them where they exist (left implicit, the layer's would be 0:0 0755 and hide the
        image's owner and mode, /tmp's sticky bit too), else 0755 and owned by *owner*
        (--chown's or USER's), as BuildKit's MkdirAll makes them."""
        names = {posixpath.normpath("/" + n) for n in written}
        parents: set[str] = set()
        for name in names:
            parent = posixpath.dirname(name)
            while parent != "/" and parent not in names and parent not in parents:
                parents.add(parent)
                parent = posixpath.dirname(parent)
        for parent in sorted(parents):
            info = tarfile.TarInfo(parent.lstrip("/"))
            info.type = tarfile.DIRTYPE
            try:
                st = self._lstat(img, parent)
            except OSError:  # unreadable to rl (a sub-id's 0700 directory): left implicit
                continue
            if st is not None:
                if not stat.S_ISDIR(st.st_mode):
                    continue  # a symlink on the way: left as it is
                info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
                info.mtime = int(st.st_mtime)
            else:
                info.mode, info.mtime = 0o755, int(time.time())
                info.uid, info.gid = max(owner[0], 0), max(owner[1], 0)
            out.addfile(info)

    def _user_ids(self, img: _StageImage, spec: str, where: str) -> tuple[int, int]:
        """USER's uid and gid for what WORKDIR creates (BuildKit's mkdir WithUser): numbers
        as they are (a lone uid is its gid too), names from the image's passwd/group."""
        user, _, group = spec.partition(":")
        uid = gid = 0
        if user.isdigit():
            uid = gid = int(user)
        else:
            entry = self._account(img, "etc/passwd", user, 7, where)
            uid, gid = int(entry[2]), int(entry[3])
        if group.isdigit():
            gid = int(group)
        elif group:
            gid = int(self._account(img, "etc/group", group, 3, where)[2])
        return uid, gid

    def _account(self, img: _StageImage, rel: str, name: str, fields: int,
                 where: str) -> list[str]:
        """The entry of *name* in the image's account file *rel*, read beneath its layer
        without following a symlink (the image is hostile input)."""
        what = "user" if rel.endswith("passwd") else "group"
        for diff_id in reversed(img.diff_ids):
            try:
                root = os.open(self.store.layer_dir(diff_id), os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fd = syscalls.openat2(root, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC,
                                      syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS)
            except OSError:
                continue
            finally:
                os.close(root)
            with os.fdopen(fd, "rb") as f:
                text = f.read(32 << 20).decode(errors="replace") \
                    if stat.S_ISREG(os.fstat(fd).st_mode) else ""
            for line in text.splitlines():
                parts = line.split(":")
                if len(parts) >= fields and parts[0] == name and parts[2].isdigit() and \
                        (fields < 7 or parts[3].isdigit()):
                    return parts
            break
        raise InvalidArgument(f"{where}unable to find {what} {name}: no matching entries "
                              f"in {what} file")

    # -- config instructions -------------------------------------------------------

    def _config(self, img: _StageImage, ins: Instruction, step: scope.Step,
                sc: scope.StageScope, where: str) -> None:
        cc = img.cc
        kind = ins.kind
        shell = list(cc.get("Shell") or DEFAULT_SHELL)
        if kind == "ENV":
            env = dict(_env_pairs(cc.get("Env") or []))
            pairs = ins.pairs()
            for k, v in pairs:
                env[k] = v
            cc["Env"] = [f"{k}={v}" for k, v in env.items()]
            img.history("ENV " + " ".join(f"{k}={v}" for k, v in pairs), empty=True)
        elif kind == "LABEL":
            labels = dict(cc.get("Labels") or {})
            pairs = ins.pairs()
            labels.update(pairs)
            cc["Labels"] = labels
            img.history("LABEL " + " ".join(f"{k}={v}" for k, v in pairs), empty=True)
        elif kind == "WORKDIR":
            path = posixpath.normpath(posixpath.join(cc.get("WorkingDir") or "/", ins.args[0]))
            cc["WorkingDir"] = path
            if self._is_dir(img, path):
                img.history(f"WORKDIR {path}", empty=True)
            else:
                user = cc.get("User") or ""
                owner = self._user_ids(img, user, where) if user else (0, 0)
                self._mkdir_layer(img, path, f"WORKDIR {path}", owner)
        elif kind == "USER":
            cc["User"] = ins.args[0]
            img.history(f"USER {ins.args[0]}", empty=True)
        elif kind in ("CMD", "ENTRYPOINT"):
            argv = list(ins.args) if ins.json else [*shell, " ".join(ins.args)]
            if kind == "CMD":
                cc["Cmd"] = argv
            else:
                cc["Entrypoint"] = argv
                # BuildKit: ENTRYPOINT drops a Cmd this stage's own CMD did not set.
                if not any(i.kind == "CMD" for i in sc.stage.instructions
                           if i.start_line < ins.start_line):
                    cc.pop("Cmd", None)
            img.history(f"{kind} {_go_quote_list(argv)}", empty=True)
        elif kind == "EXPOSE":
            ports = dict(cc.get("ExposedPorts") or {})
            shown = []
            for word in ins.args:
                port = word if "/" in word else f"{word}/tcp"
                number, _, proto = port.partition("/")
                if not number.replace("-", "").isdigit() or proto.lower() not in (
                        "tcp", "udp", "sctp"):
                    raise InvalidArgument(f"{where}invalid containerPort: {word}")
                ports[f"{number}/{proto.lower()}"] = {}
                shown.append(f"{number}/{proto.lower()}")
            cc["ExposedPorts"] = ports
            img.history(f"EXPOSE [{' '.join(shown)}]", empty=True)
        elif kind == "VOLUME":
            volumes = dict(cc.get("Volumes") or {})
            words = list(ins.args)
            for v in words:
                if not v.strip():
                    raise InvalidArgument(f"{where}VOLUME specified can not be an empty string")
                volumes[v] = {}
            cc["Volumes"] = volumes
            img.history(f"VOLUME [{' '.join(words)}]", empty=True)
        elif kind == "STOPSIGNAL":
            cc["StopSignal"] = ins.args[0]
            img.history(f"STOPSIGNAL {ins.args[0]}", empty=True)
        elif kind == "SHELL":
            if not ins.json:
                raise InvalidArgument(f"{where}SHELL requires the arguments to be in JSON form")
            cc["Shell"] = list(ins.args)
            img.history(f"SHELL [{' '.join(ins.args)}]", empty=True)
        elif kind == "MAINTAINER":
            img.config["author"] = " ".join(ins.args)
            img.history(f"MAINTAINER {' '.join(ins.args)}", empty=True)
        elif kind == "ONBUILD":
            trigger = ins.original.split(None, 1)[1] if " " in ins.original.strip() else ""
            cc["OnBuild"] = [*(cc.get("OnBuild") or []), trigger.strip()]
            img.history(f"ONBUILD {trigger.strip()}", empty=True)
        elif kind == "HEALTHCHECK":
            self._healthcheck(img, ins, where)
        else:
            raise InvalidArgument(f"{where}{kind} is not supported yet")

    def _healthcheck(self, img: _StageImage, ins: Instruction, where: str) -> None:
        hc = ins.healthcheck
        assert hc is not None
        out: dict[str, Any] = {"Test": list(hc.test)}
        for key, text in (("Interval", hc.interval), ("Timeout", hc.timeout),
                          ("StartPeriod", hc.start_period),
                          ("StartInterval", hc.start_interval)):
            if text:
                out[key] = _duration_ns(text, where)
        if hc.retries is not None:
            out["Retries"] = hc.retries
        img.cc["Healthcheck"] = out
        img.history(f"HEALTHCHECK {_go_quote_list(list(hc.test))}", empty=True)

    def _mkdir_layer(self, img: _StageImage, path: str, created_by: str,
                     owner: tuple[int, int]) -> None:
        with tempfile.TemporaryDirectory(prefix="rl-build-") as tmp:
            tar_path = os.path.join(tmp, "layer.tar")
            with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as out:
                self._parents(out, img, {path}, owner)
                info = tarfile.TarInfo(path.strip("/"))
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                info.uid, info.gid = owner
                out.addfile(info)
            with self.store.writing():
                digest, size = self.store.put_file(tar_path)
                diff_id, _ = self.store.ensure_layer(digest, digest)
        img.add_layer(digest, size, diff_id, created_by)


# -- helpers ---------------------------------------------------------------------------


def build(opts: BuildOptions, progress: Callable[[str], None],
          pull: Callable[[str], None] | None = None) -> Image:
    """Build the Dockerfile of *opts*; the image (tagged as -t asked). *progress* gets
    the step lines and RUN output; *pull* fetches a missing base image."""
    return Builder(opts, progress, pull).build()


def _expanded(step: scope.Step, df: Dockerfile) -> Instruction:
    return scope.expand_instruction(step.instruction, step.vars, df.directives.escape)


def _abs(path: str) -> str:
    """*path* as an absolute, clean path (normpath alone keeps a leading "//")."""
    return posixpath.normpath("/" + path.lstrip("/")) if path.strip("/.") else "/"


def _vars_after(sc: scope.StageScope, step: scope.Step) -> dict[str, str]:
    steps = list(sc.steps)
    i = steps.index(step)
    return dict(steps[i + 1].vars) if i + 1 < len(steps) else dict(sc.vars)


def _shown(ins: Instruction) -> str:
    """The instruction as progress shows it: its original text on one line."""
    return " ".join(ins.original.split())


def _env_map(img: Image) -> dict[str, str]:
    return dict(_env_pairs((img.config.get("config") or {}).get("Env") or []))


def _env_pairs(env: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in env:
        k, _, v = item.partition("=")
        out.append((k, v))
    return out


def _container_id(host: int, maps: list[IDMapping]) -> int:
    """The container's id for a host id of a layer file (the overflow id if unmapped)."""
    for m in maps:
        if m.host_id <= host < m.host_id + m.size:
            return m.container_id + host - m.host_id
    return 65534


def _is_dir_source(sources: list[Source]) -> bool:
    return any(s.name == "" for s in sources)


def _is_archive(ctx: Context, src: Source) -> bool:
    """Whether a context file is a tar (plain, gzip, bzip2 or xz), which ADD unpacks."""
    with os.fdopen(ctx.open(src.entry.path), "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r:*"):
                return True
        except (tarfile.TarError, EOFError, OSError):
            return False


def _chown(value: object, where: str) -> tuple[int, int]:
    """--chown=UID[:GID] (numeric; GID defaults to UID); (-1, -1) when absent."""
    if not isinstance(value, str) or not value:
        return -1, -1
    user, _, group = value.partition(":")
    group = group or user
    if not (user.isdigit() and group.isdigit()):
        raise InvalidArgument(f"{where}--chown={value}: only numeric UID:GID is supported yet")
    return int(user), int(group)


def _chmod(value: object, where: str) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise InvalidArgument(f"{where}invalid chmod parameter: {value}") from None
    if mode > 0o7777:
        raise InvalidArgument(f"{where}invalid chmod parameter: {value}")
    return mode


def _add(out: tarfile.TarFile, ctx: Context, src: Source, name: str,
         owner: tuple[int, int, int | None]) -> None:
    """One context file into the layer tar at *name*: owned 0:0 unless --chown."""
    uid, gid, chmod = owner
    entry = src.entry
    info = tarfile.TarInfo(name.strip("/") or ".")
    info.uid, info.gid = max(uid, 0), max(gid, 0)
    info.mode = chmod if chmod is not None else entry.mode
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mtime = int(time.time())
        out.addfile(info)
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
        info.mtime = int(time.time())
        out.addfile(info)
    else:
        fd = ctx.open(entry.path)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            info.size, info.mtime = st.st_size, int(st.st_mtime)
            out.addfile(info, f)


def _duration_ns(text: str, where: str) -> int:
    """A Go duration ("30s", "1m30s", "500ms") in nanoseconds."""
    units = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9,
             "m": 60 * 10**9, "h": 3600 * 10**9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f'{where}time: invalid duration "{text}"')
    return int(sum(float(n) * units[u] for n, u in parts))


def _go_quote_list(words: list[str]) -> str:
    """Go's %q of a []string, as BuildKit writes CMD/ENTRYPOINT in the history."""
    return "[" + " ".join(json.dumps(w, ensure_ascii=False) for w in words) + "]"

