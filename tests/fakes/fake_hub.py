"""A stand-in Hugging Face Hub: the few HTTP endpoints ``huggingface_hub`` uses to
download a model, serving repos made from local folders, on loopback.

    python tests/fakes/fake_hub.py --port P --repo org/name=DIR [--gated org/name]
        [--token T] [--rate BYTES_PER_S] [--inflate org/name]

Shapes follow huggingface.co as ``huggingface_hub`` 2.4 reads them:

- ``GET /api/models/{repo}[/revision/{rev}]`` -> ``{"id", "sha", "gated", "siblings":
  [{"rfilename", "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}``
  (sizes and blob ids only with ``?blobs=true``);
- ``HEAD|GET /{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit``, ``ETag`` (the LFS
  sha256 for weights, the git blob id otherwise), ``X-Linked-Size``/``X-Linked-Etag``
  for LFS files, and ``Range: bytes=N-`` answered 206 with ``Content-Range``;
- errors as the Hub sends them: ``401`` (anonymous) or ``404`` (with a token) +
  ``X-Error-Code: RepoNotFound`` for an unknown repo; ``401`` (no token) or ``403``
  (a token without access) + ``GatedRepo`` for a gated repo; ``404`` +
  ``RevisionNotFound`` / ``EntryNotFound``.

Test control (not the Hub's): ``GET /_fake/log`` lists the requests served,
``POST /_fake/faults`` sets ``{"cut": {"file": bytes}}`` (send that many bytes of the
file once, then drop the connection), ``{"fail": ["file", ...]}`` (answer 500) and
``{"rate": bytes_per_second}``.
``--inflate`` makes ``model_info`` claim a huge weight file (the disk-space check).
Only aiohttp and the stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
CHUNK = 64 * 1024
HUGE = 1 << 60


@dataclass
class RepoFile:
    path: str
    data: bytes
    blob_id: str
    sha256: str

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Repo:
    repo_id: str
    files: dict[str, RepoFile]
    sha: str
    gated: bool = False
    inflate: bool = False


@dataclass
class Hub:
    repos: dict[str, Repo]
    token: str | None
    rate: float | None
    log: list[dict[str, Any]] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)


def load_repo(repo_id: str, folder: Path) -> Repo:
    files: dict[str, RepoFile] = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        rel = file.relative_to(folder).as_posix()
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324
        files[rel] = RepoFile(rel, data, blob_id, hashlib.sha256(data).hexdigest())
    sha = hashlib.sha1(  # noqa: S324
        "".join(f"{f.path}{f.blob_id}" for f in files.values()).encode()
    ).hexdigest()
    return Repo(repo_id, files, sha)


def hub_error(status: int, code: str, message: str, repo: Repo | None = None) -> web.Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if repo is not None:
        headers["X-Repo-Commit"] = repo.sha
    return web.json_response({"error": message}, status=status, headers=headers)


def find_repo(hub: Hub, request: web.Request) -> Repo | web.Response:
    repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
    repo = hub.repos.get(repo_id.lower())
    if repo is None:  # the Hub says 401 to anonymous callers, 404 to signed-in ones
        status = 404 if request.headers.get("Authorization") else 401
        return hub_error(status, "RepoNotFound", "Repository not found")
    revision = request.match_info.get("revision", "main")
    if revision not in ("main", repo.sha):
        return hub_error(404, "RevisionNotFound", "Invalid rev id: " + revision, repo)
    return repo


def authorized(hub: Hub, request: web.Request) -> bool:
    return request.headers.get("Authorization", "") == f"Bearer {hub.token}"


async def model_info(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    hub.log.append({"method": "GET", "path": request.path, "kind": "info"})
    repo = find_repo(hub, request)
    if isinstance(repo, web.Response):
        return repo
    blobs = request.query.get("blobs") == "True" or request.query.get("blobs") == "true"
    siblings = []
    for f in repo.files.values():
        entry: dict[str, Any] = {"rfilename": f.path}
        if blobs:
            size = HUGE if repo.inflate and f.lfs else len(f.data)
            entry.update(size=size, blobId=f.blob_id)
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": size, "pointerSize": 134}
        siblings.append(entry)
    return web.json_response(
        {
            "_id": repo.sha[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
    )


def _range_start(request: web.Request) -> int:
    text = request.headers.get("Range", "")
    if text.startswith("bytes=") and text.endswith("-"):
        return int(text[len("bytes=") : -1])
    return 0


async def resolve(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app["hub"]
    path = request.match_info["path"]
    start = _range_start(request)
    hub.log.append(
        {
            "method": request.method,
            "path": request.path,
            "file": path,
            "range_start": start,
            "range": request.headers.get("Range"),
        }
    )
    repo = find_repo(hub, request)
    if isinstance(repo, web.Response):
        return repo
    if repo.gated and not authorized(hub, request):
        message = f"Access to model {repo.repo_id} is restricted. You must have access to it."
        status = 403 if request.headers.get("Authorization") else 401
        return hub_error(status, "GatedRepo", message, repo)
    file = repo.files.get(path)
    if file is None:
        return hub_error(404, "EntryNotFound", f"{path} does not exist on main", repo)
    if path in hub.fail and request.method == "GET":
        return web.json_response({"error": "internal error"}, status=500)
    size = len(file.data)
    headers = {
        "X-Repo-Commit": repo.sha,
        "ETag": f'"{file.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if file.lfs:
        headers.update({"X-Linked-Size": str(size), "X-Linked-Etag": f'"{file.sha256}"'})
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Length": str(size)})
    status = 206 if start else 200
    if start:
        headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
    headers["Content-Length"] = str(size - start)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    cut_at = hub.cut.pop(path, None)
    sent = start
    while sent < size:
        piece = file.data[sent : sent + CHUNK]
        if cut_at is not None and sent + len(piece) > cut_at:
            await response.write(file.data[sent:cut_at])
            await asyncio.sleep(0.2)  # let the bytes reach the client before the cut
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(piece)
        sent += len(piece)
        if hub.rate:
            await asyncio.sleep(len(piece) / hub.rate)
    await response.write_eof()
    return response


async def fake_log(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    return web.json_response(hub.log)


async def fake_faults(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    body = await request.json()
    hub.cut.update({str(k): int(v) for k, v in (body.get("cut") or {}).items()})
    hub.fail = set(body.get("fail") or [])
    if "rate" in body:
        hub.rate = body["rate"]
    return web.json_response({"ok": True})


def make_app(hub: Hub) -> web.Application:
    app = web.Application()
    app["hub"] = hub
    app.router.add_get("/_fake/log", fake_log)
    app.router.add_post("/_fake/faults", fake_faults)
    app.router.add_get("/api/models/{org}/{name}", model_info)
    app.router.add_get("/api/models/{org}/{name}/revision/{revision}", model_info)
    app.router.add_route("HEAD", "/{org}/{name}/resolve/{revision}/{path:.+}", resolve)
    app.router.add_get("/{org}/{name}/resolve/{revision}/{path:.+}", resolve, allow_head=False)
    return app


# -- building a small model folder ----------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, list[int]], dtype: str = "BF16") -> None:
    """A valid safetensors file of zero-filled tensors (2 bytes per element)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + 2 * count],
        }
        offset += 2 * count
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        # deterministic, not compressible to nothing: a counter pattern
        block = bytes(range(256)) * 256
        left = offset
        while left:
            piece = block[: min(left, len(block))]
            handle.write(piece)
            left -= len(piece)


TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_model(folder: Path, *, hidden: int = 64, vocab: int = 4096) -> Path:
    """A small Llama-shaped HF folder (~1 MB of weights) plus files a pull must skip."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    tensors = {"model.embed_tokens.weight": [vocab, hidden]}
    for i in range(2):
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = [hidden * 2, hidden]
    tensors["model.norm.weight"] = [hidden]
    write_safetensors(folder / "model.safetensors", tensors)
    # not for vLLM: a pull must leave these on the Hub
    (folder / "README.md").write_text("# tiny\n")
    (folder / "original").mkdir(exist_ok=True)
    (folder / "original" / "consolidated.pth").write_bytes(b"\0" * 4096)
    (folder / "model.gguf").write_bytes(b"GGUF" + b"\0" * 4096)
    return folder


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--repo", action="append", default=[], metavar="ORG/NAME=DIR")
    p.add_argument("--gated", action="append", default=[], metavar="ORG/NAME")
    p.add_argument("--inflate", action="append", default=[], metavar="ORG/NAME")
    p.add_argument("--token", default=None)
    p.add_argument("--rate", type=float, default=None, help="bytes per second per download")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    repos: dict[str, Repo] = {}
    for spec in args.repo:
        repo_id, _, folder = spec.partition("=")
        repo = load_repo(repo_id, Path(folder))
        repo.gated = repo_id in args.gated
        repo.inflate = repo_id in args.inflate
        repos[repo_id.lower()] = repo
    hub = Hub(repos, args.token, args.rate)
    runner = web.AppRunner(make_app(hub))
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"fake hub on http://{args.host}:{args.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(parse_args(sys.argv[1:])))
