"""Checking an option file against a schema before anything is built: one line naming the file, the key and what
is accepted.

A schema is a tree of :class:`Spec` values. A leaf spec checks one value (type, range or choices). A
:class:`Section` checks a mapping's keys: an unknown key is reported with the closest accepted one. A
:class:`ByType` picks a section by the mapping's ``type:`` (an arch, a dataset, a loss); an unknown type is left to
its own constructor. :func:`validate` walks an option dict and raises :class:`~drward.utils.options.OptionError`
with one line::

    options/refl_diffbir.yml: train.frm_update.every: got 'ten' (str); accepted: an integer >= 1

**Declarations beside the classes.** A component declares each key it reads once, as an :class:`Option` (its spec,
its default and one line of help) in a class attribute ``options = {key: Option(...)}``, the way TRL's config
dataclasses declare fields. A subclass adds or overrides keys and inherits the rest (:func:`declared_options` merges
the attribute along the MRO). The component reads its values with :func:`resolve` (unknown key, bad value or
missing required key: one line; absent keys get the declared default), so no default is written twice.
:class:`ByRegistry` is the schema of a mapping whose ``type:`` names a class in a BasicSR registry: the section is
assembled from that class's declarations when the file is checked, so no central table names a restorer, a reward
or a loss. Every spec can also produce a value of the wrong type and, where it has a range or choices, an
out-of-range one (:meth:`Spec.wrong_type`, :meth:`Spec.out_of_range`), so a test can try every key.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from drward.utils.options import OptionError

#: "No such value" (a spec without an out-of-range example).
MISSING = object()


def _describe(value: Any) -> str:
    return f'{value!r} ({type(value).__name__})'


class Spec:
    """One option value. ``accepted``: the words of the error line; ``ok``: the check; ``nullable``: ``~`` allowed."""

    def __init__(self, accepted: str, ok: Callable[[Any], bool], nullable: bool = False,
                 wrong: Any = MISSING, bad: Any = MISSING) -> None:
        self.accepted = accepted + (' or ~ (null)' if nullable else '')
        self.ok, self.nullable, self._wrong, self._bad = ok, nullable, wrong, bad

    def check(self, value: Any, where: str) -> None:
        if value is None and self.nullable:
            return
        if not self.ok(value):
            raise OptionError(f'{where}: got {_describe(value)}; accepted: {self.accepted}')

    def children(self, value: Any) -> Iterator[Tuple[str, Any, 'Spec']]:
        """The ``(key, value, spec)`` of a section's entries (nothing for a leaf)."""
        return iter(())

    def wrong_type(self) -> Any:
        return self._wrong

    def out_of_range(self) -> Any:
        """A value of the right type that the spec rejects, or ``MISSING`` when every such value is fine."""
        return self._bad


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def Int(lo: Optional[int] = None, hi: Optional[int] = None, nullable: bool = False) -> Spec:
    """An integer in ``[lo, hi]``."""
    words = 'an integer' + (f' >= {lo}' if lo is not None else '') + (f' <= {hi}' if hi is not None else '')
    bad = lo - 1 if lo is not None else (hi + 1 if hi is not None else MISSING)
    return Spec(words, lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi), nullable,
                wrong='ten', bad=bad)


def Num(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
        nullable: bool = False) -> Spec:
    """A number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    words = 'a number' + (f' {">" if lo_open else ">="} {lo}' if lo is not None else '') + \
        (f' <= {hi}' if hi is not None else '')

    def ok(v: Any) -> bool:
        return _is_number(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi)
    bad = (lo if lo_open else lo - 1) if lo is not None else (hi + 1 if hi is not None else MISSING)
    return Spec(words, ok, nullable, wrong='one', bad=bad)


def Bool(nullable: bool = False) -> Spec:
    return Spec('true or false', lambda v: isinstance(v, bool), nullable, wrong='yes')


def Text(nonempty: bool = True, nullable: bool = False) -> Spec:
    """A string (a name, a caption, a path)."""
    return Spec('a non-empty string' if nonempty else 'a string',
                lambda v: isinstance(v, str) and (bool(v) or not nonempty), nullable, wrong=12,
                bad='' if nonempty else MISSING)


def Choice(*values: Any, nullable: bool = False) -> Spec:
    return Spec(f'one of {list(values)}', lambda v: any(v == c and type(v) is type(c) for c in values), nullable,
                wrong=[values[0]], bad='not_a_choice' if all(isinstance(c, str) for c in values) else 12345)


def ListOf(item: Spec, length: Optional[int] = None, nonempty: bool = True, nullable: bool = False) -> Spec:
    """A list of ``item`` values (``length`` of them when given)."""
    words = f'a list of {length if length else ("one or more" if nonempty else "zero or more")} ' \
            f'({item.accepted})'

    walked = type(item).children is not Spec.children  # a list of mappings: each entry is checked on its own

    def ok(v: Any) -> bool:
        return isinstance(v, list) and (length is None or len(v) == length) and (bool(v) or not nonempty) and \
            (walked or all(item.ok(x) or (x is None and item.nullable) for x in v))
    bad_item = item.out_of_range()
    bad = [bad_item] * (length or 1) if bad_item is not MISSING else ([] if nonempty and not length else MISSING)
    return _List(item, words, ok, nullable, wrong='x', bad=bad)


class _List(Spec):
    """A list spec; the entries of a list of mappings are walked too (``rewards.0.loss_weight``)."""

    def __init__(self, item: Spec, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.item = item

    def children(self, value: Any) -> Iterator[Tuple[str, Any, 'Spec']]:
        if type(self.item).children is not Spec.children and isinstance(value, list):
            for i, entry in enumerate(value):
                yield str(i), entry, self.item


def OneOf(*specs: Spec, bad: Any = MISSING) -> Spec:
    """A value any of ``specs`` accepts (e.g. a number or a list of numbers)."""
    return Spec(' or '.join(s.accepted for s in specs), lambda v: any(s.ok(v) for s in specs),
                any(s.nullable for s in specs), wrong={'a': 1}, bad=bad)


ANY = Spec('any value', lambda v: True)


class Section(Spec):
    """A mapping with the keys of ``fields`` (and ``also``: keys its component accepts that have no spec yet)."""

    def __init__(self, fields: Mapping[str, Spec], also: Iterable[str] = (), nullable: bool = False,
                 open_keys: bool = False) -> None:
        super().__init__('a mapping of ' + ', '.join(fields), lambda v: isinstance(v, Mapping), nullable, wrong='x')
        self.fields, self.accepted_keys, self.open_keys = dict(fields), sorted(set(fields) | set(also)), open_keys

    def check(self, value: Any, where: str) -> None:
        super().check(value, where)
        if value is None or self.open_keys:
            return
        for key in value:
            if key not in self.accepted_keys:
                close = difflib.get_close_matches(str(key), self.accepted_keys, n=1)
                hint = f' (did you mean {close[0]!r}?)' if close else ''
                path = key if where in ('', '(top level)') else f'{where}.{key}'
                raise OptionError(f'{path}: unknown key{hint}; accepted keys: {self.accepted_keys}')

    def children(self, value: Any) -> Iterator[Tuple[str, Any, Spec]]:
        for key, item in (value or {}).items():
            if key in self.fields:
                yield str(key), item, self.fields[key]


_TYPE_NAME = Text()


class ByType(Spec):
    """A mapping whose ``type:`` picks its :class:`Section`; types not listed are checked by their constructor."""

    def __init__(self, sections: Mapping[str, Section], nullable: bool = False) -> None:
        super().__init__('a mapping with a type: among ' + ', '.join(sections),
                         lambda v: isinstance(v, Mapping), nullable, wrong='x')
        self.sections = dict(sections)

    def _section(self, value: Any) -> Optional[Section]:
        return self.sections.get(value.get('type')) if isinstance(value, Mapping) else None

    def check(self, value: Any, where: str) -> None:
        super().check(value, where)
        if isinstance(value, Mapping) and 'type' in value:
            _TYPE_NAME.check(value['type'], f'{where}.type')
        section = self._section(value)
        if section is not None:
            section.check(value, where)

    def children(self, value: Any) -> Iterator[Tuple[str, Any, Spec]]:
        section = self._section(value)
        return section.children(value) if section is not None else iter(())


class MapOf(Spec):
    """A mapping of free names to values of ``item`` (e.g. ``val.metrics``)."""

    def __init__(self, item: Spec, nullable: bool = False) -> None:
        super().__init__(f'a mapping of names to ({item.accepted})', lambda v: isinstance(v, Mapping), nullable,
                         wrong='x')
        self.item = item

    def children(self, value: Any) -> Iterator[Tuple[str, Any, Spec]]:
        for key, item in (value or {}).items():
            yield str(key), item, self.item


#: "No default": the key is required (an :class:`Option` declared with it must be given).
REQUIRED = object()


class Option:
    """One declared option key: ``spec`` (type, range or choices), ``default`` (:data:`REQUIRED` when it must be
    given) and one line of ``help``. A nested block is ``Option(group({...}))``."""

    def __init__(self, spec: Spec, default: Any = None, help: str = '') -> None:
        self.spec, self.default, self.help = spec, default, help

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


Options = Mapping[str, Option]


def declared_options(cls: type, attribute: str = 'options') -> Dict[str, Option]:
    """The options ``cls`` declares, its bases' first (a subclass adds keys or overrides one, and keeps the rest)."""
    merged: Dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get(attribute) or {})
    return merged


def defaults(options: Options) -> Dict[str, Any]:
    """Each key's declared default (required keys left out)."""
    return {key: option.default for key, option in options.items() if not option.required}


def group(options: Options, also: Iterable[str] = (), nullable: bool = True, open_keys: bool = False) -> 'Section':
    """The :class:`Section` checking a mapping of declared ``options`` (``also``: keys accepted unchecked)."""
    section = Section({key: option.spec for key, option in options.items()}, also=also, nullable=nullable,
                      open_keys=open_keys)
    section.options = dict(options)
    return section


def resolve(owner: str, options: Options, given: Optional[Mapping[str, Any]], ignore: Iterable[str] = ('type',)
            ) -> Dict[str, Any]:
    """``given`` checked against ``options`` and completed with the declared defaults. :class:`OptionError` (one
    line, ``<owner>: <key>: ...``) on an unknown key (with the closest accepted one), a rejected value or a
    missing required key. Keys in ``ignore`` (the ``type:`` that chose the class) are dropped."""
    given = {k: v for k, v in (given or {}).items() if k not in set(ignore)}
    accepted = sorted(options)
    for key, value in given.items():
        if key not in options:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            raise OptionError(f'{owner}: {key}: unknown key{hint}; accepted keys: {accepted}')
        for where, item, spec in walk(value, options[key].spec, key):
            spec.check(item, f'{owner}: {where}')
    missing = sorted(key for key, option in options.items() if option.required and key not in given)
    if missing:
        raise OptionError(f'{owner}: {missing[0]}: missing; it is required ({options[missing[0]].help})')
    return {**defaults(options), **given}


def declare(**specs: Tuple[Spec, str]) -> Callable[[type], type]:
    """Class decorator for a class built as ``cls(**opt)`` (a BasicSR loss, the FRM): ``options`` from its
    ``__init__`` keyword parameters, each default read from the signature (written once, there), its spec and help
    from ``specs`` (``key=(spec, help)``; every parameter must have one); the constructor then checks the keys and
    values it is given (:func:`resolve`). Subclasses inherit the declaration and may add ``options`` of their own."""
    def decorate(cls: type) -> type:
        import functools
        import inspect
        init = cls.__init__
        params = {name: p for name, p in inspect.signature(init).parameters.items()
                  if name != 'self' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if set(params) != set(specs):
            raise TypeError(f'{cls.__name__}: declare() specs {sorted(specs)} differ from the parameters '
                            f'{sorted(params)}')
        cls.options = {name: Option(specs[name][0], REQUIRED if p.default is p.empty else p.default, specs[name][1])
                       for name, p in params.items()}

        @functools.wraps(init)
        def checked_init(self, *args: Any, **kwargs: Any) -> None:
            given = {**dict(zip(params, args)), **kwargs}  # positional arguments checked under their names too
            resolve(type(self).__name__, declared_options(type(self)), given)
            init(self, *args, **kwargs)

        cls.__init__ = checked_init
        return cls
    return decorate


def declares(cls: type, attribute: str = 'options') -> bool:
    """Whether ``cls`` is built from its declared options: it declares some itself, or its constructor takes
    ``**opts`` (a base's declarations then reach it). A subclass with named constructor arguments and no declaration
    of its own (a test's toy restorer) is left to its constructor."""
    if attribute in vars(cls):
        return True
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


class ByRegistry(ByType):
    """A mapping whose ``type:`` names a class registered in ``registry`` (BasicSR's ``ARCH_REGISTRY``,
    ``LOSS_REGISTRY``, ...): checked against the options that class declares (:func:`declared_options`) plus
    ``common`` (keys every entry has, e.g. a reward entry's ``loss_weight``). ``known``: sections of classes that
    cannot declare (BasicSR's own datasets, checked by a table). A type not registered yet, or a class that
    declares nothing (:func:`declares`), is left to its own constructor (only ``common`` is checked)."""

    def __init__(self, registry: Any, common: Optional[Options] = None, nullable: bool = False,
                 attribute: str = 'options', known: Optional[Mapping[str, Section]] = None) -> None:
        super().__init__(dict(known or {}), nullable=nullable)
        self.accepted = f'a mapping with a type: registered in {getattr(registry, "_name", "the registry")}' + \
            (' or ~ (null)' if nullable else '')
        self.registry, self.attribute = registry, attribute
        self.common = {'type': Option(Text(), REQUIRED, 'the registered class'), **dict(common or {})}

    def _section(self, value: Any) -> Optional[Section]:
        if not isinstance(value, Mapping):
            return None
        kind = value.get('type')
        if isinstance(kind, str) and kind in self.sections:
            return self.sections[kind]
        try:
            cls = self.registry.get(kind) if isinstance(kind, str) and kind in self.registry else None
        except KeyError:
            cls = None
        own = declared_options(cls, self.attribute) if isinstance(cls, type) and declares(cls, self.attribute) else {}
        if not own:
            return group(self.common, nullable=self.nullable, open_keys=True)
        return group({**self.common, **own}, nullable=self.nullable)


def walk(value: Any, spec: Spec, where: str) -> Iterator[Tuple[str, Any, Spec]]:
    """Every ``(dotted key, value, spec)`` under ``value``, parents before children."""
    yield where, value, spec
    for key, item, child in spec.children(value):
        yield from walk(item, child, f'{where}.{key}' if where else key)


def validate(opt: Mapping[str, Any], schema: Spec, source: str) -> None:
    """Raise :class:`OptionError` (one line: ``<source>: <key>: ...``) at the first value ``schema`` rejects."""
    for where, value, spec in walk(opt, schema, ''):
        try:
            spec.check(value, where or '(top level)')
        except OptionError as error:
            raise OptionError(f'{source}: {error}') from None


__all__: List[str] = ['MISSING', 'Spec', 'Int', 'Num', 'Bool', 'Text', 'Choice', 'ListOf', 'OneOf', 'ANY', 'Section',
                      'ByType', 'MapOf', 'walk', 'validate', 'REQUIRED', 'Option', 'Options', 'declared_options',
                      'defaults', 'group', 'resolve', 'declare', 'ByRegistry']
