"""`rl build`'s executor: a parsed Dockerfile run step by step over the engine.

The stages the target needs, each once, independent ones at once
(_stages); in a stage one instruction after another, each served from the
content-keyed cache when it can be (rootless.build.cache). Each RUN is a
container made through the same engine calls `rl run` uses
(containers.create/start/wait), its
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
import dataclasses
import io
import json
import os
import posixpath
import re
import select
import signal
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from rootless import syscalls
from rootless.build import (
    cache,
    checks,
    copying,
    dockerfile,
    output,
    reproducible,
    runmounts,
    scope,
)
from rootless.build.context import Context, Source
from rootless.build.dockerfile import Dockerfile, Instruction
from rootless.build.output import Output
from rootless.build.progress import CANCELED, Sink, Tracker, discard
from rootless.build.progress import decode as decode_event
from rootless.build.progress import encode as encode_event
from rootless.defaults import DEFAULT_NETWORK
from rootless.errors import InvalidArgument, NoSuchImage, RlError
from rootless.image import images as imagelib
from rootless.image.store import MT_OCI_LAYER, Image, Store
from rootless.runtime import idmap
from rootless.runtime.spec import IDMapping

# The engine is imported where a step needs a container (RUN, COPY --from): a
# fully cached build never loads it (a third of its start-up).
if TYPE_CHECKING:
    from rootless.engine.store import Container

DEFAULT_SHELL = ["/bin/sh", "-c"]
HASH_REPORT = 25_000  # files between two "hashing the context" lines
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
    secrets: dict[str, runmounts.Secret] = field(default_factory=dict)  # --secret, by id
    source_date_epoch: int | None = None  # reproducible output (build/reproducible.py)
    # `-f -`, or a bare Dockerfile as the "-" context: its text (dockerfile then names it)
    dockerfile_text: str | None = None
    # a "-" context that is a tar: the stream (context is then unused; dockerfile is
    # the Dockerfile's path inside it, relative)
    context_tar: IO[bytes] | None = None
    # --output, each exported (build/output.py); none: into the store
    outputs: list[Output] = field(default_factory=list)
    output_stream: IO[bytes] | None = None  # where an output's dest "-" goes
    no_cache: bool = False  # --no-cache: run every step (records are still written)
    no_cache_filter: list[str] = field(default_factory=list)  # stages not served from cache
    cache_from: list[str] = field(default_factory=list)  # local images whose history seeds hits


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
    key: str = ""  # the cache key of exactly this state (rootless.build.cache)
    nocache: bool = False  # a step of this state's chain ran uncached: no lookups after it

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

    def __init__(self, opts: BuildOptions, progress: Sink,
                 pull: Callable[[str], None] | None = None,
                 lint: Callable[[list[checks.Warning]], None] | None = None) -> None:
        self.opts = opts
        self.lint = lint
        self.tracker = Tracker(progress)  # steps as events (build/progress.py)
        self.progress = self.tracker.log  # a line of the open step's output
        self.pull = pull
        self.store: Store = imagelib.open_store()
        self.intermediates: set[str] = set()  # manifest digests
        self.containers: list[Container] = []
        self.mounts: runmounts.Mounts | None = None  # RUN --mount, once the context is open
        self._stage_refs: tuple[Dockerfile, int, dict[int, _StageImage]] | None = None
        self.seeds: list[Image] = []  # --cache-from images
        self.journal_name = ""  # marks this process's intermediate images
        self.stage_child = False  # a process _fork_stage made
        self._maps: tuple[list[IDMapping], list[IDMapping]] | None = None  # host → container

    # -- the whole build -----------------------------------------------------------

    def build(self) -> Image:
        # The journal lists what the build makes, for its reaper should it be killed;
        # cache.running keeps `rl builder prune` off the records it holds; the
        # store's shared gc lock, held until the cleanup, keeps a collection (rmi,
        # prune, another build's end) off the layers a step made before its
        # record names them.
        with cache.running(self.store), _open_context(self.opts) as (ctx, text):
            df = dockerfile.parse(text)
            found = _lint(self.opts, text, self.store)
            if self.lint is not None:
                self.lint(found.warnings)
            if found.failed:  # `# check=error=true`: BuildKit fails before any step
                raise BuildFailed(found.error_message())
            self.mounts = runmounts.Mounts(self.store, ctx, self.opts.secrets, self._mount_image)
            journal = cache.Journal(self.store)
            self.containers, self.intermediates = journal.containers, journal.images
            self.journal_name = journal.name
            try:
                try:
                    with self.store.writing():
                        final = self._build(df, ctx)
                except RlError as e:
                    self.tracker.fail(e.message)
                    raise
                finally:
                    self._cleanup()
            finally:
                journal.close()
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
        self.seeds = self._seeds()
        scopes = scope.scopes(df, self.opts.build_args, predefined, envs)
        done = self._stages(df, ctx, scopes, needed, base_images)
        result = done[target]
        cc = result.cc
        if self.opts.labels:
            cc["Labels"] = {**(cc.get("Labels") or {}), **self.opts.labels}
        # The last step's time, not now: a fully cached rebuild is then the same image
        # (same ID), as BuildKit's is.
        history = result.config.get("history") or []
        result.config["created"] = history[-1]["created"] if history else imagelib.now_iso()
        if self.opts.source_date_epoch is not None:
            reproducible.apply_config(result.config, self.opts.source_date_epoch)
        self.tracker.finish()
        exports = [o for o in self.opts.outputs if not o.stores]
        keep = not self.opts.outputs or len(exports) < len(self.opts.outputs)
        if exports:
            # Stored unmarked (the intermediates' mark would be in the exported
            # config), and removed after only if no image had this manifest before
            # (an output that keeps it, type=image beside the exports, takes it back).
            with self.store.writing():
                had = {i.manifest_digest for i in self.store.images()}
                img = imagelib.put_image(self.store, result.config, result.layers, [])
                if img.manifest_digest not in had:
                    self.intermediates.add(img.manifest_digest)
            for out in exports:  # each as its own step, in the order given (buildx's)
                self.tracker.start({"local": "exporting to client directory",
                                    "tar": "exporting to client tarball"}.get(
                                        out.type, f"exporting to {out.type} image format"))
                output.export(out, img, self.store,
                              [imagelib.qualify(t) for t in self.opts.tags], self._tree,
                              self.opts.output_stream, self.opts.source_date_epoch)
                self.tracker.log("copying files done" if out.type == "local" else
                                 "sending tarball done")
                self.tracker.finish()
            if not keep:
                return img
        self.tracker.start("exporting to image")
        with self.store.writing():
            img = imagelib.put_image(self.store, result.config, result.layers, [])
            self.intermediates.discard(img.manifest_digest)
            self.tracker.log(f"writing image {img.id} done")
            for name in self.opts.tags:
                imagelib.tag(img.id, name)
                self.tracker.log(f"naming to {imagelib.qualify(name)} done")
        self.tracker.finish()
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
                for name in runmounts.mount_stages(ins) if ins.kind == "RUN" else ():
                    ref = self._stage_ref(df, name, i)
                    if ref is not None:
                        todo.append(ref)
        return needed

    # -- the stages, independent ones in parallel ---------------------------------

    def _deps(self, df: Dockerfile, sc: scope.StageScope, index: int) -> set[int]:
        """The earlier stages stage *index* reads: its FROM, COPY --from, RUN --mount from."""
        out = {sc.base_stage} if sc.base_stage is not None else set()
        for ins in sc.stage.instructions:
            names = [m.from_ for m in ins.mounts if m.from_]
            src = ins.flag("from")
            if ins.kind in ("COPY", "ADD") and isinstance(src, str):
                names.append(src)
            for name in names:
                ref = self._stage_ref(df, name, index)
                if ref is not None:
                    out.add(ref)
        return out

    def _stages(self, df: Dockerfile, ctx: Context, scopes: list[scope.StageScope],
                needed: set[int], base_images: dict[str, Image]) -> dict[int, _StageImage]:
        """Build every needed stage once, after the stages it reads. When several
        are ready at once each is built in a forked child (see _fork_stage); a
        lone ready stage is built here, so a linear Dockerfile never forks."""
        deps = {i: self._deps(df, scopes[i], i) & needed for i in needed}
        done: dict[int, _StageImage] = {}
        pending = set(needed)
        children: dict[int, tuple[int, int, bytearray]] = {}  # fd -> (stage, pid, output)
        try:
            while pending or children:
                ready = sorted(i for i in pending if deps[i] <= done.keys())
                pending.difference_update(ready)
                if len(ready) == 1 and not children:
                    done[ready[0]] = self._stage(df, ctx, scopes, ready[0], done, base_images)
                    continue
                if ready:
                    self.tracker.finish()  # the children's steps come after this one
                for i in ready:
                    fd, pid = self._fork_stage(df, ctx, scopes, i, done, base_images)
                    children[fd] = (i, pid, bytearray())
                if not children:
                    raise InvalidArgument("the stages' dependencies form a cycle")
                for fd in self._relay(children):
                    i, pid, out = children.pop(fd)
                    os.close(fd)
                    os.waitpid(pid, 0)
                    done[i] = _stage_result(bytes(out), i)
        finally:
            for _, pid, _ in children.values():
                # Interrupted or another stage failed: each child cleans up after itself.
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(OSError, RlError):
                while children:  # their last events (CANCELED) until each pipe ends
                    for fd in self._relay(children):
                        os.close(fd)
                        os.waitpid(children.pop(fd)[1], 0)
        return done

    def _relay(self, children: dict[int, tuple[int, int, bytearray]]) -> list[int]:
        """Wait for the children's pipes: relay the progress events they sent (one
        numbering for the whole build), keep the rest (the result); the pipes that
        ended."""
        ended = []
        readable, _, _ = select.select(list(children), [], [])
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                ended.append(fd)
                continue
            buf = children[fd][2]
            buf.extend(chunk)
            while (end := buf.find(b"\n")) >= 0:  # an event a line; the result has none
                line = bytes(buf[:end])
                del buf[:end + 1]
                with contextlib.suppress(ValueError):
                    self.tracker.relay(children[fd][1], decode_event(line))
        return ended

    def _fork_stage(self, df: Dockerfile, ctx: Context, scopes: list[scope.StageScope],
                    index: int, done: dict[int, _StageImage],
                    base_images: dict[str, Image]) -> tuple[int, int]:
        """Build one stage in a child process; (the pipe its result comes on, its pid).

        A process, not a thread: the engine forks Python code (user namespace
        helpers) and a fork beside other threads can inherit their held locks.
        The child keeps a journal of its own (its containers and intermediates
        go when it ends, or by its reaper), dies with the build (PDEATHSIG), and
        sends the stage's state as JSON; its layers outlive it in the cache
        records every step writes.
        """
        r, w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        pid = os.fork()
        if pid:
            os.close(w)
            return r, pid
        code = 0
        try:
            os.close(r)
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)
            signal.signal(signal.SIGTERM, _interrupt)
            self.stage_child = True
            # The build's process draws: this child's steps go to it, numbered there.
            self.tracker.sink = lambda event: _send_event(w, encode_event(event))
            journal = cache.Journal(self.store, prefix="stage-")
            self.containers, self.intermediates = journal.containers, journal.images
            self.journal_name = journal.name
            try:
                img = self._stage(df, ctx, scopes, index, done, base_images)
                doc: dict[str, Any] = {"layers": img.layers, "diff_ids": img.diff_ids,
                                       "config": img.config, "key": img.key,
                                       "nocache": img.nocache}
            except RlError as e:
                self.tracker.fail(e.message)
                doc = {"error": str(e), "exit_code": e.exit_code,
                       "failed": isinstance(e, BuildFailed)}
            except KeyboardInterrupt:
                self.tracker.fail(CANCELED)
                doc = {"error": "interrupted", "exit_code": 130}
            except Exception as e:  # a bug: one line for the user, not a silent child
                doc = {"error": f"stage {index}: {e!r}", "exit_code": 125}
                self.tracker.fail(doc["error"])
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                self._cleanup()
                journal.close()
            _write_all(w, json.dumps(doc).encode())
        except BaseException as e:  # the journal or the pipe failed: say so, in one line
            code = 1
            with contextlib.suppress(BaseException):
                os.write(w, json.dumps({"error": f"stage {index}: {e!r}",
                                        "exit_code": 125}).encode())
        finally:
            os._exit(code)

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
        if self.containers:
            from rootless.engine import containers

            for ctr in self.containers:
                with contextlib.suppress(RlError, OSError):
                    containers.remove(ctr, force=True, volumes=True)
            self.containers.clear()
        if self.mounts is not None:
            with contextlib.suppress(RlError, OSError):
                self.mounts.close()
        if self.intermediates:
            from rootless.engine import images as engine_images

            with self.store.writing():
                for digest in self.intermediates:
                    self.store.delete_image(digest)
            if not self.stage_child:  # which holds the build's gc lock: the build collects
                # Not waiting for other running builds: the next collection frees it.
                self.store.collect(engine_images.holds, wait=False)
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
            self.tracker.start(f"[{head}] {text}")

        show(f"FROM {sc.base}")
        if sc.base_stage is not None:
            img = copy.deepcopy(done[sc.base_stage])
            img.stored = done[sc.base_stage].stored
        elif sc.base.lower() == "scratch":
            img = _StageImage([], [], {"architecture": imagelib.go_arch(), "os": "linux",
                                       "config": {}, "rootfs": {"type": "layers",
                                                                "diff_ids": []},
                                       "history": []})
            img.key = cache.key("", "FROM scratch", imagelib.go_arch())
        else:
            base = base_images[sc.base]
            img = _StageImage(list(base.layers), list(base.diff_ids),
                              copy.deepcopy(base.config), stored=base)
            img.config.pop("author", None)
            img.key = cache.key("", "FROM", base.manifest_digest)
        filtered = {n.lower() for n in self.opts.no_cache_filter}
        if self.opts.no_cache or (stage.name or "").lower() in filtered \
                or str(index) in filtered:
            img.nocache = True
        triggers = self._triggers(img, df, stage.from_.start_line)
        total += sum(1 for ins in triggers if ins.kind in _LAYER_KINDS)
        img.cc.setdefault("Env", [])
        if not img.cc["Env"] and sc.base.lower() == "scratch":
            img.cc["Env"] = [imagelib.DEFAULT_ENV]
        stage_args: dict[str, str] = {}  # ARGs declared here with a value, for RUN's history
        first = sc.steps[0] if sc.steps else None
        start_vars = first.vars if first else sc.vars
        start_env = first.env if first else sc.env
        # The base's triggers run first, in this build's context, as docker runs them.
        steps = [scope.Step(t, start_vars, start_env) for t in triggers] + list(sc.steps)
        self._stage_refs = (df, index, done)  # what a RUN --mount from= names
        for step in steps:
            ins = _expanded(step, df)
            if ins.kind in _LAYER_KINDS:
                number += 1
                show(("ONBUILD " if step.instruction in triggers else "") + _shown(ins))
            where = f"Dockerfile:{ins.start_line}: "
            kind = ins.kind
            after: dict[str, str] = {}
            if kind == "ARG":
                after = _vars_after(sc, step)
                keys = [w.partition("=")[0] for w in ins.args]
                stage_args.update({k: after[k] for k in keys if k in after})
            step_key = self._step_key(img, ins, step, sc, ctx, df, index, done, after, where)
            if self._from_cache(img, step_key, shown=ins.kind in _LAYER_KINDS):
                continue
            if kind == "RUN" and self._from_seed(img, _run_created_by(img, ins, step,
                                                                      stage_args)):
                pass
            elif kind == "RUN":
                self._run(img, ins, step, sc, stage_args, where)
            elif kind in ("COPY", "ADD"):
                self._copy(img, ins, ctx, df, index, done, where)
            elif kind == "ARG":
                img.history("ARG " + " ".join(f"{k}={after[k]}" if k in after else k
                                              for k in keys), empty=True)
            else:
                self._config(img, ins, step, sc, where)
            if kind not in ("RUN", "COPY", "ADD"):
                self._seed_last(img)
            img.key = step_key
            with self.store.writing():
                cache.save(self.store, step_key, cache.Record(img.layers, img.diff_ids, img.config))
        return img

    def _triggers(self, img: _StageImage, df: Dockerfile, line: int) -> list[Instruction]:
        """The base's ONBUILD triggers as instructions (named by FROM's line); the
        child's config then has none, as docker's."""
        texts = img.cc.pop("OnBuild", None) or []
        out = []
        for text in texts if isinstance(texts, list) else []:
            where = f"Dockerfile:{line}: "
            kind = str(text).split(None, 1)[0].upper() if str(text).strip() else ""
            if kind == "ONBUILD":
                raise InvalidArgument(f"{where}Chaining ONBUILD via `ONBUILD ONBUILD` "
                                      "isn't allowed")
            if kind in ("FROM", "MAINTAINER"):
                raise InvalidArgument(f"{where}{kind} isn't allowed as an ONBUILD trigger")
            try:
                parsed = dockerfile.parse(f"# escape={df.directives.escape}\n"
                                          f"FROM scratch\n{text}\n")
            except InvalidArgument as e:
                raise InvalidArgument(f"{where}ONBUILD trigger {text!r}: {e.message}") from None
            found = [i for st in parsed.stages for i in st.instructions]
            if len(parsed.stages) != 1 or len(found) != 1:
                # A newline in a hostile config's trigger must not smuggle in more.
                raise InvalidArgument(f"{where}onbuild trigger should be a single expression")
            out.append(dataclasses.replace(found[0], start_line=line, end_line=line))
        return out

    # -- the cache -----------------------------------------------------------------

    def _step_key(self, img: _StageImage, ins: Instruction, step: scope.Step,
                  sc: scope.StageScope, ctx: Context, df: Dockerfile, index: int,
                  done: dict[int, _StageImage], after: dict[str, str], where: str) -> str:
        """The cache key of *ins* over *img*'s state: see rootless.build.cache."""
        # The epoch too: a reproducible build's layers are clamped as they are written,
        # so they are not another build's (BuildKit clamps at export instead).
        parts: list[object] = [ins.kind, list(ins.args), ins.json,
                               {n: v for n, v in sorted(ins.flags.items())},
                               list(ins.heredocs), list(ins.mounts), ins.healthcheck,
                               self.opts.source_date_epoch]
        if ins.kind == "ONBUILD":
            parts.append(ins.original)
        if ins.kind == "RUN":
            network = ins.flag("network")
            parts += [sorted(step.vars.items()), sorted(dict(sc.proxy).items()),
                      network if isinstance(network, str) else self.opts.network]
            for m in ins.mounts:
                # What a bind mount shows is read as a COPY would be; a cache, tmpfs
                # or secret mount's content is not in the key (BuildKit's choice).
                if m.type == "bind" and m.from_:
                    parts.append(self._from_key(img, m.from_, df, index, done))
                elif m.type == "bind":  # a source is the context's, "/" or not (BuildKit)
                    parts.append(ctx.sources_digest(ctx.resolve(m.source.lstrip("/") or ".",
                                                                where)))
        elif ins.kind == "ARG":
            parts.append(sorted(after.items()))
        elif ins.kind in ("COPY", "ADD"):
            from_ = ins.flag("from")
            if ins.heredocs:
                parts.append(sorted(step.vars.items()))  # a heredoc's body is expanded
            if isinstance(from_, str):
                parts.append(self._from_key(img, from_, df, index, done))
            else:
                for src in ins.sources():
                    if "://" in src or src.startswith("git@"):
                        # Not fetched yet: without --checksum its content is unknown.
                        checksum = ins.flag("checksum")
                        parts.append(checksum if isinstance(checksum, str) and checksum
                                     else os.urandom(16).hex())
                        continue
                    # --chown and --chmod are in the flags above: the owner here stays 0:0.
                    parts.append(ctx.sources_digest(ctx.resolve(src, where),
                                                    progress=self._hashing()))
        return cache.key(img.key, *parts)

    def _hashing(self) -> Callable[[int, int], None]:
        """A COPY's hashing as lines of its step, every 25,000 files: a 100,000-file
        context takes seconds, which must not look like a hang."""
        mark = [HASH_REPORT]

        def report(files: int, size: int) -> None:
            if files >= mark[0]:
                mark[0] = (files // HASH_REPORT + 1) * HASH_REPORT
                self.progress(f"hashing the context: {files} files, {size / 1e6:.1f} MB")

        return report

    def _from_key(self, img: _StageImage, from_: str, df: Dockerfile, index: int,
                  done: dict[int, _StageImage]) -> str:
        """The key share of a --from: an earlier stage's key, or an image's digest."""
        ref = self._stage_ref(df, from_, index)
        if ref is not None and ref in done:
            if done[ref].nocache:
                # Its key says what it was built from, not what this build made.
                img.nocache = True
            return done[ref].key
        try:
            return imagelib.lookup(self.store, from_).manifest_digest
        except RlError:
            return os.urandom(16).hex()  # not in the store (yet): a miss

    def _from_cache(self, img: _StageImage, k: str, shown: bool) -> bool:
        """Restore *img* from *k*'s record if it may and there is one."""
        if img.nocache:
            return False
        rec = cache.load(self.store, k)
        if rec is None:
            return False
        img.layers, img.diff_ids, img.config = rec.layers, rec.diff_ids, rec.config
        img.stored, img.key = None, k
        cache.touch(self.store, k)
        if shown:
            self.tracker.cached()  # BuildKit's word, on the step's line
        return True

    def _seeds(self) -> list[Image]:
        """The --cache-from images the local store has (a missing one is a warning,
        as a cache import docker cannot do is)."""
        out = []
        for ref in self.opts.cache_from:
            try:
                out.append(imagelib.lookup(self.store, ref))
            except NoSuchImage:
                self.progress(f"WARNING: --cache-from {ref}: no such image in the local store")
        return out

    def _from_seed(self, img: _StageImage, created_by: str) -> bool:
        """A RUN's layer taken from a --cache-from image whose history has this step
        next over exactly this state (rootless.build.cache.seeded)."""
        if img.nocache or not self.seeds:
            return False
        hit = cache.seeded(self.seeds, img.diff_ids, img.config.get("history") or [],
                           created_by)
        if hit is None:
            return False
        desc, diff_id, entry = hit
        img.layers.append(desc)
        img.diff_ids.append(diff_id)
        img.config["rootfs"] = {"type": "layers", "diff_ids": list(img.diff_ids)}
        img.config.setdefault("history", []).append(entry)
        img.stored = None
        self.tracker.cached()
        return True

    def _seed_last(self, img: _StageImage) -> None:
        """A config step (or WORKDIR's directory layer) just made: the seed's own
        history entry (and layer) for it, if the seed has this step next, so that
        its later steps still line up and a whole match is the seed's image."""
        history = img.config.get("history") or []
        if img.nocache or not self.seeds or not history:
            return
        last = history[-1]
        if last.get("empty_layer"):
            entry = cache.seeded_entry(self.seeds, img.diff_ids, history[:-1], last)
            if entry is not None:
                history[-1] = entry
            return
        hit = cache.seeded(self.seeds, img.diff_ids[:-1], history[:-1],
                           str(last["created_by"]))
        if hit is not None:
            img.layers[-1], img.diff_ids[-1], history[-1] = hit
            img.config["rootfs"] = {"type": "layers", "diff_ids": list(img.diff_ids)}

    # -- RUN -----------------------------------------------------------------------

    def _stored(self, img: _StageImage) -> Image:
        """The stage's current state as an image in the store (a RUN starts from it)."""
        if img.stored is None:
            # Marked with this process's journal: never the same image as another
            # build's (or stage child's) intermediate, which that one deletes when
            # done, nor a named image; and the mark finds it should we be killed
            # before the journal lists it (cache.sweep).
            config = {**img.config, cache.INTERMEDIATE: self.journal_name}
            with self.store.writing():
                stored = imagelib.put_image(self.store, config, img.layers, [])
                self.intermediates.add(stored.manifest_digest)
            img.stored = stored
        return img.stored

    def _tree(self, img: Image, fd: int) -> None:
        """*img*'s whole file tree as a tar on *fd* (a never-started container's export)."""
        from rootless.engine import containers
        from rootless.engine import images as engine_images
        from rootless.engine.options import CreateOptions

        ctr = containers.create(CreateOptions(rootfs="", image=img.id, command=["true"],
                                              entrypoint="", network="none"))
        self.containers.append(ctr)
        engine_images.export(ctr, fd)
        containers.remove(ctr, force=True, volumes=True)
        self.containers.remove(ctr)

    def _normalise(self, tar_path: str) -> None:
        """The hook every new layer tar passes before it enters the store."""
        if self.opts.source_date_epoch is not None:
            reproducible.normalise_layer(tar_path, self.opts.source_date_epoch)

    def _run(self, img: _StageImage, ins: Instruction, step: scope.Step,
             sc: scope.StageScope, stage_args: dict[str, str], where: str) -> None:
        from rootless.engine import containers
        from rootless.engine import images as engine_images
        from rootless.engine.options import CreateOptions

        runmounts.check_flags(ins, where)
        shell = list(img.cc.get("Shell") or DEFAULT_SHELL)
        argv, script = runmounts.command(ins, shell, where)
        network = ins.flag("network")
        net = network if isinstance(network, str) else self.opts.network
        net = DEFAULT_NETWORK if net == "default" else net
        env = {**dict(sc.proxy), **dict(step.vars)}
        base = self._stored(img)
        assert self.mounts is not None
        mounted = self.mounts.prepare(ins, script, img.cc.get("WorkingDir") or "/", where)
        opts = CreateOptions(
            rootfs="", image=base.id, command=argv, entrypoint="",
            env=[f"{k}={v}" for k, v in env.items()] + mounted.env,
            workdir=img.cc.get("WorkingDir") or None, user=img.cc.get("User") or None,
            network=net, volumes=mounted.volumes, tmpfs=mounted.tmpfs,
            image_volumes=False,
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
            # Go's %q, as BuildKit: a heredoc's newlines stay on the one line.
            raise BuildFailed(f"process {json.dumps(shown, ensure_ascii=False)} did not "
                              f"complete successfully: exit code: {code}")
        args = {k: v for k, v in stage_args.items() if k not in step.env}
        prefix = f"|{len(args)} " + "".join(f"{k}={v} " for k, v in sorted(args.items())) \
            if args else ""
        with self.store.writing():
            layer = engine_images.commit_layer(ctr, self.store, rewrite=self._normalise)
        containers.remove(ctr, force=True, volumes=True)
        self.containers.remove(ctr)
        self.mounts.done(mounted)  # this step's copies, trees, secrets and cache locks
        img.add_layer(layer.digest, layer.size, layer.diff_id,
                      f"RUN {prefix}{' '.join(argv)} # buildkit")

    def _mount_image(self, name: str) -> Image:
        """A RUN --mount from=: an earlier stage's state, or an image (pulled if missing)."""
        assert self._stage_refs is not None
        df, index, done = self._stage_refs
        ref = self._stage_ref(df, name, index)
        if ref is not None:
            return self._stored(done[ref])
        return self._base_image(name)

    # -- COPY / ADD ----------------------------------------------------------------

    def _copy(self, img: _StageImage, ins: Instruction, ctx: Context, df: Dockerfile,
              index: int, done: dict[int, _StageImage], where: str) -> None:
        for unsupported in ("keep-git-dir",):
            if ins.flag(unsupported) is not None:
                raise InvalidArgument(f"{where}{ins.kind} --{unsupported} is not supported yet")
        srcs = ins.sources()
        if not srcs and not ins.heredocs:
            raise InvalidArgument(f"{where}{ins.kind} requires at least two arguments, "
                                  "but only one was provided. Destination could not be "
                                  "determined")
        uid, gid = copying.chown(ins.flag("chown"), lambda p: self._stage_file(img, p), where)
        chmod = copying.chmod(ins.flag("chmod"), where)
        workdir = img.cc.get("WorkingDir") or "/"
        dest = ins.dest()
        as_dir = dest.endswith("/") or dest in (".", "..")
        dest = posixpath.normpath(posixpath.join(workdir, dest))
        from_ = ins.flag("from")
        # --link reads nothing of the stage: the layer is built as over an empty tree
        # (BuildKit merges only without --chmod). --chown names still use its files,
        # and own the parent directories the step makes (copying.ParentsTar).
        link = ins.flag("link") is True and chmod is None
        view = _StageImage([], [], img.config) if link else img
        if not link:
            dest = self._resolve_dest(img, dest, where)
        tar_class = copying.ParentsTar if link or uid >= 0 else tarfile.TarFile
        with tempfile.TemporaryDirectory(prefix="rl-build-") as tmp:
            tar_path = os.path.join(tmp, "layer.tar")
            with tar_class.open(tar_path, "w", format=tarfile.PAX_FORMAT) as out:
                if isinstance(out, copying.ParentsTar):
                    out.owner = (max(uid, 0), max(gid, 0))
                    if not link:
                        out.exists = lambda p: self._is_dir(img, p)
                if ins.heredocs:
                    many = len(ins.heredocs) + len(srcs) > 1
                    if many and not as_dir:
                        raise InvalidArgument(
                            f"{where}When using {ins.kind} with more than one source file, "
                            "the destination must be a directory and end with a /")
                    into = as_dir or many or self._is_dir(view, dest)
                    for doc in ins.heredocs:
                        name = posixpath.join(dest, doc.name) if into else dest
                        copying.check_name(name, where)
                        info, data = copying.heredoc_member(doc, name, uid, gid, chmod)
                        out.addfile(info, io.BytesIO(data))
                if isinstance(from_, str):
                    self._copy_from(out, view, ins, df, index, done, from_, dest, as_dir,
                                    (uid, gid, chmod), where)
                else:
                    local = self._copy_urls(out, view, ins, srcs, dest, as_dir,
                                            (uid, gid, chmod), tmp, where)
                    if local:
                        self._copy_context(out, view, ins, ctx, local, dest, as_dir,
                                           (uid, gid, chmod), where)
                # Every parent of what the step wrote, as the image has it (an
                # implicit one would be the layer's 0:0 0755 and hide the image's).
                self._parents(out, view, {m.name for m in out.getmembers()}, (uid, gid))
            self._normalise(tar_path)
            with self.store.writing():
                digest, size = self.store.put_file(tar_path)
                diff_id, _ = self.store.ensure_layer(digest, digest)
        img.add_layer(digest, size, diff_id, copying.history_text(ins))

    def _copy_urls(self, out: tarfile.TarFile, img: _StageImage, ins: Instruction,
                   srcs: tuple[str, ...], dest: str, as_dir: bool,
                   owner: tuple[int, int, copying.Mode | None], tmp: str,
                   where: str) -> tuple[str, ...]:
        """ADD's URL sources, fetched into the layer (unpacked only with --unpack, as
        BuildKit); the context sources left."""
        expect = copying.checksum(ins.flag("checksum"), where)
        for word in srcs:
            if copying.is_git(word) or (ins.kind == "ADD" and "://" in word
                                        and not copying.is_url(word)):
                raise InvalidArgument(f"{where}ADD of a git repository or a non-HTTP URL "
                                      f"({word}) is not supported yet")
        urls = [w for w in srcs if ins.kind == "ADD" and copying.is_url(w)]
        if ins.kind == "COPY" and any(copying.is_url(w) for w in srcs):
            raise InvalidArgument(f"{where}source can't be a URL for COPY")
        if expect is not None and len(srcs) != 1:
            raise InvalidArgument(f"{where}checksum can't be specified for multiple sources")
        if expect is not None and not urls:
            raise InvalidArgument(f"{where}checksum requires HTTP(S) or Git sources")
        if len(srcs) > 1 and not as_dir:
            raise InvalidArgument(f"{where}When using {ins.kind} with more than one source "
                                  "file, the destination must be a directory and end with a /")
        uid, gid, chmod = owner
        for url in urls:
            path, fname, mtime = copying.download(url, tmp, expect, where)
            if ins.flag("unpack") is True:
                with open(path, "rb") as f:
                    if copying.is_archive(f):
                        f.seek(0)
                        copying.extract_into(out, f, url, dest, (uid, gid), where)
                        continue
            name = posixpath.join(dest, fname) if as_dir or self._is_dir(img, dest) else dest
            copying.check_name(name, where)
            info = tarfile.TarInfo(name.strip("/"))
            info.uid, info.gid = max(uid, 0), max(gid, 0)
            info.mode = chmod.apply(0o600, False) if chmod else 0o600  # BuildKit's mode
            info.mtime = int(mtime)
            with open(path, "rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                out.addfile(info, f)
            os.unlink(path)
        return tuple(w for w in srcs if w not in urls)

    def _copy_context(self, out: tarfile.TarFile, img: _StageImage, ins: Instruction,
                      ctx: Context, srcs: tuple[str, ...], dest: str, as_dir: bool,
                      owner: tuple[int, int, copying.Mode | None], where: str) -> None:
        if ins.flag("parents"):
            self._copy_parents(out, ins, ctx, srcs, dest, owner, where)
            return
        found: list[list[Source]] = [copying.exclude(ctx.resolve(src, where),
                                                     ins.flag("exclude"), where)
                                     for src in srcs]
        if any(not f for f in found):
            raise InvalidArgument(f"{where}failed to compute cache key: all sources of "
                                  f"{ins.kind} were excluded")
        archives: list[Source] = []
        if ins.kind == "ADD" and ins.flag("unpack") is not False:
            archives = [src for sources in found for src in sources
                        if src.entry.kind == "file" and _is_archive(ctx, src)]
            for src in archives:
                # Unpacked at the destination (a directory), merged with what is there.
                with os.fdopen(ctx.open(src.entry.path), "rb") as f:
                    copying.extract_into(out, f, src.entry.path, dest, owner[:2], where)
            found = [[s for s in sources if s not in archives] for sources in found]
            if archives and not any(found):
                return
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
                    entry_owner = (owner[0], owner[1], copying.Mode("0755", where))
                elif into_dir:
                    name = posixpath.join(dest, src.name)
                else:
                    name = dest
                written.add(name)
                copying.check_name(name, where)
                _add(out, ctx, src, name, entry_owner)

    def _copy_parents(self, out: tarfile.TarFile, ins: Instruction, ctx: Context,
                      srcs: tuple[str, ...], dest: str,
                      owner: tuple[int, int, copying.Mode | None], where: str) -> None:
        """COPY --parents: each source keeps its path from the context root, or from a
        `/./` pivot in it (`a/./b/c` lands at DEST/b/c), its parents made first."""
        written: set[str] = set()
        for word in srcs:
            text = word
            while text.startswith("./"):
                text = text[2:]
            pivot, sep, rest = text.partition("/./")
            path = f"{pivot}/{rest}" if sep else text
            pivot = posixpath.normpath(pivot) if sep else ""
            for src in copying.exclude(ctx.resolve(path, where), ins.flag("exclude"), where):
                # The file's own context path (a symlink named as the source was
                # followed by resolve: its target's path then; decisions, COPY and ADD 6).
                full = src.entry.path
                rel = posixpath.relpath(full, pivot) if pivot else full
                if rel.startswith("../"):
                    continue  # below the pivot only
                parts = rel.split("/") if rel not in ("", ".") else []
                for i in range(1, len(parts)):
                    parent = posixpath.join(dest, *parts[:i])
                    if parent in written:
                        continue
                    written.add(parent)
                    entry = ctx.entries.get(posixpath.join(pivot, *parts[:i]).lstrip("/"))
                    parent_src = Source("", entry) if entry is not None and \
                        entry.kind == "dir" else Source("", dataclasses.replace(
                            ctx.root_entry, mode=0o755))
                    _add(out, ctx, parent_src, parent, owner)
                name = posixpath.join(dest, *parts) if parts else dest
                if name in written:
                    continue
                written.add(name)
                copying.check_name(name, where)
                _add(out, ctx, src, name, owner)

    def _copy_from(self, out: tarfile.TarFile, img: _StageImage, ins: Instruction,
                   df: Dockerfile, index: int, done: dict[int, _StageImage], from_: str,
                   dest: str, as_dir: bool, owner: tuple[int, int, copying.Mode | None],
                   where: str) -> None:
        from rootless.runtime import userns

        ref = self._stage_ref(df, from_, index)
        if ref is None and df.stage(from_) is not None:
            here = df.stages[index].name or f"stage-{index}"
            raise InvalidArgument(f'{where}cannot copy from stage "{from_}", it needs to be '
                                  f'defined before current stage "{here}"')
        if ref is None:
            # An image reference, pulled when missing, as BuildKit's --from=IMAGE.
            try:
                source = self._base_image(from_)
            except RlError as e:
                raise InvalidArgument(f"{where}COPY --from={from_}: {e.message}") from None
        else:
            # Stored (an intermediate of this build) so that no prune takes its
            # layers while they are read.
            source = self._stored(done[ref])
        for layer, diff_id in zip(source.layers, source.diff_ids, strict=False):
            self.store.ensure_layer(layer["digest"], diff_id)
        lowers = [str(self.store.layer_dir(d)) for d in source.diff_ids]
        flags = (ins.flag("parents") is True, ins.flag("exclude"))
        # Only the requested files, read from the source's layer directories in the
        # user namespace (their owners are the image's there, and a sub-id's 0600
        # file is readable) into a tar of their own, then appended to the step's.
        with tempfile.TemporaryFile() as part:
            fd = part.fileno()

            def pick() -> None:
                with os.fdopen(os.dup(fd), "wb") as f, \
                        tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf, \
                        copying.LayerTree(lowers, where) as tree:
                    copying.copy_from_tree(tf, tree, ins.sources(), dest, as_dir,
                                           lambda p: self._is_dir(img, p), owner, flags,
                                           where)

            userns.run(pick)
            part.seek(0)
            with tarfile.open(fileobj=part, mode="r|") as tf:
                for m in tf:
                    out.addfile(m, tf.extractfile(m) if m.isfile() else None)

    def _stage_file(self, img: _StageImage, path: str) -> bytes | None:
        """A regular file of the stage, symlinks on its path followed inside the stage's
        root (as BuildKit's RootPath), or None: for --chown's /etc/passwd and /etc/group."""
        layers = self._layer_dirs(img)
        try:
            real = copying.resolve_dest(layers, path)
        except InvalidArgument:
            return None
        found = copying.stage_lstat(layers, real)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return None
        fd = os.open(os.path.join(found[0], real.lstrip("/")),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return f.read(1 << 24)

    def _layer_dirs(self, img: _StageImage) -> list[str]:
        return [str(self.store.layer_dir(d)) for d in img.diff_ids]

    def _resolve_dest(self, img: _StageImage, dest: str, where: str) -> str:
        try:
            return copying.resolve_dest(self._layer_dirs(img), dest)
        except InvalidArgument as e:
            raise InvalidArgument(f"{where}{e.message}") from None

    def _is_dir(self, img: _StageImage, path: str) -> bool:
        """Whether *path* is a directory in the stage's file system, as its layers
        compose it (whiteouts and opaque directories honoured)."""
        if not path.strip("/"):
            return True
        found = copying.stage_lstat(self._layer_dirs(img), path)
        return found is not None and stat.S_ISDIR(found[1].st_mode)

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
            while parent != "/" and parent not in parents:
                if parent not in names:  # one the step wrote itself (a made parent) stays
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
            self._normalise(tar_path)
            with self.store.writing():
                digest, size = self.store.put_file(tar_path)
                diff_id, _ = self.store.ensure_layer(digest, digest)
        img.add_layer(digest, size, diff_id, created_by)


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _open_context(opts: BuildOptions) -> Iterator[tuple[Context, str]]:
    """The build's context and its Dockerfile's text: a directory, a tar stream or
    nothing at all (an empty directory: a Dockerfile alone on stdin)."""
    if opts.context_tar is not None:
        name = opts.dockerfile or "Dockerfile"
        with Context.from_tar(opts.context_tar, name) as ctx:
            yield ctx, opts.dockerfile_text or _read_inside(ctx, name)
        return
    if not opts.context:
        with tempfile.TemporaryDirectory(prefix="rl-build-empty-") as empty, \
                Context.directory(empty) as ctx:
            yield ctx, opts.dockerfile_text or ""
        return
    if opts.dockerfile_text is not None:
        text = opts.dockerfile_text
    else:
        try:
            with open(opts.dockerfile, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            raise InvalidArgument(f"failed to read dockerfile: open {opts.dockerfile}: "
                                  f"{os.strerror(e.errno or 0).lower()}") from None
    with Context.directory(opts.context, opts.dockerfile or None) as ctx:
        yield ctx, text


def _read_inside(ctx: Context, name: str) -> str:
    """The Dockerfile *name* from a tar context (opened beneath its root)."""
    clean = posixpath.normpath(name).lstrip("/")
    try:
        fd = ctx.open(clean)
    except (InvalidArgument, OSError):
        raise InvalidArgument(f"failed to read dockerfile: open {clean}: "
                              "no such file or directory") from None
    with os.fdopen(fd, "rb") as f:
        return f.read().decode("utf-8", errors="surrogateescape")


def build(opts: BuildOptions, progress: Sink = discard,
          pull: Callable[[str], None] | None = None,
          lint: Callable[[list[checks.Warning]], None] | None = None) -> Image:
    """Build the Dockerfile of *opts*; the image (tagged as -t asked). *progress* gets
    the steps and their output as events (build/progress.py); *pull* fetches a
    missing base image; *lint* gets the build checks' warnings before any step."""
    return Builder(opts, progress, pull, lint).build()


def check(opts: BuildOptions) -> tuple[checks.Result, str]:
    """`rl build --check`: parse, resolve and lint the Dockerfile; no step runs and
    no layer is pulled. A base image missing from the store has just its config
    fetched from the registry (as BuildKit resolves image metadata), unless
    `--pull=never`; when it cannot be, the result's notes say which checks were
    skipped for it and why. The result and the Dockerfile's text."""
    from rootless.image import transfer

    fetch = transfer.fetch_config if opts.pull else None
    with _open_context(opts) as (_ctx, text):
        return _lint(opts, text, imagelib.open_store(), fetch), text


def _lint(opts: BuildOptions, text: str, store: Store,
          fetch: Callable[[str, str | None], dict[str, Any]] | None = None) -> checks.Result:
    df = dockerfile.parse(text)
    predefined = scope.platform_args(scope.Platform(arch=imagelib.go_arch()),
                                     target_stage=opts.target or "")
    envs: dict[str, dict[str, str]] = {}
    platforms: dict[str, str] = {}
    notes: list[str] = []
    tried: set[str] = set()
    for sc in scope.scopes(df, opts.build_args, predefined):
        if sc.base_stage is None and sc.base.lower() != "scratch" and sc.base not in tried:
            tried.add(sc.base)
            try:
                cfg = imagelib.lookup(store, sc.base).config
            except (NoSuchImage, InvalidArgument):
                why = "--pull=never"
                if fetch is not None:
                    try:
                        cfg = fetch(sc.base, sc.platform or None)
                    except RlError as e:
                        why = e.message
                    else:
                        why = ""
                if why:
                    notes.append(f"base image {sc.base} is not in the store and its config "
                                 f"could not be fetched ({why}): UndefinedVar and "
                                 "InvalidBaseImagePlatform not checked for stage "
                                 f"{sc.stage.name or sc.stage.index}")
                    continue
            envs[sc.base] = dict(_env_pairs((cfg.get("config") or {}).get("Env") or []))
            platforms[sc.base] = "/".join(str(p) for p in (
                cfg.get("os", "linux"), cfg.get("architecture", ""), cfg.get("variant")) if p)
    result = checks.check(text, opts.build_args, predefined, envs, opts.target, platforms)
    result.notes.extend(notes)
    return result


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _send_event(fd: int, data: bytes) -> None:
    """A child's event line, whole: SIGTERM (a sibling failed) waits until it is out."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        _write_all(fd, data)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stage_result(data: bytes, index: int) -> _StageImage:
    """A forked stage's state, or its error raised here."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise RlError(f"building stage {index} failed: its process ended without a "
                      "result") from None
    if "error" in doc:
        if doc.get("exit_code") == 130:
            raise KeyboardInterrupt
        cls = BuildFailed if doc.get("failed") else RlError
        raise cls(str(doc["error"]), int(doc.get("exit_code", 125)))
    return _StageImage(doc["layers"], doc["diff_ids"], doc["config"], key=doc["key"],
                       nocache=bool(doc["nocache"]))


def _run_created_by(img: _StageImage, ins: Instruction, step: scope.Step,
                    stage_args: dict[str, str]) -> str:
    """The history entry a RUN will get (as Builder._run writes it)."""
    shell = list(img.cc.get("Shell") or DEFAULT_SHELL)
    argv = list(ins.args) if ins.json else [*shell, " ".join(ins.args)]
    args = {k: v for k, v in stage_args.items() if k not in step.env}
    prefix = f"|{len(args)} " + "".join(f"{k}={v} " for k, v in sorted(args.items())) \
        if args else ""
    return f"RUN {prefix}{' '.join(argv)} # buildkit"


def _expanded(step: scope.Step, df: Dockerfile) -> Instruction:
    return scope.expand_instruction(step.instruction, step.vars, df.directives.escape)


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
    with os.fdopen(ctx.open(src.entry.path), "rb") as f:
        return copying.is_archive(f)


def _add(out: tarfile.TarFile, ctx: Context, src: Source, name: str,
         owner: tuple[int, int, copying.Mode | None]) -> None:
    """One context file into the layer tar at *name*: owned 0:0 unless --chown."""
    uid, gid, chmod = owner
    entry = src.entry
    info = tarfile.TarInfo(name.strip("/") or ".")
    info.uid, info.gid = max(uid, 0), max(gid, 0)
    info.mode = chmod.apply(entry.mode, entry.kind == "dir") if chmod else entry.mode
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

