"""Type stubs for the native module ``lamina._lamina``."""

import datetime
import io
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from os import PathLike
from types import TracebackType
from typing import IO, Any, Literal, Protocol, TypeAlias, TypedDict, final, overload

from lamina.analysis import Report

_Path: TypeAlias = str | PathLike[str]
LayerSource: TypeAlias = str | PathLike[str] | bytes | bytearray | IO[bytes]
InitEntry: TypeAlias = tuple[str, str] | tuple[str, str, str]

class _BinaryWriter(Protocol):
    def write(self, data: bytes, /) -> object: ...

__version__: str
INIT_LAYER_ENTRIES: tuple[InitEntry, ...]
DRIVERS: tuple[str, ...]
"""The storage drivers this build has (``Graph(driver=...)`` also takes ``"auto"``)."""

def _check_login(host: str, username: str, password: str, *, insecure: bool = False) -> None:
    """Check credentials against a registry's ``/v2/`` (``lamina login``)."""

def copy_dir(src: _Path, dst: _Path, *, hardlink: bool = False) -> None:
    """Copy the tree at ``src`` to ``dst`` losslessly.

    ``dst`` must not exist (its parent must) or be an empty directory.
    Every entry keeps its type (directories, regular files, symlinks with
    their target unchanged, FIFOs, sockets, character and block devices),
    owner, mode (setuid/setgid/sticky included), every extended attribute
    (capabilities, POSIX ACLs, ``trusted.*``, ``user.*``, SELinux labels),
    and atime and mtime to the nanosecond; hard-link groups stay groups.
    Regular files are reflinked where the filesystem can, else copied with
    ``copy_file_range``, keeping holes. With ``hardlink=True`` each regular
    file becomes a hard link to the source's inode, which is never modified.

    As a non-root caller, ownership that cannot be given is not (and the
    setuid/setgid bits are then dropped), and ``trusted.*`` and
    ``security.capability`` are skipped, as ``cp -a`` does; anything else
    that cannot be copied (device nodes without CAP_MKNOD, unreadable
    files) raises. Errors are ``OSError`` subclasses with ``errno`` and
    ``filename`` set; the file being written is removed, but ``dst`` is
    left partial. A ``dst`` inside ``src`` raises ``ValueError``. The GIL is
    released while copying.
    """

def setup_init_layer(path: _Path, entries: Iterable[InitEntry] | None = None) -> None:
    """Create a container's ``-init`` layer entries under ``path``.

    ``entries`` defaults to the seed's (``INIT_LAYER_ENTRIES``): each is
    ``("dir", path)``, ``("file", path)`` or ``("symlink", path, target)``.
    Whatever non-directory stands on a component of an entry's path is
    replaced, never followed. Running it twice changes nothing.
    """

def apply_layer(
    dst: _Path,
    source: LayerSource,
    *,
    whiteouts: Literal["apply", "overlay"] = "apply",
    rootless_overlay: bool = False,
    tar_split: _Path | None = None,
    memory_limit: int | None = None,
    zstd_window_log_max: int | None = None,
    rootless: bool = False,
) -> int:
    """Apply a layer tar (plain, gzip or zstd, by magic bytes) onto ``dst``.

    ``source`` is a path, bytes, or a binary file object (read in chunks with
    ``.read()``). Returns the bytes of uncompressed tar applied.

    Every path is resolved inside ``dst`` by the kernel; a tar that tries to
    reach outside it raises :class:`lamina.UnsafeArchive`, a malformed one
    :class:`lamina.ArchiveError`. ``whiteouts="apply"`` removes what AUFS
    whiteouts (``.wh.NAME``, ``.wh..wh..opq``) name; ``"overlay"`` writes them
    as an overlayfs upper dir holds them (0/0 character devices, the
    ``trusted.overlay.opaque`` xattr, or ``user.overlay.opaque`` with
    ``rootless_overlay=True``). ``tar_split`` writes the record that
    :func:`_reassemble` turns back into the exact tar (file mode 0600).
    Owners are kept when running as root; the GIL is released throughout.

    Memory stays flat in the layer's size: what grows with its entries (the
    paths an opaque marker keeps, directory times) is kept compactly, under
    ``memory_limit`` bytes (512 MiB by default), and a zstd layer may ask for
    a window of at most ``2**zstd_window_log_max`` bytes (2**25, 32 MiB, by
    default): past either, :class:`lamina.LimitExceeded`. A stream that ends
    early leaves the files written so far in ``dst`` (as GNU tar does); a
    :class:`Graph` stages every layer, so nothing half-applied is listed.

    ``rootless=True`` (for a caller without root; a :class:`Graph` sets it
    itself) records what cannot be applied instead of dropping it: owners,
    device nodes (stored as empty files), ``trusted.*``/``security.*``
    xattrs and modes that would lock the owner out go into
    ``user.containers.override_stat`` and ``user.containers.<name>`` xattrs
    (fuse-overlayfs's scheme), which lamina's diffs read back.
    """

def _apply_layer_report(
    dst: _Path,
    source: LayerSource,
    *,
    whiteouts: Literal["apply", "overlay"] = "apply",
    rootless_overlay: bool = False,
    tar_split: _Path | None = None,
) -> tuple[int, str, int]:
    """``apply_layer`` returning ``(bytes, diff_id, entries)``; ``diff_id`` is
    ``"sha256:<hex>"`` of the uncompressed tar."""

def _reassemble(record: _Path, root: _Path, out: _Path) -> int:
    """Write the exact original tar of the layer applied at ``root`` to
    ``out`` from its tar-split ``record``; returns the bytes written. A file
    changed since the apply raises :class:`lamina.ArchiveError` naming it."""

def _close_all() -> None:
    """Close every open ``Graph`` (run at interpreter exit)."""

class _Mounted:
    def __enter__(self) -> str: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

class Layer:
    """A layer of a :class:`Graph`. Safe to share between threads."""

    @property
    def id(self) -> str:
        """The layer's id: the hex of its chain id for a registered layer."""
    @property
    def parent(self) -> Layer | None:
        """The layer below this one; ``None`` for a base layer."""
    @property
    def chain(self) -> list[Layer]:
        """The layers from the base to this one."""
    @property
    def writable(self) -> bool:
        """Whether this is a container's writable layer."""
    @property
    def created(self) -> datetime.datetime:
        """When the layer was made (aware, UTC)."""
    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata given when the layer was made (a JSON object)."""
    @property
    def size(self) -> int:
        """The seed's size: the content bytes of the layer tar's entries (the
        sum of their header sizes, as ``docker images`` showed); 0 for a
        layer made by :meth:`Graph.create`."""
    @property
    def tar_size(self) -> int | None:
        """Bytes of the uncompressed tar the layer was registered from;
        ``None`` for a layer made by :meth:`Graph.create`."""
    @property
    def diff_id(self) -> str | None:
        """``"sha256:<hex>"`` of the layer's uncompressed tar; ``None`` for
        writable and init layers."""
    @property
    def chain_id(self) -> str | None:
        """``"sha256:<hex>"``: the OCI chain id of the layer and its parents;
        ``None`` for writable and init layers."""
    @property
    def mount_count(self) -> int:
        """Live mount references, from every process."""
    def mount(self, *, persist: bool = False) -> str:
        """Mount the layer (writable layers read-write, others read-only) and
        return the path of its merged view. Without ``persist`` the reference
        is given back by :meth:`unmount` or when the graph closes; with it,
        the reference belongs to no process: the mount stays (counted in
        :attr:`mount_count`, blocking :meth:`Graph.delete`) until an
        :meth:`unmount` from any process."""
    def unmount(self) -> None:
        """Give back one of this process's mount references, or a persistent
        one; the last unmounts. :class:`NotMounted` (a :class:`LaminaError`,
        and a ``ValueError``) when there is nothing to give back."""
    def mounted(self) -> _Mounted:
        """``with layer.mounted() as path: ...``"""
    def diff(
        self, dst: _Path | IO[bytes] | None = None, *, progress: _Progress | None = None
    ) -> Any:
        """The layer's tar against its parent: ``bytes`` with no ``dst``, else
        written to the path or binary file object and the byte count returned.
        A registered layer's tar is byte-identical to what was registered.
        ``progress`` counts the bytes written (of ``tar_size``, where the
        layer has one) and the one layer."""
    def changes(self) -> list[Change]:
        """The paths the layer changes against its parent (O(changes) for a
        writable overlay layer)."""
    def diff_size(self) -> int:
        """Bytes of file content the layer adds or changes."""
    def walk(self, path: _Path = "/") -> _Walk:
        """Every entry of the layer's merged view at and below ``path``
        (symlinks on the way, the last one too, followed inside the view):
        parents before children, siblings sorted by name. No mount, no
        privilege: the view is read from the layers' own directories on
        every driver, and equals what :meth:`mount` shows. The second and
        later names of a hard-linked file come as ``"hardlink"`` entries
        whose ``linkname`` is the first."""
    def stat(self, path: _Path, *, follow_symlinks: bool = False) -> Entry:
        """The entry at ``path`` of the merged view (symlinks on the way
        followed inside the view; the last one only with
        ``follow_symlinks``). ``FileNotFoundError``, ``NotADirectoryError``
        or ``OSError(ELOOP)`` name the path."""
    def read(self, path: _Path) -> bytes:
        """The content of the regular file at ``path`` of the merged view."""
    def exists(self, path: _Path, *, follow_symlinks: bool = False) -> bool:
        """Whether the merged view has an entry at ``path`` (a dangling
        symlink is one unless ``follow_symlinks``)."""
    def open(self, path: _Path) -> io.BufferedReader:
        """The regular file at ``path`` of the merged view, opened for
        reading (a binary file object; ``.name`` is ``path``)."""
    def analyze(self) -> Report:
        """dive's analysis of the layer's chain: efficiency, wasted bytes,
        the largest inefficient files, and per layer what it adds,
        modifies, removes and hides (see :mod:`lamina.analysis`)."""
    def _repr_html_(self) -> str:
        """A summary and a size bar per layer of the chain (notebooks)."""
    def find(self, pattern: str) -> list[Entry]:
        """The entries of the merged view whose path matches the glob
        ``pattern`` (``fnmatch``, so ``*`` crosses ``/``; without a leading
        ``/`` it matches any tail), walk order; each :attr:`Entry.layer`
        names the layer that provides it."""
    def run(
        self,
        argv: str | PathLike[str] | Sequence[str | PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        user: str | int | None = None,
        network: Literal["none", "host"] = "none",
        mounts: Iterable[str | Sequence[Any]] = (),
        hostname: str | None = None,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        input: Any = None,
        capture_output: bool = False,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` with the layer's merged tree as its root, in new
        mount, pid, ipc and uts namespaces, and a network namespace with
        only ``lo`` unless ``network="host"`` (a user namespace too when not
        root), as ``docker run`` does: ``/proc``, ``/dev`` (null, zero,
        full, random, urandom, tty, pts, shm, mqueue), ``/sys`` read-only,
        ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` bound
        over the init layer's files. ``user`` is ``docker run -u``'s
        (looked up in the container's ``/etc/passwd``); ``env`` gets
        ``PATH``, ``HOSTNAME`` and ``HOME`` where missing; ``cwd`` is made
        if missing; ``mounts`` are ``"SRC:DST[:ro]"`` or ``(src, dst[, "ro"])``.

        The rest means what it means to :func:`subprocess.run`: a non-zero
        exit is the result's ``returncode`` (raised only with ``check``),
        ``timeout`` raises :class:`subprocess.TimeoutExpired`. A timeout or
        Ctrl-C kills every process of the container before the call
        returns. A program not found is :class:`FileNotFoundError`; an
        unknown user is :class:`ValueError`. Changes land in the layer:
        :meth:`Graph.commit` them."""
    def _prepare_run(
        self,
        argv: list[str],
        env: list[str],
        cwd: str,
        user: str | None,
        network: str,
        mounts: list[tuple[str, str, bool]],
        hostname: str | None,
    ) -> _PreparedRun: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Entry:
    """One entry of a layer's merged view (:meth:`Layer.walk`,
    :meth:`Layer.stat`): what ``lstat`` would show in the mounted layer, and
    which layer of the chain provides it."""

    @property
    def path(self) -> str:
        """Its path in the view: ``"/etc/passwd"``."""
    @property
    def type(
        self,
    ) -> Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo", "socket"]: ...
    @property
    def mode(self) -> int:
        """Permission bits, setuid, setgid and sticky included."""
    @property
    def uid(self) -> int:
        """The owner's user id."""
    @property
    def gid(self) -> int:
        """The owner's group id."""
    @property
    def size(self) -> int:
        """Bytes of a regular file (or hard link to one) or of a symlink's
        target; 0 for anything else."""
    @property
    def mtime(self) -> float:
        """Modification time, seconds since the epoch."""
    @property
    def mtime_ns(self) -> int:
        """Modification time, nanoseconds since the epoch."""
    @property
    def linkname(self) -> str | None:
        """A symlink's target, or the earlier name a hard link links to."""
    @property
    def devmajor(self) -> int: ...
    @property
    def devminor(self) -> int: ...
    @property
    def layer(self) -> str | None:
        """The id of the layer of the chain that provides the entry: the
        topmost layer whose diff adds or changes it."""
    def to_dict(self) -> dict[str, Any]:
        """The entry's fields as a dict."""
    def __eq__(self, other: object) -> bool: ...

@final
class _Walk:
    def __iter__(self) -> _Walk: ...
    def __next__(self) -> Entry: ...

@final
class _View:
    """A merged view of bare directories (see :func:`_merged_view`)."""

    def walk(self, path: _Path = "/") -> _Walk: ...
    def stat(self, path: _Path, *, follow_symlinks: bool = False) -> Entry: ...
    def read(self, path: _Path) -> bytes: ...
    def exists(self, path: _Path, *, follow_symlinks: bool = False) -> bool: ...
    def open(self, path: _Path) -> io.BufferedReader: ...

def _diff_images(a: Image, b: Image, *, progress: _Progress | None = None) -> list[Change]:
    """What :meth:`Graph.diff_images` returns, for two images of one graph."""

def _merged_view(dirs: list[_Path]) -> _View:
    """The merged view of directories stacked uppermost first (as
    overlayfs's ``lowerdir=`` lists them), each in overlay form (0/0
    character devices are whiteouts, the ``overlay.opaque`` xattr makes a
    directory opaque), read as overlayfs reads its lowerdirs. Entries name
    no layer."""

_Ref: TypeAlias = str | Layer

_Progress: TypeAlias = Callable[[int, int, int, int], object]
"""A progress callback: ``(bytes, total_bytes, layers, total_layers)``; a
total of 0 is not known yet. Called from lamina's threads (with the GIL) at
most every 4 MiB and at every layer, and last with the counts at their
totals. An exception it raises stops the call as Ctrl-C does (at its next
read or write, leaving the store as it was) and is what the call raises;
it is not called again. A call in two phases (``commit``: the tar written,
then applied; a stream ``load``) counts bytes from 0 again for the second,
whose total is known."""

@final
class Image:
    """An image of a :class:`Graph`: a name for a chain of read-only layers,
    with its config and manifest as they were loaded (byte for byte)."""

    @property
    def name(self) -> str:
        """The name, normalized: ``"app:1"`` (``"app"`` is ``"app:latest"``)."""
    @property
    def layer(self) -> Layer:
        """The top layer."""
    @property
    def layers(self) -> list[Layer]:
        """The layers, base first."""
    @property
    def config(self) -> dict[str, Any]:
        """The image config (``rootfs.diff_ids`` lists the layers' diff IDs)."""
    @property
    def manifest(self) -> dict[str, Any]:
        """The image manifest."""
    @property
    def digest(self) -> str:
        """The manifest digest, ``"sha256:<hex>"``."""
    @property
    def created(self) -> datetime.datetime:
        """When the image was made (its config's ``created``; else when it was
        recorded), aware, UTC."""
    @property
    def env(self) -> dict[str, str]:
        """The environment (``config.Env``) as a dict."""
    @property
    def cmd(self) -> list[str] | None:
        """``config.Cmd``."""
    @property
    def entrypoint(self) -> list[str] | None:
        """``config.Entrypoint``."""
    @property
    def labels(self) -> dict[str, str]:
        """``config.Labels`` (empty when none)."""
    @property
    def workdir(self) -> str:
        """``config.WorkingDir`` (``""`` when unset)."""
    @property
    def user(self) -> str:
        """``config.User`` (``""`` when unset)."""
    @property
    def history(self) -> list[HistoryEntry]:
        """The config's history, base first (what ``docker history`` lists,
        newest last)."""
    def find(self, pattern: str) -> list[Entry]:
        """:meth:`Layer.find` over the image's top layer."""
    def _repr_html_(self) -> str:
        """Config, history and layers (notebooks)."""
    def analyze(self) -> Report:
        """dive's analysis of the image's layers (its top layer's chain),
        named by the image: see :meth:`Layer.analyze`."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

_ImageRef: TypeAlias = str | Image

class HistoryEntry(TypedDict, total=False):
    """One entry of an image config's ``history``."""

    created: str
    created_by: str
    author: str
    comment: str
    empty_layer: bool

class Graph:
    """A layer store at ``root``: read-only layers registered from tars,
    writable layers (containers) on them, and named images, all kept under
    ``root`` (``docs/store.md`` describes its files). Safe to share between
    threads; every I/O call releases the GIL."""

    def __init__(
        self, root: _Path, driver: Literal["auto", "overlay", "overlay2", "vfs"] | str = "auto"
    ) -> None:
        """Open (or make) the store at ``root``. ``driver`` is one of
        :data:`DRIVERS` or ``"auto"``; any other name is a ``ValueError``
        raised before anything is written."""
    @property
    def root(self) -> str: ...
    @property
    def driver(self) -> str: ...
    def register(
        self,
        source: LayerSource,
        *,
        parent: _Ref | None = None,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
        progress: _Progress | None = None,
    ) -> Layer:
        """Apply a tar (plain, gzip or zstd) as a read-only layer on
        ``parent``. The default id is the hex of the layer's chain id, so the
        same diff on the same parent is stored once. ``progress`` counts the
        bytes read of ``source`` (compressed; of its size for a path, bytes
        or a regular file) and the one layer; Ctrl-C or an exception from it
        stops the apply and nothing is left of the layer.

        ``metadata`` is kept as JSON and must read back exactly: str keys;
        values None, bool, int within ±2**53, finite float, str, list and
        dict (a tuple, a non-str key or a bigger int is refused with
        ``TypeError``/``ValueError`` naming where it is), at most 1 MiB as
        compact JSON (``ValueError``, before anything is applied)."""
    def create(
        self,
        parent: _Ref | Image | None = None,
        *,
        id: str | None = None,
        init: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> Layer:
        """A writable layer on ``parent``; ``init=True`` puts an ``<id>-init``
        layer made by :func:`setup_init_layer` between them. On an
        :class:`Image`, the container sits on its top layer and remembers the
        image, whose config :meth:`commit_image` inherits."""
    def pull(
        self,
        reference: str,
        *,
        platform: str | None = None,
        auth: tuple[str, str] | dict[str, str] | None = None,
        insecure: bool = False,
        progress: _Progress | None = None,
    ) -> Image:
        """Pull ``reference`` (``host[:port]/repo[:tag][@digest]``, as Docker
        parses it) over the OCI distribution API and name the image by it (a
        reference by digest alone names it by its manifest digest). An index
        or manifest list gives this machine's platform, or ``platform``
        (``"linux/arm64"``). Layers already in the store are not fetched;
        the others stream from the socket through the blob's digest check,
        decompression and the apply, with no copy of the blob; a wrong blob
        fails the pull and the store keeps nothing of it. ``img.digest`` is
        the registry's manifest digest. Credentials: ``auth``, else Docker's
        config file (``auths``, ``credsStore``, ``credHelpers``). TLS is
        verified (system roots, plus ``/etc/docker/certs.d/<host:port>/*.crt``
        or ``$LAMINA_CERTS_D``); plain HTTP only for loopback hosts,
        ``insecure=True`` or ``$LAMINA_INSECURE_REGISTRIES``. ``docker.io``
        needs ``$LAMINA_DOCKER_IO_ENDPOINT``. Failures are
        :class:`RegistryError` (:class:`AuthenticationError`,
        :class:`ManifestUnknown`, :class:`UnsupportedManifest`) or
        :class:`ArchiveError` for a blob whose bytes are wrong."""
    def push(
        self,
        image: Image | str,
        reference: str | None = None,
        *,
        auth: tuple[str, str] | dict[str, str] | None = None,
        insecure: bool = False,
        compression: Literal["gzip", "zstd"] | None = "gzip",
        format: Literal["oci", "docker"] | None = None,
        progress: _Progress | None = None,
    ) -> str:
        """Push ``image`` to ``reference`` (default: the image's name) and
        return the pushed manifest's digest. Only what the repository lacks
        is sent: a layer blob the store knows (from a pull or a load) that
        the repository has is skipped, one pulled from another repository
        of the same registry is mounted from there, and the rest stream
        from the layer's exact tar through ``compression`` into the upload,
        with no temporary file. An image pushed back unchanged to where it
        came from uploads nothing and keeps its digest; otherwise a new
        manifest lists the blobs, in ``format`` (``"docker"``: Docker schema
        2, which has no zstd; ``"oci"``), by default the image's own (one
        lamina made, as for a ``docker save`` archive, is OCI). Which blobs
        a layer is known as, and where, is remembered under the store's
        ``distribution/``. Credentials, TLS and errors as for :meth:`pull`."""
    def squash(self, image: _ImageRef, name: str, *, progress: _Progress | None = None) -> Image:
        """``image`` as one layer (its merged tree exported whole) named
        ``name``: the config kept, ``rootfs.diff_ids`` the one layer's, the
        history one entry (as ``buildah commit --squash``). ``progress``
        counts as for :meth:`commit`: the tar's bytes as it is exported,
        then as it is registered."""
    def diff_images(
        self, a: _ImageRef, b: _ImageRef, *, progress: _Progress | None = None
    ) -> list[Change]:
        """What ``docker diff`` lists between ``a``'s and ``b``'s merged
        trees, reading only the layers the two do not share: the paths
        those layers' diffs touch are looked up in both merged views,
        nothing mounted. ``progress`` counts those layers."""
    def commit_image(
        self,
        container: _Ref,
        name: str,
        *,
        changes: str | Iterable[str | dict[str, Any]] | dict[str, Any] | None = None,
        created_by: str | None = None,
        author: str | None = None,
        comment: str | None = None,
        progress: _Progress | None = None,
    ) -> Image:
        """``docker commit``: the container's changes as a new layer on its
        image, tagged ``name`` with the image's config inherited and changed.
        ``progress`` counts the layer as :meth:`commit` does.

        ``changes`` are read as ``docker commit --change`` reads them:
        ``ENV``, ``CMD``, ``ENTRYPOINT`` (exec form ``["a", "b"]`` or shell
        form, run by ``/bin/sh -c``), ``LABEL``, ``WORKDIR`` (relative to the
        previous one), ``USER``, ``EXPOSE`` (``80`` is ``80/tcp``), ``VOLUME``,
        ``STOPSIGNAL``; a dict sets config keys (``{"Cmd": ["sh"]}``) as given.
        One history entry is appended (``created_by``, ``author``,
        ``comment``); ``created`` is ``$SOURCE_DATE_EPOCH`` when set, else now.
        A change that cannot be read, or a config that would be over 4 MiB
        (see :meth:`tag`), is a ``ValueError`` before anything is written.
        The base config is the image the container was created from
        (``create(image)``), else the image whose top layer the container
        sits on, else a new one."""
    def commit(
        self,
        layer: _Ref,
        *,
        metadata: dict[str, Any] | None = None,
        progress: _Progress | None = None,
    ) -> Layer:
        """A writable layer's changes as a new read-only layer on the same
        image layer. ``progress`` counts the one layer in two phases: the
        bytes of its tar as it is written out (total not known), then from 0
        again as it is applied (total known)."""
    def get(self, reference: _Ref) -> Layer:
        """By full id or unique prefix. :class:`LayerNotFound` names what was
        looked up and where; for an ambiguous prefix its ``candidates`` list
        the ids it matches."""
    def layers(self) -> list[Layer]:
        """Every layer, oldest first."""
    def heads(self) -> list[Layer]:
        """The layers no other layer has as parent."""
    def delete(self, layer: _Ref) -> None:
        """Refused with :class:`LayerInUse` while mounted, with children, or
        used by an image."""
    def status(self) -> dict[str, Any]:
        """Facts about the store and the host: driver, root, layer counts,
        backing filesystem, d_type, kernel features."""
    def load(
        self, source: _Path | IO[bytes] | bytes, *, progress: _Progress | None = None
    ) -> list[Image]:
        """Load the images of an OCI image layout (a directory, or a tar of one)
        or of a docker archive (``docker save``: legacy or OCI-style), plain,
        gzip or zstd, from a path or a binary file object (``sys.stdin.buffer``
        works). A tar on disk is read in place; a pipe is spooled under the
        store's ``tmp/`` (its metadata comes last). Every blob is checked
        against its descriptor (digest, size) as it streams and every layer's
        diff ID against the config; layers already in the store are not
        applied again. Any failure (:class:`ArchiveError` naming the blob)
        leaves the store unchanged. One :class:`Image` per name; an image with
        no name is named by its manifest digest."""
    def save(
        self,
        refs: _ImageRef | Iterable[_ImageRef],
        dst: _Path | _BinaryWriter,
        *,
        format: Literal["oci", "docker-archive"] = "oci",
        compression: Literal["gzip", "zstd"] | None = "gzip",
        progress: _Progress | None = None,
    ) -> None:
        """Save images: ``"oci"``, an OCI image layout directory at ``dst``
        (which must not exist, or be empty); ``"docker-archive"``, a tar that
        ``docker load`` and skopeo read, to a path or a binary file object.
        Layer blobs are the layers' exact tars (their diff IDs are the
        config's); configs are written byte for byte, and so are manifests
        wherever the blobs they list are unchanged (uncompressed)."""
    def tag(self, layer: _Ref, name: str, *, config: dict[str, Any] | None = None) -> Image:
        """Name ``layer`` and its ancestors (read-only layers) an image,
        replacing any image of that name. Without ``config``, an image of
        exactly these layers lends its config and manifest (the digest stays),
        else a minimal config is made; a given config keeps everything but
        ``rootfs``, set to the layers' diff IDs.

        ``config`` must read back exactly, as layer ``metadata`` must (str
        keys; None, bool, int within ±2**53, finite float, str, list, dict;
        else ``TypeError``/``ValueError`` naming where), and be at most 4 MiB
        as the compact JSON stored, ``rootfs`` included (``ValueError``);
        both are checked before anything is written."""
    def untag(self, name: _ImageRef) -> None:
        """Remove an image's name; its layers stay (:class:`ImageNotFound` if
        there is none)."""
    def images(self) -> list[Image]:
        """Every image, by name."""
    def image(self, name: str) -> Image:
        """The image ``name`` (:class:`ImageNotFound` if there is none)."""
    def check(self, *, progress: _Progress | None = None) -> dict[str, Any]:
        """Check every layer, changing nothing: complete, mountable, its files
        give back its tar (reassembled and hashed against its diff ID and
        chain ID), size records right, no stuck leftovers. ``{"layers": N,
        "problems": [{"layer": id, "path": ..., "what": ...}, ...]}``;
        ``problems`` is empty when all is well. ``progress`` counts the
        layers checked and the bytes of their tars hashed."""
    def repair(self, *, progress: _Progress | None = None) -> dict[str, Any]:
        """Remove what cannot be saved (a broken layer and the layers above
        it), rebuild what can (size records, mount counts, ``tmp/``): the
        dict of :meth:`check` after it, plus ``actions``, what was done.
        ``progress`` counts both checks (before and after) as :meth:`check`
        counts one; stopped during the first, it changes nothing."""
    def close(self) -> None:
        """Unmount what this graph mounted. After it, every call on the
        graph and on its layers and images raises ``ValueError`` (as on a
        closed file); ``repr()`` still works and closing twice is harmless."""
    def __enter__(self) -> Graph: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def _repr_html_(self) -> str:
        """The layers as a tree, with sizes (notebooks)."""
    def __getitem__(self, ref: _Ref) -> Layer: ...
    def __contains__(self, ref: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Layer]: ...

@final
class Change:
    """One changed path, as ``docker diff`` lists it.

    Frozen, hashable, ordered by (path, kind); ``Change("/etc/passwd", "C")``
    builds one.
    """

    def __init__(self, path: str, kind: Literal["A", "C", "D"]) -> None: ...
    @property
    def path(self) -> str:
        """The path inside the tree, starting with ``/``."""
    @property
    def kind(self) -> Literal["A", "C", "D"]:
        """``"A"`` added, ``"C"`` changed, ``"D"`` deleted."""
    def __lt__(self, other: Change) -> bool: ...
    def __le__(self, other: Change) -> bool: ...
    def __gt__(self, other: Change) -> bool: ...
    def __ge__(self, other: Change) -> bool: ...
    def __hash__(self) -> int: ...

def changes(old_dir: _Path, new_dir: _Path, *, content: bool = False) -> list[Change]:
    """The changes that turn ``old_dir`` into ``new_dir``, parents first.

    Compares type, mode, owner, rdev, symlink target, xattrs and (except for
    directories) size and mtime to the nanosecond. ``content=True`` also
    compares the bytes of files whose size and mtime agree (Docker misses
    such changes). A deleted directory is listed alone; a directory is ``C``
    when its own metadata or anything below it changed (moby's rule); the
    root is never listed.
    """

def upper_changes(upper: _Path, lower: _Path) -> list[Change]:
    """The changes an overlayfs upper dir makes over its lower tree.

    Walks only ``upper`` and stats ``lower`` at those paths, so the cost is
    O(changes). Equals ``changes(lower, merged)``: an entry overlayfs copied
    up without changing it is not listed. Raises ``UnsafeArchive``
    for a real ``.wh.*`` file in ``upper`` and ``ValueError`` for
    ``redirect``/``metacopy`` entries.
    """

@overload
def export_diff(
    old_dir: _Path | None,
    new_dir: _Path,
    dst: None = None,
    *,
    source_date_epoch: int | None = None,
    content: bool = False,
) -> bytes:
    """The tar of the changes from ``old_dir`` to ``new_dir`` (``old_dir=None``:
    the whole tree, a base layer).

    Returns the bytes, or writes them to ``dst`` (a path, or a binary file
    object with ``write()``) and returns None. Deletions are ``.wh.`` entries
    with a fixed time; hard links are stored once, and an unchanged name of a
    file linked to a changed one is carried as a link so the group stays
    whole (``changes()`` does not list it); PAX headers carry long names,
    nanosecond times and ``security.capability``, ``user.*`` and ACL xattrs.
    The same trees give the same bytes. ``source_date_epoch`` clamps later
    mtimes down to it. Sockets are skipped with a ``RuntimeWarning``.
    """

@overload
def export_diff(
    old_dir: _Path | None,
    new_dir: _Path,
    dst: _Path | _BinaryWriter,
    *,
    source_date_epoch: int | None = None,
    content: bool = False,
) -> None: ...
@overload
def export_upper_diff(
    upper: _Path, lower: _Path, dst: None = None, *, source_date_epoch: int | None = None
) -> bytes:
    """The tar of the changes an overlayfs upper dir makes over ``lower``,
    from the upper dir alone: whiteout devices become ``.wh.`` entries, opaque
    directories a ``.wh..wh..opq`` entry followed by their whole content;
    a copied-up file equal to what it shadows (metadata and bytes) is left
    out. Same output rules as :func:`export_diff`.
    """

@overload
def export_upper_diff(
    upper: _Path,
    lower: _Path,
    dst: _Path | _BinaryWriter,
    *,
    source_date_epoch: int | None = None,
) -> None: ...
def _set_mount_helper(argv: list[str]) -> None: ...
def _mount_helper_main(parent: int) -> None: ...
def _run_main(spec: str) -> None: ...
def _unshare_main(argv: list[str]) -> None: ...
def _unshare_command() -> list[str]: ...

@final
class _PreparedRun:
    def runner_argv(self, parent: int, error_fd: int) -> list[str]: ...
    def finish(self) -> None: ...
    @staticmethod
    def raise_failure(report: bytes) -> None: ...
