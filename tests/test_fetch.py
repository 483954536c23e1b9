"""Hub models: fetched once by the prepare_model rule, then read by the GPU jobs with the hub offline. The hub is
a stand-in served from this process (the endpoints huggingface_hub's snapshot_download calls), holding the tiny
BERT beside files that must not be fetched."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from conftest import REPO, tiny_config
from test_job_output import job_script

HUB_ID = "stand-in/tiny-bert"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Served beside the model but not fetched: pickled weights where safetensors exist, a card, an export folder.
EXTRA_FILES = {"pytorch_model.bin": b"pickled weights", "README.md": b"# card", "onnx/model.onnx": b"onnx"}


class StandInHub:
    """``files`` as the hub repository HUB_ID at COMMIT (its main branch): the model info, the file tree and
    each file's resolve URL (HEAD with the commit and ETag headers, GET with the bytes). ``requests``: every
    (method, path) received."""

    def __init__(self, files: dict[str, bytes]):
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, body: bytes, headers: dict, status: int = 200):
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                hub.requests.append((self.command, path))
                api = f"/api/models/{HUB_ID}"
                resolve = f"/{HUB_ID}/resolve/{COMMIT}/"
                if path in (api, f"{api}/revision/main", f"{api}/revision/{COMMIT}"):
                    info = {"id": HUB_ID, "sha": COMMIT, "siblings": [{"rfilename": name} for name in files]}
                    self.reply(json.dumps(info).encode(), {"Content-Type": "application/json"})
                elif path == f"{api}/tree/{COMMIT}":
                    tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                            for name, data in files.items()]
                    self.reply(json.dumps(tree).encode(), {"Content-Type": "application/json"})
                elif path.startswith(resolve) and path[len(resolve):] in files:
                    data = files[path[len(resolve):]]
                    self.reply(data, {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": COMMIT})
                else:
                    self.reply(b'{"error": "not found"}', {"X-Error-Code": "RepoNotFound"}, 404)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def closed_endpoint() -> str:
    """An address nothing listens on: a hub that cannot be reached."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def hub_config(path: Path, model_dir: Path) -> dict:
    """The tiny config with its model as a hub id (at the main branch, unpinned) written to ``path``."""
    config = tiny_config(model_dir, tasks=["rte"])
    config["model_catalog"]["tiny"]["source"] = HUB_ID
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def test_a_hub_model_is_fetched_once_and_read_offline(tmp_path, tiny_model_dir):
    """`snakemake prepare_models` downloads the model's config, tokenizer and safetensors (nothing else) into
    results/models/tiny, each file once, and says which commit to pin; a GPU job then loads it with the hub
    offline and unreachable, the weights being the served ones."""
    files = {path.relative_to(tiny_model_dir).as_posix(): path.read_bytes()
             for path in sorted(tiny_model_dir.rglob("*")) if path.is_file()}
    hub_config(tmp_path / "config.yaml", tiny_model_dir)
    env = {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with StandInHub({**files, **EXTRA_FILES}) as hub:
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
             "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "prepare_models"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
            env={**os.environ, **env, "HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    assert f"pin it to make this run reproducible: model_catalog.tiny.revision: {COMMIT}" in result.stderr
    prepared = tmp_path / "results" / "models" / "tiny"
    # Beside them: huggingface_hub's .cache/ of the download, Snakemake's .snakemake_timestamp.
    fetched = {path.relative_to(prepared).as_posix() for path in prepared.rglob("*")
               if path.is_file() and not path.relative_to(prepared).parts[0].startswith(".")}
    assert fetched == set(files) and "model.safetensors" in fetched
    downloads = [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]
    assert sorted(downloads) == sorted(f"/{HUB_ID}/resolve/{COMMIT}/{name}" for name in files)
    assert f"at commit {COMMIT} fetched to" in (tmp_path / "logs" / "models" / "tiny.log").read_text()

    # A GPU job (bomf.runtime.job with the gpu resource), the hub gone: it reads the fetched directory offline.
    log = tmp_path / "finetune.log"
    body = f"""
        import json, torch, yaml
        from huggingface_hub import constants
        from transformers import AutoModel
        from bomf import pipeline
        from bomf.config import validate_config
        config = validate_config(yaml.safe_load(open({str(tmp_path / 'config.yaml')!r})))
        run = pipeline.Run(config, "rte", "tiny", 0)
        state = run.load_model().state_dict()
        served = AutoModel.from_pretrained({str(tiny_model_dir)!r}).state_dict()
        print(json.dumps({{"offline": constants.HF_HUB_OFFLINE, "source": run.model_spec["source"],
                          "tokens": len(run.tokenizer("a b")["input_ids"]),
                          "same": all(torch.equal(value, state["bert." + key]) for key, value in served.items())}}))
    """
    job = subprocess.run([sys.executable, "-c", job_script(log, body, gpu=1)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, env={**os.environ, **env,
                                                         "HF_ENDPOINT": closed_endpoint()})
    assert job.returncode == 0, job.stderr + log.read_text()
    record = json.loads(next(line for line in log.read_text().splitlines() if line.startswith('{"offline"')))
    assert record == {"offline": True, "source": "results/models/tiny", "tokens": 4, "same": True}


def test_a_hub_that_cannot_be_reached_fails_with_one_line_naming_the_model(tmp_path, tiny_model_dir):
    """The prepare_model job where the hub cannot be reached: one line on the terminal that names the model and
    how to give it instead (a local directory as its source); the traceback in the log."""
    config = hub_config(tmp_path / "config.yaml", tiny_model_dir)
    log = tmp_path / "prepare_model.log"
    body = f"""
        from bomf import pipeline
        pipeline.prepare_model(config={config!r}, model="tiny", out_dir={str(tmp_path / 'tiny')!r})
    """
    result = subprocess.run([sys.executable, "-c", job_script(log, body)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "HF_ENDPOINT": closed_endpoint(),
                                             "HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 1
    assert result.stderr.startswith(f"bomf error: model 'tiny': hub model '{HUB_ID}' could not be fetched (")
    assert f"give its directory as model_catalog.tiny.source (traceback: {log})\n" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" in log.read_text()
