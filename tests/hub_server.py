"""A fake Hugging Face Hub for tests: the endpoints huggingface_hub calls to push and pull, on 127.0.0.1.

Implemented (paths as huggingface_hub 2.x builds them; ``{t}`` is ``models``, ``datasets`` or ``spaces``, the URL
prefix is ``""``, ``"datasets/"`` or ``"spaces/"``; a Space is created with its ``sdk``):
    GET  /api/whoami-v2                                   token check
    POST /api/repos/create                                409 when it exists
    POST /api/validate-yaml                               README metadata check (parses the YAML)
    GET  /api/{t}/{ns}/{name}[/revision/{rev}]            repo info: sha, siblings
    GET  /api/{t}/{ns}/{name}/tree/{rev}[/{path}]         file listing (oid, size, lfs {oid, size})
    GET|POST /api/spaces/{ns}/{name}/variables            a Space's variables
    POST /api/{t}/{ns}/{name}/preupload/{rev}             upload mode (lfs for *.safetensors or large files)
    POST /{prefix}{ns}/{name}.git/info/lfs/objects/batch  LFS batch: basic transfer, upload href below
    PUT  /lfs-upload/{oid}                                stores the object after checking its sha256
    POST /api/{t}/{ns}/{name}/commit/{rev}                NDJSON commit (file / lfsFile / deletedFile)
    HEAD|GET /{prefix}{ns}/{name}/resolve/{rev}/{path}    X-Repo-Commit, ETag, X-Linked-Etag/-Size for LFS

Faults: ``fail(method, pattern, status=..., times=...)`` answers matching calls with an error status (or drops
the connection with ``drop=True``); ``tamper(repo, path)`` serves a same-size corrupted copy of a file.
Xet is not implemented: tests set ``HF_HUB_DISABLE_XET`` so uploads take the LFS path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:  # git object id: of the pointer for LFS files, as on the Hub
        return git_blob_id(self.pointer() if self.lfs else self.data)


@dataclass
class Commit:
    sha: str
    message: str
    description: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    sdk: str | None = None  # Spaces only
    variables: dict[str, str] = field(default_factory=dict)  # Spaces only: their environment

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, rev: str) -> Commit | None:
        if rev == "main":
            return self.head
        return next((c for c in self.commits if c.sha == rev), None)


@dataclass
class Failure:
    method: str
    pattern: str
    status: int
    times: int
    drop: bool
    headers: dict[str, str]


class FakeHub:
    """State + HTTP server. ``tokens`` maps a token to (user name, role: "write" or "read")."""

    lfs_threshold = 10 * 1024 * 1024

    def __init__(self, tokens: dict[str, tuple[str, str]] | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.bodies: list[bytes] = []
        self.headers_seen: list[str] = []
        self.failures: list[Failure] = []
        self.tampered: set[tuple[str, str, str]] = set()
        self.lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None

    # -- control ------------------------------------------------------------------------------------------------

    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, method: str, pattern: str, *, status: int = 500, times: int = 1, drop: bool = False,
             headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` calls whose "METHOD /path" matches ``pattern`` (re.search) with ``status``."""
        with self.lock:
            self.failures.append(Failure(method.upper(), pattern, status, times, drop, headers or {}))

    def clear_failures(self) -> None:
        with self.lock:
            self.failures.clear()

    def tamper(self, repo_id: str, path: str, repo_type: str = "model") -> None:
        """Serve ``path`` with one byte flipped (same size, same ETag): a corrupted download."""
        with self.lock:
            self.tampered.add((repo_type, repo_id, path))

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        return {p: b.data for p, b in self.repo(repo_id, repo_type).head.files.items()}

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.calls if m == method.upper() and re.search(pattern, p))

    # -- helpers ------------------------------------------------------------------------------------------------

    def _new_sha(self, seed: bytes) -> str:
        self._counter += 1
        return hashlib.sha1(seed + str(self._counter).encode()).hexdigest()

    def _user(self, headers: Any) -> tuple[str, str] | None:
        auth = headers.get("Authorization") or ""
        return self.tokens.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None


# ---------------------------------------------------------------------------------------------------------------

class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def _prefix_type(prefix: str | None) -> str:
    """The repo type of a URL prefix ("", "datasets/", "spaces/")."""
    return {"datasets/": "dataset", "spaces/": "space"}.get(prefix or "", "model")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing ---------------------------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, method: str, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        else:
            data = body or b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        body = self._body()
        with fake.lock:
            fake.bodies.append(body)
            fake.headers_seen.append(str(self.headers))
            for failure in fake.failures:
                if failure.times > 0 and failure.method in (method, "*") and re.search(failure.pattern, f"{method} {path}"):
                    failure.times -= 1
                    fake.calls.append((method, path, failure.status))
                    if failure.drop:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self._send(method, failure.status, {"error": "injected failure"},
                               {"X-Error-Message": "injected failure", **failure.headers})
                    return
            try:
                status, reply, headers = self._route(method, path, query, body)
            except _Reply as r:
                status, reply, headers = r.status, r.body, r.headers
            fake.calls.append((method, path, status))
        self._send(method, status, reply, headers)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any, dict[str, str]]:
        routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"/(?P<prefix>datasets/|spaces/)?(?P<repo>{_NAME}/{_NAME})\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("GET|POST", rf"/api/spaces/(?P<repo>{_NAME}/{_NAME})/variables", self._variables),
            ("GET", rf"/api/(?P<t>models|datasets|spaces)/(?P<repo>{_NAME}/{_NAME})/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?", self._tree),
            ("POST", rf"/api/(?P<t>models|datasets|spaces)/(?P<repo>{_NAME}/{_NAME})/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"/api/(?P<t>models|datasets|spaces)/(?P<repo>{_NAME}/{_NAME})/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"/api/(?P<t>models|datasets|spaces)/(?P<repo>{_NAME}/{_NAME})(?:/revision/(?P<rev>[^/]+))?", self._info),
            ("GET|HEAD", rf"/(?P<prefix>datasets/|spaces/)?(?P<repo>{_NAME}/{_NAME})/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        for methods, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and method in methods.split("|"):
                args = {k: unquote(v) if v else v for k, v in match.groupdict().items()}
                return handler(method=method, query=query, body=body, **args)
        raise _Reply(404, {"error": f"fake hub: no route for {method} {path}"})

    def _variables(self, method: str, repo: str, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        space = self._find("space", repo)
        if method == "POST":
            self._require_write(repo.split("/")[0])
            payload = json.loads(body)
            space.variables[payload["key"]] = payload["value"]
        return 200, {k: {"value": v, "description": None} for k, v in space.variables.items()}, {}

    # -- auth + lookup --------------------------------------------------------------------------------------------

    def _require_write(self, namespace: str) -> str:
        user = self.fake._user(self.headers)
        if user is None:
            raise _Reply(401, {"error": "Invalid credentials in Authorization header"},
                         {"X-Error-Message": "Invalid credentials in Authorization header"})
        name, role = user
        if role != "write" or namespace != name:
            raise _Reply(403, {"error": "You don't have the rights to write to this repo"},
                         {"X-Error-Message": "You don't have the rights to write to this repo"})
        return name

    def _find(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.fake.repos.get((repo_type, repo_id))
        user = self.fake._user(self.headers)
        if repo is None or (repo.private and (user is None or user[0] != repo_id.split("/")[0])):
            raise _Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    def _commit_at(self, repo: Repo, rev: str) -> Commit:
        commit = repo.at(rev)
        if commit is None:
            raise _Reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        return commit

    # -- endpoints ------------------------------------------------------------------------------------------------

    def _whoami(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        user = self.fake._user(self.headers)
        if user is None:
            raise _Reply(401, {"error": "Invalid credentials in Authorization header"},
                         {"X-Error-Message": "Invalid credentials in Authorization header"})
        name, role = user
        return 200, {"type": "user", "name": name, "orgs": [],
                     "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}}, {}

    def _create(self, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization")
        self._require_write(namespace)
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.fake.url}/{_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.fake.repos:
            return 409, {"error": "You already created this repo", "url": url}, {}
        if repo_type == "space" and payload.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            return 400, {"error": "sdk is required for a Space"}, {}
        repo = Repo(repo_type, repo_id, payload.get("visibility") == "private" or bool(payload.get("private")),
                    sdk=payload.get("sdk"))
        repo.commits.append(Commit(self.fake._new_sha(repo_id.encode()), "initial commit", "",
                                   {".gitattributes": Blob(GITATTRIBUTES, lfs=False)}))
        self.fake.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id}, {}

    def _validate_yaml(self, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            if match:
                yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": str(exc)}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _info(self, t: str, repo: str, rev: str | None, **_: Any) -> tuple[int, Any, dict[str, str]]:
        r = self._find(_TYPES[t], repo)
        commit = self._commit_at(r, rev or "main")
        return 200, {"id": repo, "sha": commit.sha, "private": r.private,
                     "siblings": [{"rfilename": p} for p in sorted(commit.files)]}, {}

    def _tree(self, t: str, repo: str, rev: str, sub: str | None, query: dict[str, list[str]], **_: Any) -> tuple[int, Any, dict[str, str]]:
        commit = self._commit_at(self._find(_TYPES[t], repo), rev)
        recursive = (query.get("recursive") or ["False"])[0].lower() == "true"
        base = f"{sub.strip('/')}/" if sub else ""
        entries, folders = [], set()
        for path, blob in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    folders.add(base + "/".join(parts[:i]))
            if not recursive and len(parts) > 1:
                continue
            entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer())}
            entries.append(entry)
        if sub and not entries and not folders:
            raise _Reply(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
        dirs = [{"type": "directory", "oid": git_blob_id(f.encode()), "size": 0, "path": f} for f in sorted(folders)]
        return 200, dirs + entries, {}

    def _preupload(self, t: str, repo: str, rev: str, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        self._require_write(repo.split("/")[0])
        commit = self._commit_at(self._find(_TYPES[t], repo), rev)
        out = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith((".safetensors", ".bin")) or f["size"] > self.fake.lfs_threshold
            remote = commit.files.get(f["path"])
            oid = None if remote is None else (remote.sha256 if remote.lfs else git_blob_id(remote.data))
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": out, "commitOid": commit.sha}, {}

    def _lfs_batch(self, prefix: str | None, repo: str, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        self._require_write(repo.split("/")[0])
        self._find(_prefix_type(prefix), repo)
        objects = []
        for obj in json.loads(body)["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.fake.lfs_objects:
                item["actions"] = {"upload": {"href": f"{self.fake.url}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_put(self, oid: str, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise _Reply(400, {"error": "sha256 mismatch"})
        self.fake.lfs_objects[oid] = body
        return 200, b"", {}

    def _commit(self, t: str, repo: str, rev: str, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        self._require_write(repo.split("/")[0])
        r = self._find(_TYPES[t], repo)
        parent = self._commit_at(r, rev)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != r.head.sha:
            raise _Reply(412, {"error": "A commit has happened since. Please refresh and try again."})
        files = dict(parent.files)
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = self.fake.lfs_objects.get(value["oid"])
                if data is None:
                    raise _Reply(422, {"error": f"LFS object {value['oid']} was not uploaded"})
                files[value["path"]] = Blob(data, lfs=True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        sha = self.fake._new_sha(body)
        r.commits.append(Commit(sha, header["summary"], header.get("description", ""), files))
        return 200, {"success": True, "commitOid": sha, "commitUrl": f"{self.fake.url}/{_PREFIX[r.repo_type]}{repo}/commit/{sha}",
                     "pullRequestUrl": None}, {}

    def _resolve(self, method: str, prefix: str | None, repo: str, rev: str, file: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        repo_type = _prefix_type(prefix)
        r = self._find(repo_type, repo)
        commit = self._commit_at(r, rev)
        blob = commit.files.get(file)
        if blob is None:
            raise _Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.sha})
        data = blob.data
        if (repo_type, repo, file) in self.fake.tampered and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        headers = {"X-Repo-Commit": commit.sha, "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers.update({"ETag": f'"{blob.oid}"', "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_id(blob.data)}"'
        return 200, data, headers
