"""`sealed_component`: a user's own KFP Python function as a sealed KFP component.

KFP's lightweight components ship the function's *source text* into the task (the
executor loads it from a file and calls it by name), so sealing cannot be a runtime
wrapper around the function object. Instead the decorator writes the source of a new
function with the same name and signature plus three run-context parameters, whose body
holds the user's function unchanged (nested) and calls `mlseal.kfp._task.run` around
it; `kfp.dsl.component` then compiles that function like any other.

The run context (KFP run id, pipeline name, task name) reaches the task as explicit
arguments: the KFP v2 driver resolves ``{{$.pipeline_job_uuid}}`` and friends only in
arguments a task passes (``runtimeValue.constant``), never in a parameter's default, so
the three parameters are required and every call passes the placeholders.
"""

# (no `from __future__ import annotations`: KFP reads the real annotation objects)

import ast
import copy
import hashlib
import inspect
import linecache
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, overload

from kfp import dsl
from kfp.dsl.python_component import PythonComponent
from kfp.dsl.types import type_annotations

from mlseal.errors import ConfigurationError
from mlseal.ledger.record import RecordDraft, RecordFormatError
from mlseal.secrets.refs import check_parameter

__all__ = ["RUN_CONTEXT", "SealedComponent", "sealed_component"]

#: the run-context parameters every sealed component takes, and what each call passes
RUN_CONTEXT: Mapping[str, str] = {
    "mlseal_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    "mlseal_pipeline": dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    "mlseal_task": dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
}

_BODY = "_mlseal_step"


class SealedComponent(PythonComponent):  # type: ignore[misc]  # kfp ships no type information
    """A KFP component whose task runs as a sealed stage.

    Calling it in a pipeline passes the run context explicitly (so the backend resolves
    it) and, unless the component was made with ``caching=True``, turns KFP caching off
    for the task: a cache hit would skip the container, and with it the stage's record
    for this run.
    """

    def __init__(self, component: PythonComponent, *, stage: str, step_name: str, caching: bool) -> None:
        super().__init__(component_spec=component.component_spec, python_func=component.python_func)
        self.stage = stage
        self.step_name = step_name
        self.caching = caching

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for k, v in RUN_CONTEXT.items():
            kwargs.setdefault(k, v)
        for k, v in kwargs.items():  # a constant argument is compiled into the pipeline: public
            if k not in RUN_CONTEXT and _is_constant(v):
                check_parameter(k, v, where=f"{self.step_name}({k}=…)")
        task = super().__call__(*args, **kwargs)
        task.mlseal_stage = self.stage  # for mlseal.kfp.wire
        if not self.caching:
            task.set_caching_options(False)
        return task


def _is_constant(value: Any) -> bool:
    """A literal argument (not a pipeline channel or task output resolved at run time)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    if isinstance(value, list | tuple):
        return all(_is_constant(v) for v in value)
    if isinstance(value, dict):
        return all(_is_constant(v) for v in value.values())
    return False


def _task_module_names() -> dict[str, Any]:
    import typing

    import kfp.dsl

    names = {n: getattr(typing, n) for n in typing.__all__}
    names.update({n: getattr(kfp.dsl, n) for n in getattr(kfp.dsl, "__all__", ()) if hasattr(kfp.dsl, n)})
    return names


def _source_def(func: Callable[..., Any]) -> tuple[str, ast.FunctionDef]:
    """The function's own source (dedented, decorators dropped) and its parsed `def`."""
    try:
        text = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError) as exc:
        raise ConfigurationError(f"sealed_component: cannot read the source of {func!r}: {exc}") from None
    tree = ast.parse(text)
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef):
        raise ConfigurationError(f"sealed_component: {func.__qualname__} must be a plain `def` function")
    node.decorator_list = []
    return ast.unparse(node), node


def _artifact_roles(func: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """(input artifact names, output artifact names) from the KFP annotations."""
    inputs: list[str] = []
    outputs: list[str] = []
    try:  # string annotations (`from __future__ import annotations`) are resolved here
        params = inspect.signature(func, eval_str=True).parameters
    except NameError as exc:
        raise ConfigurationError(
            f"sealed_component: {func.__qualname__}: an annotation does not resolve: {exc}"
        ) from None
    for name, p in params.items():
        if p.default is not p.empty and _is_constant(p.default):  # defaults are compiled into the spec
            check_parameter(name, p.default, where=f"sealed_component {func.__qualname__}({name}=…)")
        if name in RUN_CONTEXT:
            raise ConfigurationError(f"sealed_component: {func.__qualname__} may not define parameter {name!r}")
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigurationError(f"sealed_component: {func.__qualname__} may not take *args or **kwargs")
        ann = p.annotation
        if isinstance(ann, type_annotations.InputPath | type_annotations.OutputPath):
            raise ConfigurationError(
                f"sealed_component: {func.__qualname__}({name}) uses InputPath/OutputPath, which carry no KFP "
                f"metadata for the digest and signature; use Input[...] / Output[...] artifacts"
            )
        if type_annotations.is_artifact_wrapped_in_Input(ann):
            inputs.append(name)
        elif type_annotations.is_artifact_wrapped_in_Output(ann):
            outputs.append(name)
    return inputs, outputs


def _wrapper_source(func: Callable[..., Any], spec: Mapping[str, Any], node: ast.FunctionDef) -> str:
    inner = copy.deepcopy(node)
    inner.name = _BODY
    outer_args = copy.deepcopy(node.args)
    for k in RUN_CONTEXT:
        outer_args.kwonlyargs.append(ast.arg(arg=k, annotation=ast.Name(id="str", ctx=ast.Load())))
        outer_args.kw_defaults.append(None)
    names = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
    call = ast.parse(
        "from mlseal.kfp import _task\n"
        f"return _task.run({_BODY}, {dict(spec)!r}, {{{', '.join(f'{n!r}: {n}' for n in names)}}}, "
        + ", ".join(RUN_CONTEXT)
        + ")"
    ).body
    doc = ast.get_docstring(node)
    body: list[ast.stmt] = [ast.Expr(ast.Constant(doc))] if doc else []
    body += [inner, *call]
    outer = ast.FunctionDef(
        name=node.name, args=outer_args, body=body, decorator_list=[], returns=copy.deepcopy(node.returns),
        type_comment=None,
    )
    return ast.unparse(ast.fix_missing_locations(ast.Module(body=[outer], type_ignores=[]))) + "\n"


@overload
def sealed_component(
    func: Callable[..., Any],
    *,
    stage: str,
    name: str | None = None,
    media_types: Mapping[str, str] | None = None,
    caching: bool = False,
    base_image: str | None = None,
    packages_to_install: list[str] | None = None,
    install_kfp_package: bool = False,
    **component_kwargs: Any,
) -> SealedComponent: ...


@overload
def sealed_component(
    func: None = None,
    *,
    stage: str,
    name: str | None = None,
    media_types: Mapping[str, str] | None = None,
    caching: bool = False,
    base_image: str | None = None,
    packages_to_install: list[str] | None = None,
    install_kfp_package: bool = False,
    **component_kwargs: Any,
) -> Callable[[Callable[..., Any]], SealedComponent]: ...


def sealed_component(
    func: Callable[..., Any] | None = None,
    *,
    stage: str,
    name: str | None = None,
    media_types: Mapping[str, str] | None = None,
    caching: bool = False,
    base_image: str | None = None,
    packages_to_install: list[str] | None = None,
    install_kfp_package: bool = False,
    **component_kwargs: Any,
) -> SealedComponent | Callable[[Callable[..., Any]], SealedComponent]:
    """Make a KFP component of a Python function with `Input[...]` / `Output[...]` artifacts,
    sealed as a stage of kind `stage`.

        @sealed_component(stage="train")
        def fit(data: Input[Dataset], model: Output[Model], epochs: int = 5):
            rows = open(data.path).read()           # verified before the body ran
            open(model.path, "w").write(train(rows, epochs))

    In the task: inputs are verified from their artifact metadata (digest, OMS bundle)
    against the ledger before the body runs; each output the body writes at its
    artifact path is digested, signed and described in its metadata; one record is
    appended (a failing body appends a ``failed`` record and leaves no output). Plain
    parameters are recorded as the record's params (secret-like names must be
    references: ``*_path`` for a Vault KV path, ``*_name`` for a Transit key). Inside the
    body, `mlseal.kfp.current_stage()` gives secrets, data keys and metrics.

    `media_types` maps output names to the media type recorded for them. The image
    (default `mlseal.components.IMAGE`) must contain mlseal. KFP caching is off for
    sealed tasks unless ``caching=True`` (see docs/kubeflow.md).
    """

    def make(fn: Callable[..., Any]) -> SealedComponent:
        step_name = name or fn.__name__
        try:
            RecordDraft(stage=stage)
        except RecordFormatError as exc:
            raise ConfigurationError(f"sealed_component({fn.__qualname__}): {exc}") from None
        text, node = _source_def(fn)
        inputs, outputs = _artifact_roles(fn)
        unknown = sorted(set(media_types or {}) - set(outputs))
        if unknown:
            raise ConfigurationError(f"sealed_component({fn.__qualname__}): media_types names no output {unknown}")
        spec = {
            "stage": stage,
            "name": step_name,
            "source_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "inputs": inputs,
            "outputs": outputs,
            "media_types": dict(media_types or {}),
        }
        source = _wrapper_source(fn, spec, node)
        filename = f"<mlseal sealed component {fn.__module__}.{fn.__qualname__}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        # what KFP's task module imports (`from kfp.dsl import *`, `from typing import *`),
        # under the function's own globals
        namespace = {**_task_module_names(), **fn.__globals__}
        exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 (our generated source)
        wrapper = namespace[fn.__name__]
        wrapper.__module__ = fn.__module__
        wrapper.__qualname__ = fn.__qualname__
        from mlseal.image import IMAGE

        component = dsl.component(
            wrapper,
            base_image=base_image or IMAGE,
            packages_to_install=packages_to_install,
            install_kfp_package=install_kfp_package,
            **component_kwargs,
        )
        return SealedComponent(component, stage=stage, step_name=step_name, caching=caching)

    return make if func is None else make(func)
