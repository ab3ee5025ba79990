"""A client for the OCI distribution API (registry v2), on httpx.

Authentication follows the registry's WWW-Authenticate challenge: Basic
sends the stored credentials; Bearer fetches a token from the challenge's
realm (with service and scope, and the credentials if any) and caches it
per scope. `tls_verify=False` talks plain HTTP, as podman's
--tls-verify=false does for a registry without TLS (loopback test
registries). Every error is a one-line RlError.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import RlError
from . import credentials
from .store import INDEX_TYPES, MANIFEST_TYPES

ACCEPT = ", ".join([*MANIFEST_TYPES, *INDEX_TYPES])
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class RegistryError(RlError):
    """A registry's failure; its HTTP status, if it gave one, says the kind (401, 403, 404)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
        if status in (401, 403, 404):
            self.http_status = status


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return Challenge(scheme.lower(), params)


def _error_text(resp: httpx.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        if errors:
            e = errors[0]
            return f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}"
    except (ValueError, AttributeError):
        pass
    return f"{resp.status_code} {resp.reason_phrase}"


class Client:
    """One registry host; safe to share between download threads."""

    def __init__(self, host: str, tls_verify: bool = True,
                 creds: tuple[str, str] | None = None) -> None:
        self.host = host
        scheme = "https" if tls_verify else "http"
        self.base = f"{scheme}://{'registry-1.docker.io' if host == 'docker.io' else host}"
        self.creds = creds if creds is not None else credentials.lookup(host)
        self.http = httpx.Client(timeout=TIMEOUT, follow_redirects=True, verify=tls_verify)
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # -- authentication --------------------------------------------------------------

    def _auth_header(self, scope: str, url: str) -> dict[str, str]:
        # Credentials and tokens go to the registry itself only: an upload
        # Location or a redirect may point at another host (httpx also drops
        # the header on cross-origin redirects).
        if httpx.URL(url).host != httpx.URL(self.base).host:
            return {}
        with self._lock:
            token = self._tokens.get(scope)
            if token:
                return {"Authorization": f"Bearer {token}"}
            if self._basic and self.creds:
                return {"Authorization": self._basic_value()}
        return {}

    def _basic_value(self) -> str:
        import base64

        assert self.creds
        raw = f"{self.creds[0]}:{self.creds[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _authenticate(self, resp: httpx.Response, scope: str) -> None:
        header = resp.headers.get("WWW-Authenticate", "")
        ch = parse_challenge(header)
        if ch.scheme == "basic":
            if not self.creds:
                raise RegistryError(f"{self.host}: authentication required: run "
                                    f"rl login {self.host}", 401)
            with self._lock:
                self._basic = True
            return
        if ch.scheme != "bearer" or "realm" not in ch.params:
            raise RegistryError(f"{self.host}: unsupported authentication challenge "
                                f"{header!r}", 401)
        # One scope parameter per scope, as the token specification has it.
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("service", ch.params.get("service", ""))]
        params += [("scope", s) for s in (scope or ch.params.get("scope", "")).split()]
        auth = None
        if self.creds:
            realm = httpx.URL(ch.params["realm"])
            if realm.scheme != "https" and self.base.startswith("https:"):
                raise RegistryError(f"{self.host}: refusing to send credentials to the token "
                                    f"server {realm} over plain HTTP", 401)
            auth = httpx.BasicAuth(*self.creds)
        try:
            r = self.http.get(ch.params["realm"], params=params, auth=auth)
        except httpx.HTTPError as e:
            raise RegistryError(f"{self.host}: token server {ch.params['realm']}: {e}") from None
        if r.status_code != 200:
            raise RegistryError(f"{self.host}: token server refused: {_error_text(r)}",
                                r.status_code)
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise RegistryError(f"{self.host}: token server gave no token")
        with self._lock:
            self._tokens[scope] = str(token)

    def request(self, method: str, url: str, scope: str, ok: tuple[int, ...] = (200,),
                **kw: Any) -> httpx.Response:
        """A request with the auth dance; raises RegistryError unless the status is in ok."""
        if url.startswith("/"):
            url = self.base + url
        headers = dict(kw.pop("headers", {}))
        resp = None
        for attempt in range(2):
            try:
                resp = self.http.request(
                    method, url, headers={**headers, **self._auth_header(scope, url)}, **kw)
            except httpx.HTTPError as e:
                raise RegistryError(f"cannot reach registry {self.host}: {e}") from None
            if resp.status_code == 401 and attempt == 0:
                self._authenticate(resp, scope)
                continue
            break
        assert resp is not None
        if resp.status_code in ok:
            return resp
        if resp.status_code == 401:
            raise RegistryError(f"{self.host}: unauthorized: {_error_text(resp)} (run rl login "
                                f"{self.host})", 401)
        raise RegistryError(f"{self.host}: {method} {httpx.URL(url).path}: {_error_text(resp)}",
                            resp.status_code)

    @contextlib.contextmanager
    def stream(self, url: str, scope: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """A streamed GET (blobs), after authenticating if the registry asks.

        Errors while reading the body are the caller's (it may resume).
        """
        if url.startswith("/"):
            url = self.base + url
        for attempt in range(2):
            req = self.http.build_request("GET", url,
                                          headers={**headers, **self._auth_header(scope, url)})
            try:
                resp = self.http.send(req, stream=True)
            except httpx.HTTPError as e:
                raise RegistryError(f"cannot reach registry {self.host}: {e}") from None
            try:
                if resp.status_code == 401 and attempt == 0:
                    resp.read()
                    self._authenticate(resp, scope)
                    continue
                if resp.status_code not in (200, 206):
                    resp.read()
                    if resp.status_code == 404:
                        raise RegistryError(f"{self.host}: blob {httpx.URL(url).path} not found",
                                            404)
                    raise RegistryError(f"{self.host}: GET {httpx.URL(url).path}: "
                                        f"{_error_text(resp)}", resp.status_code)
                yield resp
                return
            finally:
                resp.close()

    # -- API -------------------------------------------------------------------------

    def ping(self) -> None:
        self.request("GET", "/v2/", "")

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(body, media type, digest header) of a manifest or index."""
        scope = f"repository:{repo}:pull"
        try:
            r = self.request("GET", f"/v2/{repo}/manifests/{ref}", scope,
                             headers={"Accept": ACCEPT})
        except RegistryError as e:
            if e.status == 404:
                raise RegistryError(f"{self.host}/{repo}:{ref}: manifest unknown (not found)",
                                    404) from None
            raise
        media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
        return r.content, media_type, r.headers.get("Docker-Content-Digest", "")

    def has_blob(self, repo: str, digest: str, push: bool = False) -> bool:
        scope = f"repository:{repo}:{'push,pull' if push else 'pull'}"
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope, ok=(200, 404))
        return r.status_code == 200

    def mount_blob(self, repo: str, digest: str, source_repo: str) -> str | None:
        """Cross-repository mount; None if mounted, else an upload URL to use instead."""
        scope = f"repository:{repo}:push,pull repository:{source_repo}:pull"
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope, ok=(201, 202),
                         params={"mount": digest, "from": source_repo})
        if r.status_code == 201:
            return None
        return self._location(r)

    def start_upload(self, repo: str) -> str:
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", f"repository:{repo}:push,pull",
                         ok=(202,))
        return self._location(r)

    def _location(self, r: httpx.Response) -> str:
        loc = r.headers.get("Location")
        if not loc:
            raise RegistryError(f"{self.host}: upload answer without a Location")
        return str(r.url.join(loc))

    def upload_chunk(self, repo: str, url: str, data: bytes, start: int) -> str:
        r = self.request("PATCH", url, f"repository:{repo}:push,pull", ok=(202, 204),
                         content=data, headers={
                             "Content-Type": "application/octet-stream",
                             "Content-Range": f"{start}-{start + len(data) - 1}"})
        return self._location(r)

    def finish_upload(self, repo: str, url: str, digest: str, data: bytes = b"") -> None:
        sep = "&" if "?" in url else "?"
        self.request("PUT", f"{url}{sep}digest={digest}", f"repository:{repo}:push,pull",
                     ok=(201, 204), content=data,
                     headers={"Content-Type": "application/octet-stream"})

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        r = self.request("PUT", f"/v2/{repo}/manifests/{ref}", f"repository:{repo}:push,pull",
                         ok=(201, 200), content=body, headers={"Content-Type": media_type})
        return str(r.headers.get("Docker-Content-Digest", ""))

