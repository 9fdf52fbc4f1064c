"""Layer selectors: from user-friendly patterns to dotted ``named_modules()`` names.

Selectors, in the order they are tried:

* ``re:<regex>`` — full match of a Python regular expression against module names;
* ``type:<ClassName>`` — every module of that class (name or qualified name);
* a glob — ``*`` matches within one dotted component, ``**`` across components, ``?`` one
  character (``encoder.layer.*`` is the blocks, not their sub-modules;
  ``encoder.**.dense`` is every ``dense`` inside the encoder);
* anything else — an exact module name.

:func:`match_selector` is the one matcher behind every selector: capture's layers, an
analysis's ``layers=``, attention modules, and (with ``sep="/"``) the metric-key globs of the
compliance gates.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from torch import nn

from neuronmap.errors import InvalidParameterError, LayerNotFoundError

__all__ = ["glob_to_regex", "match_selector", "module_names", "resolve_layers", "selector_regex"]

_GLOB_CHARS = re.compile(r"[*?\[]")


def module_names(model: nn.Module) -> list[str]:
    """Dotted names of every sub-module, in registration order, without the root ``""``."""
    return [name for name, _ in model.named_modules() if name]


def glob_to_regex(pattern: str, sep: str = ".") -> re.Pattern[str]:
    """Compile a glob over ``sep``-separated names where ``*`` stays in one component and ``**`` crosses them.

    ``?`` is one character and ``[...]`` a character class (``[!...]`` negated), as in fnmatch.
    Module names are dotted (the default); metric keys are slash-separated (``sep="/"``).
    """
    parts = pattern.split(sep)
    edge = re.escape(sep)
    other = "[^" + ("\\" + sep if sep in "\\]^-" else sep) + "]"
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else f"(?:{other}+{edge})*")
            continue
        piece = _translate_component(part, other)
        out.append(piece if last else piece + edge)
    return re.compile("".join(out))


def _translate_component(part: str, other: str) -> str:
    """One component: ``*`` -> ``other*``, ``?`` -> ``other`` (``other``: one non-separator), ``[...]`` kept."""
    out, i = [], 0
    while i < len(part):
        ch = part[i]
        if ch == "*":
            out.append(other + "*")
        elif ch == "?":
            out.append(other)
        elif ch == "[" and "]" in part[i + 2 :]:
            end = part.index("]", i + 2)
            body = part[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def selector_regex(selector: str, sep: str = ".") -> re.Pattern[str] | None:
    """The regex a name, glob or ``re:`` selector fully matches (``None`` for ``type:``).

    Raises:
        InvalidParameterError: A ``re:`` regular expression does not compile.
    """
    if selector.startswith("type:"):
        return None
    if selector.startswith("re:"):
        try:
            return re.compile(selector[3:])
        except re.error as err:
            raise InvalidParameterError(f"Invalid regular expression in {selector!r}: {err}.") from err
    return glob_to_regex(selector, sep) if _GLOB_CHARS.search(selector) else re.compile(re.escape(selector))


def match_selector(
    selector: str, names: Iterable[str], *, modules: Mapping[str, nn.Module] | None = None, sep: str = "."
) -> list[str]:
    """The ``names`` one selector matches, in the order given.

    Args:
        selector: A name, a glob, ``re:<regex>`` or ``type:<ClassName>`` (see the module docstring).
        names: Candidate names (module names, metric keys).
        modules: ``name -> module``, needed by ``type:`` selectors (without it they match nothing).
        sep: The separator ``*`` stays within: ``"."`` for module names, ``"/"`` for metric keys.

    Raises:
        InvalidParameterError: A ``re:`` regular expression does not compile.

    Example:
        >>> match_selector("enc.*", ["enc.0", "enc.0.attn", "enc.1"])
        ['enc.0', 'enc.1']
        >>> match_selector("neuronmap/p/*/acc", ["neuronmap/p/enc.0/acc", "neuronmap/q/x/acc"], sep="/")
        ['neuronmap/p/enc.0/acc']
    """
    rx = selector_regex(selector, sep)
    if rx is not None:
        return [n for n in names if rx.fullmatch(n)]
    wanted = selector[len("type:") :]
    return [n for n in names if modules is not None and n in modules and wanted in _class_names(modules[n])]


def _class_names(module: nn.Module) -> set[str]:
    cls = type(module)
    return {cls.__name__, cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}"}


def _nearest(name: str, names: Sequence[str]) -> list[str]:
    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


def _matcher(selector: str) -> re.Pattern[str] | None:
    """The regex a glob or exact selector compiles to (``None`` for ``re:`` and ``type:``)."""
    if selector.startswith(("re:", "type:")):
        return None
    return selector_regex(selector)


def _rerooted(selector: str, names: Sequence[str]) -> list[str]:
    """The selector written against another root: a prefix too many or one missing.

    Selectors are matched against the module given to NeuronMap, so ``bert.encoder.layer.*``
    fails on the inner ``BertModel`` (``encoder.layer.*``) and ``encoder.layer.*`` fails on a
    LightningModule that holds the encoder as ``model`` (``model.encoder.layer.*``).
    """
    rx = _matcher(selector)
    if rx is None:
        return []
    out: list[str] = []
    parts = selector.split(".")
    for k in range(1, len(parts)):  # a prefix too many: drop leading components
        tail = ".".join(parts[k:])
        if all(_GLOB_CHARS.search(part) for part in parts[k:]):
            break  # `*` alone matches anything and says nothing
        tail_rx = _matcher(tail)
        if tail_rx is not None and any(tail_rx.fullmatch(n) for n in names):
            out.append(tail)
            break
    prefixed = re.compile(r"((?:[^.]+\.)+)(?:" + rx.pattern + ")")  # a prefix missing
    for n in names:
        hit = prefixed.fullmatch(n)
        if hit and hit.group(1) + selector not in out:
            out.append(hit.group(1) + selector)
        if len(out) >= 3:
            break
    return out


def _spelling(selector: str, model: nn.Module, names: Sequence[str]) -> list[str]:
    """Near spellings: module names, globs over numbered blocks, or class names for ``type:``."""
    if selector.startswith("type:"):
        classes = sorted({type(m).__name__ for m in model.modules()})
        return ["type:" + c for c in _nearest(selector[5:], classes)]
    if selector.startswith("re:"):
        return []
    if not _GLOB_CHARS.search(selector):
        return _nearest(selector, names)
    # A glob is compared with globs: each name with its numbered components starred
    # (encoder.layer.3.output -> encoder.layer.*.output), so `encoder.layers.*` finds
    # `encoder.layer.*` rather than each block of it.
    templates = list(dict.fromkeys(".".join("*" if p.isdigit() else p for p in n.split(".")) for n in names))
    return _nearest(selector, templates)


def _not_found(selector: str, model: nn.Module, names: Sequence[str]) -> LayerNotFoundError:
    model_name = type(model).__name__
    kind = "Layer" if not _GLOB_CHARS.search(selector) and ":" not in selector else "Selector"
    msg = f"{kind} {selector!r} not found in {model_name}"
    if kind == "Selector":
        msg = f"Selector {selector!r} matched no module of {model_name} ({len(names)} modules)"
    rerooted = _rerooted(selector, names)
    # A selector that matches once re-rooted is what the user meant; spellings would only blur it.
    suggestions = rerooted[:3] or _spelling(selector, model, names)
    if suggestions:
        msg += "; did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
    else:
        msg += "."
    if rerooted:
        msg += (f" Selectors are matched against the module given to NeuronMap ({model_name} here; "
                "in Lightning the LightningModule).")
    head = selector.split(".")[0].removeprefix("re:").removeprefix("type:")
    siblings = [n for n in names if n.split(".")[0] == head]
    if siblings and kind == "Layer":
        msg += f" {len(siblings)} modules live under '{head}'."
    elif not suggestions:
        tops = sorted({n.split(".")[0] for n in names})
        msg += f" Top-level modules: {', '.join(tops[:12])}{' ...' if len(tops) > 12 else ''}."
    msg += " Run `neuronmap layers` or `neuronmap.capture.module_names(model)` to list them."
    return LayerNotFoundError(msg)


def resolve_layers(model: nn.Module, selectors: str | Iterable[str]) -> list[str]:
    """Resolve selectors to module names, in the model's module order, without duplicates.

    Args:
        model: The model whose ``named_modules()`` are searched.
        selectors: One selector or several (see the module docstring).

    Returns:
        The matching dotted module names.

    Raises:
        LayerNotFoundError: A selector matches nothing; the message suggests the nearest names.
        InvalidParameterError: A regular expression does not compile, or no selector is given.

    Example:
        >>> from neuronmap.testing import tiny_bert
        >>> resolve_layers(tiny_bert(), "encoder.layer.*")
        ['encoder.layer.0', 'encoder.layer.1']
    """
    if isinstance(selectors, str):
        selectors = [selectors]
    selectors = list(selectors)
    if not selectors:
        raise InvalidParameterError("layers must name at least one module; got an empty list.")
    modules = dict(model.named_modules())
    modules.pop("", None)
    names = list(modules)
    chosen: set[str] = set()
    for selector in selectors:
        if not isinstance(selector, str) or not selector:
            raise InvalidParameterError(f"A layer selector must be a non-empty string; got {selector!r}.")
        hits = match_selector(selector, names, modules=modules)
        if not hits:
            raise _not_found(selector, model, names)
        chosen.update(hits)
    return [n for n in names if n in chosen]
