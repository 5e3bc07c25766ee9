"""The type stubs of the native module (``lamina/_lamina.pyi``) against the
module itself, by ``inspect``: the same names, the same members per
class, the same parameters per function and method; and a docstring on
every public name of the package, at runtime or in the stub."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

import lamina
import lamina._lamina as native
import lamina.analysis
import lamina.display
import lamina.pytest_plugin

STUB = Path(lamina.__file__).parent / "_lamina.pyi"


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text())


def _is_alias(node: ast.stmt) -> bool:
    """A stub-only helper: a type alias, a Protocol or a TypedDict."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name):
        return node.annotation.id == "TypeAlias"
    if isinstance(node, ast.ClassDef):
        return any(
            isinstance(b, ast.Name) and b.id in ("Protocol", "TypedDict") for b in node.bases
        )
    return False


def _stub_names() -> dict[str, ast.stmt]:
    out: dict[str, ast.stmt] = {}
    for node in _stub().body:
        if _is_alias(node):
            continue
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return out


def _runtime_names() -> set[str]:
    return {n for n in vars(native) if not (n.startswith("__") and n != "__version__")}


def test_the_stub_names_what_the_module_has() -> None:
    assert set(_stub_names()) == _runtime_names()


def _params(fn: ast.FunctionDef) -> list[tuple[str, str, bool]]:
    a = fn.args
    out = []
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    for arg, d in zip(pos, defaults):
        kind = "POSITIONAL_ONLY" if arg in a.posonlyargs else "POSITIONAL_OR_KEYWORD"
        out.append((arg.arg, kind, d is not None))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", False))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", d is not None))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", False))
    return out


def _runtime_params(obj: Any) -> list[tuple[str, str, bool]] | None:
    try:
        sig = inspect.signature(obj)
    except (ValueError, TypeError):
        return None
    return [
        (p.name, p.kind.name, p.default is not inspect.Parameter.empty)
        for p in sig.parameters.values()
    ]


def _without_self(params: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    return [p for p in params if p[0] not in ("self", "cls", "$self")]


def _overloads_first(node: ast.ClassDef | ast.Module) -> dict[str, ast.FunctionDef]:
    out: dict[str, ast.FunctionDef] = {}
    for n in node.body:
        if isinstance(n, ast.FunctionDef) and n.name not in out:
            out[n.name] = n
    return out


def _compare(stub_fn: ast.FunctionDef, obj: Any, where: str) -> list[str]:
    got = _runtime_params(obj)
    if got is None:
        return []
    want = _without_self(_params(stub_fn))
    got = _without_self(got)
    # A native `*args` (pyo3's `*_exc`) stands for the stub's named ones.
    if any(k == "VAR_POSITIONAL" for _, k, _ in got):
        return []
    if len(want) != len(got):
        return [f"{where}: stub {want} != runtime {got}"]
    # A positional-only runtime parameter (a slot like `__eq__`) has no
    # name a caller can use.
    if any(n1 != n2 and k2 != "POSITIONAL_ONLY" for (n1, _, _), (n2, k2, _) in zip(want, got)):
        return [f"{where}: stub {want} != runtime {got}"]
    # Positional-only in the stub is a typing choice (`/`); kinds otherwise
    # and defaults must agree.
    for (n, k1, d1), (_, k2, d2) in zip(want, got):
        if d1 != d2 or (k1 != k2 and "POSITIONAL_ONLY" not in (k1, k2)):
            eq1, eq2 = "=" if d1 else "", "=" if d2 else ""
            return [f"{where}: parameter {n}: stub {k1}{eq1} != runtime {k2}{eq2}"]
    return []


def test_signatures_match() -> None:
    problems: list[str] = []
    stub = _stub()
    for name, fn in _overloads_first(stub).items():
        problems += _compare(fn, getattr(native, name), name)
    for node in stub.body:
        if not isinstance(node, ast.ClassDef) or _is_alias(node):
            continue
        cls = getattr(native, node.name)
        for name, fn in _overloads_first(node).items():
            decorators = {d.id for d in fn.decorator_list if isinstance(d, ast.Name)}
            member = getattr(cls, name if name != "__init__" else "__new__", None)
            if member is None:
                problems.append(f"{node.name}.{name}: in the stub, not at runtime")
                continue
            if "property" in decorators:
                if not inspect.isdatadescriptor(member):
                    problems.append(f"{node.name}.{name}: a property in the stub only")
                continue
            target = cls if name == "__init__" else member
            problems += _compare(fn, target, f"{node.name}.{name}")
    assert not problems, "\n".join(problems)


def _public_members(cls: type) -> set[str]:
    own = set(vars(cls))
    return {n for n in own if not n.startswith("__") or n in ("__enter__", "__exit__")}


def test_class_members_match() -> None:
    problems = []
    for node in _stub().body:
        if not isinstance(node, ast.ClassDef) or _is_alias(node):
            continue
        cls = getattr(native, node.name)
        stubbed = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        stubbed = {n for n in stubbed if not n.startswith("__") or n in ("__enter__", "__exit__")}
        runtime = _public_members(cls)
        if stubbed != runtime:
            problems.append(
                f"{node.name}: only in the stub {sorted(stubbed - runtime)}, "
                f"only at runtime {sorted(runtime - stubbed)}"
            )
    assert not problems, "\n".join(problems)


def _stub_docs() -> dict[str, str | None]:
    docs: dict[str, str | None] = {}
    for node in _stub().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            docs[node.name] = ast.get_docstring(node)
            if isinstance(node, ast.ClassDef):
                for m in node.body:
                    if isinstance(m, ast.FunctionDef):
                        docs[f"{node.name}.{m.name}"] = ast.get_docstring(m)
    return docs


MODULES = [lamina, lamina.analysis, lamina.display, lamina.pytest_plugin]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_name_has_a_docstring(module: Any) -> None:
    stub = _stub_docs()
    missing = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if isinstance(obj, (str, int, tuple, dict)) or name.startswith("_"):
            continue
        if not (inspect.getdoc(obj) or stub.get(name)):
            missing.append(name)
        if inspect.isclass(obj):
            for m, v in vars(obj).items():
                if m.startswith("_") or not callable(getattr(v, "__get__", None)):
                    continue
                if not ((getattr(v, "__doc__", None) or "").strip() or stub.get(f"{name}.{m}")):
                    missing.append(f"{name}.{m}")
    assert not missing, f"{module.__name__}: no docstring on {missing}"
