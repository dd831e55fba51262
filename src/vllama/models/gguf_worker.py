"""Convert one GGUF file into a Hugging Face safetensors folder that vLLM can serve.

Why a standalone script: the conversion needs torch, transformers, gguf and
accelerate, which live only in the engine environment; vllama itself is not
installed there. The gateway runs it as ``ENGINE_PYTHON gguf_worker.py --gguf FILE
--out DIR``, so this file imports nothing but the standard library at module level
and torch/transformers inside ``convert``.

Why this route: vLLM cannot serve a GGUF on CPU, but transformers can read one
(dequantized) and write bf16 safetensors plus the tokenizer and its chat template.

Protocol: one JSON object per stdout line, ``{"stage": ...}``: ``reading``,
``converting``, ``saving``, ``warning`` (with ``message``), then ``done`` (with
``size`` in bytes) or ``error`` (with ``message``, exit status 1). Library chatter
goes to stderr. The folder is built beside ``--out`` and renamed into place at the
end, so ``--out`` either does not exist or is complete. Never touches the network.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

#: dtypes a dequantized folder may hold (bf16, plus the few modules kept in f32).
FLOATS = {"BF16", "F32"}
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def emit(stage: str, **fields: Any) -> None:
    """Write one progress line; flushed at once so the gateway can relay it live."""
    print(json.dumps({"stage": stage, **fields}), flush=True)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def has_chat_template(folder: Path) -> bool:
    """True when the saved tokenizer carries a chat template, in either place
    transformers may put it (a ``chat_template.jinja`` file or the tokenizer config)."""
    if (folder / "chat_template.jinja").is_file():
        return True
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        return bool(json.loads(config_path.read_text(encoding="utf-8")).get("chat_template"))
    return False


def check_weights(folder: Path) -> None:
    """Fail if any saved tensor is not a plain float: packed quantized blocks left in
    the folder would load in transformers but produce garbage (or fail) in vLLM."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RuntimeError("transformers wrote no safetensors file")
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        odd = {v["dtype"] for k, v in header.items() if k != "__metadata__"} - FLOATS
        if odd:
            raise RuntimeError(f"{file.name} holds non-float tensors: {sorted(odd)}")


def convert(gguf: Path, out: Path) -> None:
    """Read ``gguf`` with transformers and write an HF folder into ``out`` (fresh dir)."""
    emit("reading", gguf=str(gguf), size=gguf.stat().st_size)  # before the slow imports
    # Imported by name so that type checking the gateway does not depend on whether
    # torch and transformers happen to be installed beside it (they run here, in
    # the engine's python).
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    AutoModelForCausalLM = transformers.AutoModelForCausalLM
    AutoTokenizer = transformers.AutoTokenizer
    GenerationConfig = transformers.GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, low_cpu_mem_usage=True
    )
    emit("converting")
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        # A leftover quantization entry would make vLLM look for quantized kernels
        # for weights that are already plain bf16: rebuild the model without it.
        del config.quantization_config
        state = model.state_dict()
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.load_state_dict(state, strict=True)  # a missing tensor must fail, not stay random
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    if model.config.eos_token_id is None and tokenizer.eos_token_id is not None:
        model.config.eos_token_id = tokenizer.eos_token_id

    emit("saving")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not has_chat_template(out):
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, str) and template:
            (out / "chat_template.jinja").write_text(template, encoding="utf-8")
        else:
            emit("warning", message="the GGUF has no chat template; only raw completion works")
    if not (out / "generation_config.json").is_file():
        # vLLM reads default stop tokens from here; without it the engine may not
        # stop at the chat template's end-of-turn token.
        GenerationConfig.from_model_config(model.config).save_pretrained(out)
    check_weights(out)


def main(argv: list[str] | None = None) -> int:
    os.environ.update(OFFLINE_ENV)  # before transformers is imported: no network, ever
    parser = argparse.ArgumentParser(description="Convert a GGUF file to an HF folder.")
    parser.add_argument("--gguf", type=Path, required=True, help="GGUF file to read")
    parser.add_argument("--out", type=Path, required=True, help="folder to create")
    args = parser.parse_args(argv)
    gguf: Path = args.gguf.resolve()
    out: Path = args.out.absolute()
    try:
        if not gguf.is_file():
            raise FileNotFoundError(f"GGUF file {gguf} not found")
        if out.exists():
            raise FileExistsError(f"output folder {out} already exists")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the model from other users
        try:
            convert(gguf, tmp)
            size = folder_size(tmp)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except Exception as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    emit("done", size=size, path=str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
