"""The image layer as a library (issue 11): called in-process, not through the CLI.

rootless.image knows nothing of containers, the engine or the click face:
rmi answers records and raises typed errors, pull/push/load/save report to
any ProgressSink (here a recording one), and what containers hold comes
from rootless.engine.images.
"""

from __future__ import annotations

import ast
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagetools import rootfs_tar
from test_registry import REGISTRY, Registry, start_registry

import support
from rootless.engine import containers as api
from rootless.engine import images as engine_images
from rootless.engine import store as ctr_store
from rootless.errors import Conflict, NoSuchImage, NotFound, RlError
from rootless.image import archive, transfer
from rootless.image import images as imagelib
from rootless.image.images import Removed
from rootless.image.progress import Silent
from rootless.image.store import Holds

IMAGE_PACKAGE = Path(imagelib.__file__).parent


class Recorder:
    """A ProgressSink that keeps what it is told, as a Docker JSON stream would."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # pull reports from its download threads
        self.messages: list[str] = []
        self.notes: list[str] = []
        self.blobs: dict[str, RecordedBlob] = {}

    def message(self, text: str) -> None:
        with self.lock:
            self.messages.append(text)

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append(text)

    def blob(self, digest: str, total: int) -> RecordedBlob:
        with self.lock:
            b = self.blobs[digest] = RecordedBlob(self, total)
            return b


class RecordedBlob:
    def __init__(self, recorder: Recorder, total: int) -> None:
        self.recorder = recorder
        self.total = total
        self.moved = 0
        self.finished = False

    def advance(self, n: int) -> None:
        with self.recorder.lock:
            self.moved += n

    def restart(self, done: int) -> None:
        with self.recorder.lock:
            self.moved = done

    def done(self) -> None:
        with self.recorder.lock:
            self.finished = True


_n = iter(range(1000))


@pytest.fixture(scope="module")
def image_tar(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rootfs_tar(rootfs, tmp_path_factory.mktemp("libtar") / "bb.tar.gz")


@pytest.fixture
def image(image_tar: Path) -> Iterator[str]:
    """A freshly imported image's stored name; removed (by force) afterwards."""
    support.require_userns()
    support.require_newidmap()
    name = f"libimg{next(_n)}"
    img, _ = imagelib.import_tarball(str(image_tar), name, ['CMD ["true"]'])
    yield img.names[0]
    engine_images.remove([img.id], force=True)


# -- the layer's boundary --------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Every module a file imports, function-level imports included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against rootless.image
                parts = ["rootless", "image"][:3 - node.level]
                base = ".".join([*parts, *([base] if base else [])])
            out.add(base)
    return out


def test_the_image_layer_imports_neither_engine_nor_faces() -> None:
    for path in sorted(IMAGE_PACKAGE.glob("*.py")):
        for mod in _imports(path):
            assert not mod.startswith(("rootless.engine", "rootless.cli", "click", "rich")), \
                f"{path.name} imports {mod}"


# -- rmi: records and typed errors ------------------------------------------------------


def test_rmi_returns_records(image: str) -> None:
    store = imagelib.open_store()
    img = imagelib.lookup(store, image)
    imagelib.tag(image, image + "-again")
    removed, errors = engine_images.remove([image + "-again"], force=False)
    assert (removed, errors) == ([Removed("Untagged", image + "-again")], [])
    removed, errors = engine_images.remove([image], force=False)
    assert errors == []
    assert removed == [Removed("Untagged", image), Removed("Deleted", img.id)]
    assert img.id not in {i.id for i in imagelib.open_store().images()}


def test_list_images_filters_by_repository(image: str) -> None:
    repo = image.rpartition(":")[0]
    rows = imagelib.list_images(repository=repo.rpartition("/")[2])
    assert [(r.repository, r.tag) for r in rows] == [(repo, "latest")]
    assert imagelib.list_images(repository=repo) == rows
    assert imagelib.list_images(repository="no-such-repo") == []
    assert len(imagelib.list_images()) >= 1


def test_rmi_of_a_missing_image_is_not_found() -> None:
    with pytest.raises(NotFound) as exc:
        imagelib.remove(imagelib.open_store(), "no-such-lib-image:1", False, {})
    assert isinstance(exc.value, NoSuchImage)
    assert (exc.value.exit_code, exc.value.http_status) == (1, 404)
    assert exc.value.message == "no such image: no-such-lib-image:1"
    removed, errors = engine_images.remove(["no-such-lib-image:1"], force=False)
    assert removed == [] and [type(e) for e in errors] == [NoSuchImage]


def test_rmi_of_an_image_in_use_is_a_conflict(image: str) -> None:
    """The image layer takes its users as an argument; -f untags and keeps it."""
    store = imagelib.open_store()
    img = imagelib.lookup(store, image)
    users = {img.id: ["somectr"]}
    with pytest.raises(Conflict) as exc:
        imagelib.remove(store, image, False, users)
    assert (exc.value.exit_code, exc.value.http_status) == (1, 409)
    assert exc.value.message == (f"image {image} is in use by container somectr: remove the "
                                 "container first or use --force")
    assert imagelib.remove(store, image, True, users) == [Removed("Untagged", image)]
    assert [i.names for i in store.images() if i.id == img.id] == [[]]  # kept, nameless


def test_rmi_by_id_of_an_image_with_two_names_is_a_conflict(image: str) -> None:
    store = imagelib.open_store()
    img = imagelib.lookup(store, image)
    imagelib.tag(image, image + "-two")
    with pytest.raises(Conflict) as exc:
        imagelib.remove(store, img.id, False, {})
    assert exc.value.message == (f"unable to delete {img.id[7:19]} (must be forced) - image "
                                 "is referenced in multiple repositories")
    assert exc.value.exit_code == 1


def test_a_container_holds_its_image(image: str) -> None:
    """The engine reads its records: a container made from the image holds it."""
    support.require_busybox()
    name = f"libctr{next(_n)}"
    ctr = api.create(api.CreateOptions(rootfs="", image=image, command=["true"], name=name))
    try:
        img = imagelib.lookup(imagelib.open_store(), image)
        held = engine_images.holds()
        assert held.images.get(img.id) == [name] and ctr.id in held.containers
        removed, errors = engine_images.remove([image], force=False)
        assert removed == [] and [type(e) for e in errors] == [Conflict]
        assert errors[0].message.endswith(f"in use by container {name}: remove the "
                                          "container first or use --force")
        # prune leaves it too, even with -a
        deleted, _ = engine_images.prune(all_=True)
        assert img.id not in deleted
    finally:
        api.remove(ctr_store.lookup(ctr.id), force=True)


def test_prune_without_containers_takes_holds_as_an_argument(image_tar: Path) -> None:
    support.require_userns()
    support.require_newidmap()
    img, _ = imagelib.import_tarball(str(image_tar), None, [])  # nameless: dangling
    asked = []

    def holds() -> Holds:
        asked.append(1)
        return engine_images.holds()

    deleted, freed = imagelib.prune(False, holds)
    assert img.id in deleted and freed > 0
    assert len(asked) == 2  # once for the images, once under the gc lock to collect


# -- progress sinks -----------------------------------------------------------------------


def test_save_and_load_report_to_a_sink(image: str) -> None:
    buf = io.BytesIO()
    saved = Recorder()
    archive.save([image], "oci-archive", buf, False, saved)
    img = imagelib.lookup(imagelib.open_store(), image)
    assert f"Copying blob {img.manifest_digest}" in saved.messages
    engine_images.remove([image], force=False)
    path = Path(os.environ["XDG_RUNTIME_DIR"]) / f"lib-{next(_n)}.tar"
    path.write_bytes(buf.getvalue())
    try:
        loaded_sink = Recorder()
        loaded = archive.load(str(path), loaded_sink)
    finally:
        path.unlink()
    assert [x.image.id for x in loaded] == [img.id]
    assert f"Copying config {img.id}" in loaded_sink.messages
    assert tarfile.is_tarfile(io.BytesIO(buf.getvalue()))


def test_a_silent_sink_is_a_sink(image: str) -> None:
    archive.save([image], "docker-archive", io.BytesIO(), False, Silent())


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if not os.access(REGISTRY, os.X_OK):
        pytest.skip("docker-registry not installed")
    reg = start_registry(tmp_path_factory.mktemp("libregistry"))
    yield reg
    reg.proc.kill()
    reg.proc.wait()


def test_push_and_pull_drive_a_recording_sink(registry: Registry, image: str) -> None:
    dest = f"{registry.host}/lib/{image.rpartition('/')[2].partition(':')[0]}:v1"
    pushed = Recorder()
    img = imagelib.lookup(imagelib.open_store(), image)
    digest = transfer.push(image, dest, transfer.PushOptions(tls_verify=False), pushed)
    assert digest == img.manifest_digest
    assert pushed.messages[0] == f"Pushing {image} to {dest}"
    assert pushed.messages[-1] == f"Writing manifest {digest} to {dest}"
    layer = img.layers[0]["digest"]
    assert pushed.blobs[layer].finished

    removed, errors = engine_images.remove([image], force=False)
    assert errors == [] and removed[-1] == Removed("Deleted", img.id)

    pulled = Recorder()
    got = transfer.pull(dest, transfer.PullOptions(tls_verify=False), pulled)
    try:
        assert got.id == img.id and got.names == [dest]
        assert pulled.messages[0] == f"Pulling {dest} from http://{registry.host}"
        assert pulled.messages[-1] == f"Copying config {img.id} done"
        # one blob per layer, every byte reported, done once unpacked
        assert set(pulled.blobs) == {x["digest"] for x in img.layers}
        for d, b in pulled.blobs.items():
            size = next(int(x["size"]) for x in img.layers if x["digest"] == d)
            assert (b.total, b.moved, b.finished) == (size, size, True)
        # pulled again: nothing moves, each blob is said to be there
        again = Recorder()
        transfer.pull(dest, transfer.PullOptions(tls_verify=False), again)
        assert again.blobs == {}
        assert f"Copying blob {layer[:19]} skipped: already exists" in again.messages
    finally:
        engine_images.remove([dest], force=True)


def test_pull_of_a_missing_tag_says_404(registry: Registry) -> None:
    from rootless.image.registry import RegistryError

    sink = Recorder()
    with pytest.raises(RlError) as exc:
        transfer.pull(f"{registry.host}/lib/none:1", transfer.PullOptions(tls_verify=False), sink)
    assert isinstance(exc.value, RegistryError)
    assert (exc.value.exit_code, exc.value.http_status) == (125, 404)
    assert sink.blobs == {}
