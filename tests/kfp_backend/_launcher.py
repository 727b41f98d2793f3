"""The launcher: runs INSIDE a task's own mount namespace (``unshare --mount``).

``python -m tests.kfp_backend._launcher`` reads the pod (JSON) on stdin and writes what it
publishes to MLMD (JSON) on stdout. It follows backend/src/v2/component/launcher_v2.go:

1. give the pod its own filesystem: tmpfs over the scratch and secret paths, a tmpfs per
   volume mount (Secret/ConfigMap/token files written into it), then the rest of the host
   filesystem read-only (the harness's stand-in for the image's own root);
2. ``downloadArtifacts``: every input artifact from the object store to its local path
   (``/s3/<bucket>/<key>``);
3. ``prepareOutputFolders``; ``addDefaultParams`` (component defaults, for placeholder
   substitution only); ``compileCmdAndArgs`` (``{{$}}`` and the input/output
   placeholders);
4. run the user command with exactly the pod's env;
5. ``getExecutorOutputFile`` (the outputs.outputFile), ``collectOutputParameters``,
   ``uploadOutputArtifacts`` (merging the executor output's uri/metadata into each output
   artifact) and ``RecordArtifact`` (metadata as MLMD stores it).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.kfp_backend import _values as V
from tests.kfp_backend._driver import SHIM_DIR, local_path_for_uri

#: tmpfs in every task: the argocompiler's scratch volumes (/gcs, /s3, /minio, /.local,
#: /.cache, /.config; argocompiler/container.go), the launcher volume, and what a pod never
#: shares with another pod (/tmp, /dev/shm, /var/run/secrets, /etc/mlseal)
PRIVATE_ROOTS = ("/tmp", "/dev/shm", "/s3", "/minio", "/gcs", "/var/run/secrets", "/etc/mlseal", "/kfp-launcher",
                 "/.local", "/.cache", "/.config")

_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 32, 4096, 16384
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _image_dirs(pythonpath: str) -> list[str]:
    """Directories of "the image" (the interpreter, its packages, the code under test)
    that lie under a private root, e.g. a virtualenv in /tmp: each top-most one."""
    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, os.path.realpath(sys.executable),
                  *sys.path, *pythonpath.split(os.pathsep)]
    keep: set[str] = set()
    for c in candidates:
        if not c or not os.path.exists(c):
            continue
        real = os.path.realpath(c)
        for root in PRIVATE_ROOTS:
            if real.startswith(root + "/"):
                keep.add(root + "/" + real[len(root) + 1:].split("/", 1)[0])
    return sorted(keep)


def isolate(volume_mounts: list[str], files: dict[str, list[Any]], home: str, workdir: str,
            pythonpath: str = "") -> None:
    if os.environ.get("KFP_HARNESS_NAMESPACED") != "1":
        raise SystemExit("refusing to mount outside a private mount namespace")
    # Held open across the tmpfs mounts, then bound back read-only at the same paths.
    image_dirs = {d: os.open(d, os.O_PATH) for d in _image_dirs(pythonpath)}
    for root in PRIVATE_ROOTS:
        os.makedirs(root, exist_ok=True)
        _mount("tmpfs", root, "tmpfs", 0, "mode=1777" if root in ("/tmp", "/dev/shm") else "mode=0755")
    for d, fd in image_dirs.items():
        os.makedirs(d, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", d, None, _MS_BIND | _MS_REC, None)
        _mount(None, d, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
        os.close(fd)
    for mount in sorted(set(volume_mounts), key=lambda p: p.count("/")):
        os.makedirs(mount, exist_ok=True)
        _mount("tmpfs", mount, "tmpfs", 0, "mode=0755")
    for path, (content, mode) in files.items():
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        p.chmod(mode)
    shim = Path(SHIM_DIR)
    shim.mkdir(parents=True, exist_ok=True)
    for name in ("python3", "python"):
        (shim / name).symlink_to(sys.executable)
    for d in (home, workdir):
        os.makedirs(d, exist_ok=True)
    _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)


class Launcher:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.executor_input: dict[str, Any] = spec["executor_input"]
        self.component: dict[str, Any] = spec["component"]
        self.logs: list[str] = []
        store = spec["object_store"]
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=store["endpoint"], aws_access_key_id=store["access_key"],
                               aws_secret_access_key=store["secret_key"], region_name=store["region"])
        self.root_bucket = spec["pipeline_root"][len("s3://"):].split("/", 1)[0]
        self.session_info = json.dumps({"Provider": "s3", "Params": {
            "endpoint": store["endpoint"], "region": store["region"], "fromEnv": "false",
            "secretName": "mlpipeline-minio-artifact", "accessKeyKey": "accesskey", "secretKeyKey": "secretkey"}},
            separators=(",", ":"))

    def log(self, line: str) -> None:
        self.logs.append(f"launcher: {line}\n")

    # -- object store ---------------------------------------------------------------------------

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        if not uri.startswith("s3://"):
            raise V.BackendError(f"the harness object store serves s3:// only, got {uri}")
        bucket, _, key = uri[len("s3://"):].partition("/")
        return bucket, key

    def download(self) -> None:
        for name, alist in self.executor_input.get("inputs", {}).get("artifacts", {}).items():
            for art in alist.get("artifacts", []):
                try:
                    local = art.get("customPath") or local_path_for_uri(art["uri"])
                except V.BackendError:
                    self.log(f"Input Artifact {name!r} does not have a recognized storage URI {art['uri']!r}. "
                             "Skipping downloading to local path.")
                    continue
                bucket, key = self._split(art["uri"])
                listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
                keys = [o["Key"] for o in listed]
                if key in keys:
                    Path(local).parent.mkdir(parents=True, exist_ok=True)
                    self.s3.download_file(bucket, key, local)
                elif any(k.startswith(key.rstrip("/") + "/") for k in keys):
                    for k in keys:
                        if k.startswith(key.rstrip("/") + "/"):
                            target = Path(local) / k[len(key.rstrip("/")) + 1:]
                            target.parent.mkdir(parents=True, exist_ok=True)
                            self.s3.download_file(bucket, k, str(target))
                else:
                    raise V.BackendError(f"failed to download input artifact {name!r} from remote storage URI "
                                         f"{art['uri']!r}: blob (key {key!r}) not found")

    def upload(self, local: str, uri: str) -> None:
        bucket, key = self._split(uri)
        if bucket != self.root_bucket:
            raise V.BackendError(f"failed to upload output artifact to {uri}: URI does not have the pipeline "
                                 f"root's bucket {self.root_bucket}")
        p = Path(local)
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                self.s3.upload_file(str(f), bucket, f"{key.rstrip('/')}/{f.relative_to(p).as_posix()}")
        elif p.is_file():
            self.s3.upload_file(str(p), bucket, key)
        else:
            self.log(f"Local filepath {local!r} does not exist")

    # -- placeholders ---------------------------------------------------------------------------

    def with_defaults(self) -> dict[str, Any]:
        ei: dict[str, Any] = json.loads(json.dumps(self.executor_input))
        params = ei.setdefault("inputs", {}).setdefault("parameterValues", {})
        for name, spec in self.component.get("inputDefinitions", {}).get("parameters", {}).items():
            if "defaultValue" in spec and name not in params:
                params[name] = V.normalize(spec["defaultValue"])
        if not params:
            del ei["inputs"]["parameterValues"]
        return ei

    @staticmethod
    def placeholders(ei: dict[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, alist in ei.get("inputs", {}).get("artifacts", {}).items():
            arts = alist.get("artifacts", [])
            if not arts:
                continue
            out[f"{{{{$.inputs.artifacts['{name}'].uri}}}}"] = arts[0]["uri"]
            with contextlib.suppress(V.BackendError):  # no recognized storage URI: no path placeholder
                out[f"{{{{$.inputs.artifacts['{name}'].path}}}}"] = arts[0].get("customPath") or local_path_for_uri(
                    arts[0]["uri"])
        for name, alist in ei.get("outputs", {}).get("artifacts", {}).items():
            arts = alist.get("artifacts", [])
            if not arts:
                continue
            out[f"{{{{$.outputs.artifacts['{name}'].uri}}}}"] = arts[0]["uri"]
            out[f"{{{{$.outputs.artifacts['{name}'].path}}}}"] = arts[0].get("customPath") or local_path_for_uri(
                arts[0]["uri"])
        for name, value in ei.get("inputs", {}).get("parameterValues", {}).items():
            out[f"{{{{$.inputs.parameters['{name}']}}}}"] = V.placeholder_text(name, value)
        for name, p in ei.get("outputs", {}).get("parameters", {}).items():
            out[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = p["outputFile"]
        return out

    def qualify_executor_logs(self) -> None:
        """qualifyExecutorLogsForRetry: no retry strategy, so no KFP_RETRY_INDEX and no
        ``(N)`` in the Argo node name: index 0."""
        arts = self.executor_input.get("outputs", {}).get("artifacts", {}).get("executor-logs", {}).get("artifacts")
        if arts and len(arts) == 1 and not arts[0]["uri"].endswith("-0"):
            arts[0]["uri"] += "-0"

    def compile_command(self) -> list[str]:
        """compileCmdAndArgs: the command (first word) gets ``{{$}}`` only, as in Go."""
        ei = self.with_defaults()
        ph = self.placeholders(ei)
        ei_json = V.to_protojson(ei)
        cmd, *args = self.spec["command"]
        compiled = [cmd.replace("{{$}}", ei_json)]
        for arg in args:
            arg = arg.replace("{{$}}", ei_json)
            for key in sorted(ph):
                arg = arg.replace(key, ph[key])
            compiled.append(arg)
        return compiled

    # -- outputs --------------------------------------------------------------------------------

    def executor_output(self) -> dict[str, Any]:
        path = Path(self.executor_input["outputs"]["outputFile"])
        if not path.exists():
            self.log(f"output metadata file does not exist in {path}")
            return {"parameterValues": {}, "artifacts": {}}
        try:
            raw = json.loads(path.read_text())
            out: dict[str, Any] = {"parameterValues": {}, "artifacts": {}}
            for key, value in raw.items():
                if key in ("parameterValues", "parameter_values"):
                    out["parameterValues"] = V.normalize(value)
                elif key == "artifacts":
                    for alist in value.values():
                        for art in alist.get("artifacts", []):
                            bad = set(art) - {"name", "type", "uri", "properties", "customProperties", "metadata",
                                              "customPath", "custom_properties", "custom_path"}
                            if bad:
                                raise ValueError(f"unknown field {sorted(bad)[0]!r}")
                    out["artifacts"] = value
                elif key == "parameters":
                    out["parameters"] = value
                else:
                    raise ValueError(f"unknown field {key!r}")
        except ValueError as exc:
            raise V.BackendError(f"failed to unmarshall ExecutorOutput in file {str(path)!r}: {exc}") from None
        return out

    def collect_parameters(self, output: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = dict(output.get("parameterValues", {}))
        defs = self.component.get("outputDefinitions", {}).get("parameters", {})
        for name, p in self.executor_input.get("outputs", {}).get("parameters", {}).items():
            if name in values:
                continue  # the output metadata file has the highest priority
            ptype = defs[name]["parameterType"]
            try:
                text = Path(p["outputFile"]).read_text()
            except OSError as exc:
                raise V.BackendError(f"failed to read output parameter name={name!r} type={ptype!r} "
                                     f"path={p['outputFile']!r}: {exc}") from None
            values[name] = V.text_to_pb_value(text, ptype)
        return values

    def upload_and_record(self, output: dict[str, Any], *, succeeded: bool = True
                          ) -> dict[str, list[dict[str, Any]]]:
        recorded: dict[str, list[dict[str, Any]]] = {}
        for name, alist in self.executor_input.get("outputs", {}).get("artifacts", {}).items():
            if not succeeded and name != "executor-logs":
                continue  # a failed task registers its log only
            for art in alist.get("artifacts", []):
                art = json.loads(json.dumps(art))
                produced = output.get("artifacts", {}).get(name, {}).get("artifacts", [])
                if produced and name != "executor-logs":  # mergeRuntimeArtifacts; the log stays launcher-managed
                    src = produced[0]
                    if src.get("uri"):
                        art["uri"] = src["uri"]
                    if src.get("metadata") is not None:
                        art["metadata"] = {**(art.get("metadata") or {}), **src["metadata"]}
                    if src.get("customPath"):
                        art["customPath"] = src["customPath"]
                try:
                    local = art.get("customPath") or local_path_for_uri(art["uri"])
                except V.BackendError:
                    self.log(f"Output Artifact {name!r} does not have a recognized storage URI {art['uri']!r}. "
                             "Skipping uploading to remote storage.")
                else:
                    if name == "executor-logs" and not Path(local).exists():
                        continue  # nothing was logged: no dead link
                    self.upload(local, art["uri"])
                metadata = dict(art.get("metadata") or {})
                metadata.setdefault("display_name", name)
                metadata.setdefault("store_session_info", self.session_info)
                recorded[name] = [{"uri": art["uri"], "metadata": V.mlmd_round_trip(metadata)}]
        return recorded

    def log_writer(self) -> Any:
        """getLogWriter: the executor-logs file, created before the command starts (as
        ``os.Create`` does) and written while it runs; None without the artifact."""
        arts = self.executor_input.get("outputs", {}).get("artifacts", {}).get("executor-logs", {}).get("artifacts")
        if not arts or len(arts) != 1:
            return None
        try:
            return open(arts[0].get("customPath") or local_path_for_uri(arts[0]["uri"]), "wb")
        except (V.BackendError, OSError):
            return None

    def execute(self, command: list[str]) -> tuple[int, bytes]:
        """Run the user command, its output to the pod log and (teed, live) the log file."""
        import threading

        log_file = self.log_writer()
        proc = subprocess.Popen(command, env=self.spec["env"], cwd=self.spec["workdir"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = threading.Timer(self.spec["timeout"], proc.kill)
        timer.start()
        chunks: list[bytes] = []
        try:
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), 65536):
                chunks.append(chunk)
                if log_file is not None:
                    log_file.write(chunk)
                    log_file.flush()
            code = proc.wait()
        finally:
            timer.cancel()
            if log_file is not None:
                log_file.close()
        return code, b"".join(chunks)

    # -- the whole task -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {"state": "FAILED", "command": None, "executor_output": None,
                                  "output_parameters": {}, "output_artifacts": {}, "error": None}
        try:
            self.download()
            for p in self.executor_input.get("outputs", {}).get("parameters", {}).values():
                Path(p["outputFile"]).parent.mkdir(parents=True, exist_ok=True)
            for alist in self.executor_input.get("outputs", {}).get("artifacts", {}).values():
                for art in alist.get("artifacts", []):
                    Path(art.get("customPath") or local_path_for_uri(art["uri"])).parent.mkdir(parents=True,
                                                                                              exist_ok=True)
            self.qualify_executor_logs()
            command = self.compile_command()
            result["command"] = command
            code, output_bytes = self.execute(command)
            self.logs.append(output_bytes.decode(errors="replace"))
            if code != 0:
                with contextlib.suppress(V.BackendError, OSError):
                    result["output_artifacts"] = self.upload_and_record({}, succeeded=False)
                raise V.BackendError(f"failed to execute component: exit status {code}")
            output = self.executor_output()
            result["executor_output"] = output
            result["output_parameters"] = self.collect_parameters(output)
            result["output_artifacts"] = self.upload_and_record(output)
            result["state"] = "SUCCEEDED"
        except (V.BackendError, OSError, subprocess.SubprocessError) as exc:
            result["error"] = str(exc)
            self.log(f"failed to execute component: {exc}")
        result["logs"] = "".join(self.logs)
        return result


def main() -> None:
    spec = json.loads(sys.stdin.read())
    isolate(spec["volume_mounts"], spec["files"], spec["home"], spec["workdir"], spec["env"].get("PYTHONPATH", ""))
    print(json.dumps(Launcher(spec).run()))


if __name__ == "__main__":
    main()
